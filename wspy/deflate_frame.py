"""`wspy.deflate_frame`, as the original wspy named it: now `wspy.protocol.deflate_frame`."""

import sys

from wspy.protocol import deflate_frame

sys.modules[__name__] = deflate_frame
