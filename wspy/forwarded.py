"""`wspy.forwarded`, as wspy named it before: now `wspy.protocol.forwarded`."""

import sys

from wspy.protocol import forwarded

sys.modules[__name__] = forwarded
