"""`wspy.message`, as the original wspy named it: now `wspy.protocol.message`."""

import sys

from wspy.protocol import message

sys.modules[__name__] = message
