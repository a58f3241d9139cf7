"""`wspy.handshake`, as the original wspy named it: now `wspy.protocol.handshake`."""

import sys

from wspy.protocol import handshake

sys.modules[__name__] = handshake
