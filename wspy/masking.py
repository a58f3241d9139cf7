"""`wspy.masking`, as the original wspy named it: now `wspy.protocol.masking`."""

import sys

from wspy.protocol import masking

sys.modules[__name__] = masking
