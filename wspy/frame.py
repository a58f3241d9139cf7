"""`wspy.frame`, as the original wspy named it: now `wspy.protocol.frame`."""

import sys

from wspy.protocol import frame

sys.modules[__name__] = frame
