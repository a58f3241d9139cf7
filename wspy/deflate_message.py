"""`wspy.deflate_message`, as the original wspy named it: now `wspy.protocol.deflate_message`."""

import sys

from wspy.protocol import deflate_message

sys.modules[__name__] = deflate_message
