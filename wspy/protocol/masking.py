"""Masking of frame payloads (RFC 6455 5.3), in C when available.

`mask` is the C implementation from `wspy._speedups` unless it is missing
or the environment variable ``WSPY_NO_SPEEDUPS`` is set to a non-empty
value; `python_mask` is the pure-Python fallback, always importable. The
accelerator's `split_frame` and `split_message` (header parsing, unmasking and,
for a message, UTF-8 decoding in one call) are here too, for `FrameParser`, and
its `utf8_check`, for `wspy.protocol.utf8`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# Below this size one big-integer XOR is fastest; above it, translating the
# four byte lanes through 256-byte tables is: 1.6 million instructions for 64 KiB
# against 2.4 million for the XOR (callgrind), about 150 us here.
_SMALL = 256
_tables: list[bytes | None] = [None] * 256


def _table(k: int) -> bytes:
    table = _tables[k]
    if table is None:
        table = _tables[k] = bytes(b ^ k for b in range(256))
    return table


def python_mask(key: bytes, data: bytes | bytearray | memoryview, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `key`, starting at byte `offset` of the key stream.

    RFC 6455 5.3: "Octet i of the transformed data ("transformed-octet-i")
    is the XOR of octet i of the original data ("original-octet-i") with
    octet at index i modulo 4 of the masking key": the same call masks and
    unmasks. `offset` continues the key stream where a previous call on the
    payload's first `offset` bytes left it.

    Raises:
        ValueError: a key of other than 4 bytes, or a negative `offset`.
    """
    if len(key) != 4:
        raise ValueError('masking key must be 4 bytes')
    if offset < 0:
        raise ValueError('offset must not be negative')
    shift = offset & 3
    if shift:
        key = bytes(key[shift:]) + bytes(key[:shift])
    n = len(data)
    if n <= _SMALL:
        stream = (bytes(key) * (n // 4 + 1))[:n]
        value = int.from_bytes(data, 'little') ^ int.from_bytes(stream, 'little')
        return value.to_bytes(n, 'little')
    source = bytes(data)
    out = bytearray(n)
    for lane in range(4):
        out[lane::4] = source[lane::4].translate(_table(key[lane]))
    return bytes(out)


MaskFunction = Callable[..., bytes]


#: `wspy._speedups.split_frame` (one complete frame off a buffer, unmasked) and
#: `split_message` (one frame that is a whole message, decoded), or None without the
#: accelerator: `FrameParser` then parses in Python alone.
SplitFrame = Callable[[Any, int, 'bool | None', 'int | None', int],
                      'tuple[int, bytes, bytes, int] | None']
SplitMessage = Callable[[Any, int, 'bool | None', 'int | None', 'int | None'],
                        'tuple[int, bytes | str, int, bytes | None] | None']
#: `wspy._speedups.split_messages`: every such message in a row, in one call, made of the
#: classes `wspy.protocol.message` gives it.
SplitMessages = Callable[[Any, int, 'bool | None', 'int | None', 'int | None'],
                         'tuple[list[Any], int]']
#: `wspy._speedups.utf8_check` (UTF-8 checked in pieces, no text made: wspy.protocol.utf8),
#: or None without the accelerator.
Utf8Check = Callable[[Any, int], int]


def _select() -> tuple[MaskFunction, SplitFrame | None, SplitMessage | None,
                       SplitMessages | None, Utf8Check | None, bool]:
    if os.environ.get('WSPY_NO_SPEEDUPS'):
        return python_mask, None, None, None, None, False
    try:
        from wspy._speedups import mask as c_mask, split_frame as c_split_frame
        from wspy._speedups import split_message as c_split_message
        from wspy._speedups import split_messages as c_split_messages
        from wspy._speedups import utf8_check as c_utf8_check
    except ImportError:
        return python_mask, None, None, None, None, False
    return c_mask, c_split_frame, c_split_message, c_split_messages, c_utf8_check, True


mask, split_frame, split_message, split_messages, utf8_check, HAS_SPEEDUPS = _select()
