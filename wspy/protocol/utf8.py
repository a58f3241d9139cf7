"""Checking the UTF-8 of a text frame in pieces, as its bytes arrive (RFC 6455 8.1).

A checker made by `new_utf8_checker()` is fed one piece after another and says whether they still
make valid UTF-8 so far; the C accelerator's `utf8_check` does it without
making a `str` (bench/text_receive.py: what a 16 MiB text message costs to
receive), and the pure-Python checker decodes each piece with the codec's
incremental decoder and drops the text.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Protocol

from wspy.protocol.masking import utf8_check

_utf8_decoder = codecs.getincrementaldecoder('utf-8')


def check_utf8_tail(decoder: codecs.IncrementalDecoder) -> bool:
    """Whether the bytes `decoder` holds back may still start a valid character.

    CPython's decoder waits for more bytes after a lead byte 0xED followed by
    0xA0-0xBF, although that can only become a surrogate.
    """
    pending = decoder.getstate()[0]
    return not (len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0)


class Utf8Checker(Protocol):
    """UTF-8 checked piece by piece."""

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether the bytes so far, `data` last, may still be valid UTF-8 (False from the
        first byte that cannot be)."""


class _CChecker:
    """The accelerator's checker: a state number between pieces, no text made."""

    __slots__ = ('state',)

    def __init__(self) -> None:
        self.state = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether the bytes so far, `data` last, may still be valid UTF-8."""
        assert utf8_check is not None
        state = utf8_check(data, self.state)
        if state < 0:
            return False
        self.state = state
        return True


class _PythonChecker:
    """The pure-Python checker: the incremental decoder, its text dropped."""

    __slots__ = ('decoder',)

    def __init__(self) -> None:
        self.decoder = _utf8_decoder()

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether the bytes so far, `data` last, may still be valid UTF-8."""
        try:
            self.decoder.decode(data)
        except UnicodeDecodeError:
            return False
        return check_utf8_tail(self.decoder)


#: A new `Utf8Checker`: the accelerator's, or the pure-Python one without it.
new_utf8_checker: Callable[[], Utf8Checker] = _PythonChecker if utf8_check is None else _CChecker
