"""Time the core receiving a long text message in pieces: UTF-8 checked as it arrives.

    python bench/text_receive.py [--size BYTES] [--read BYTES] [--reps N]

SIZE bounds the payload (about 9.5 MB of UTF-8 for the default 16 MiB).

Feeds one masked text frame (mixed ASCII, 2-, 3- and 4-byte characters) to
`Protocol` through the in-memory driver of the tests, a read at a time, with
`check_partial()` after each read as the servers do, and prints the median
time per message. No socket: only the parser, the UTF-8 checks and the
decoding are measured (`make bench`'s 16 MiB text row adds the echo).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'test'))

from memory import MemoryConnection  # type: ignore[import-not-found]  # test/ on the path
from wspy.protocol.frame import OPCODE_TEXT, Frame


def main() -> int:
    """Measure, then print the median."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--size', type=int, default=16 << 20)
    parser.add_argument('--read', type=int, default=512 << 10)
    parser.add_argument('--reps', type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(1)
    alphabet = 'abcdefghijklmnopqrstuvwxyz {}":,0123456789 é€\N{GRINNING FACE}'
    text = ''.join(rng.choice(alphabet) for _ in range(args.size // 2))
    payload = text.encode()[:args.size].decode('utf-8', 'ignore').encode()
    raw = Frame(OPCODE_TEXT, payload, os.urandom(4)).pack()
    times = []
    for _ in range(args.reps):
        conn = MemoryConnection(server_side=True, max_message_size=len(payload),
                                max_frame_size=len(payload))
        start = time.perf_counter()
        messages = []
        for offset in range(0, len(raw), args.read):
            messages += conn.feed_bytes(raw[offset:offset + args.read])
            conn.check_partial()
        times.append(time.perf_counter() - start)
        if len(messages) != 1 or messages[0].payload.encode() != payload:
            raise SystemExit('the message did not come out whole')
    print(f'{len(payload):,} bytes of text in {args.read:,}-byte reads: '
          f'{statistics.median(times) * 1000:.1f} ms per message (median of {args.reps})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
