"""`wspy.extension`, as the original wspy named it: now `wspy.protocol.extension`."""

import sys

from wspy.protocol import extension

sys.modules[__name__] = extension
