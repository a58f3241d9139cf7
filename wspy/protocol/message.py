"""Messages: what a `Connection` sends and receives, made of one or more frames."""

from __future__ import annotations

import os
from typing import Any

from wspy.protocol.frame import OPCODE_BINARY, OPCODE_TEXT, Frame, bytes_like
from wspy.protocol.masking import HAS_SPEEDUPS

_new_object = object.__new__

#: What `Connection.send` and `broadcast` take, for their TypeError.
SENDABLE = 'a str, a bytes-like object (bytes, bytearray, memoryview) or a Message'


class Message:
    """A complete data message, however many frames it came in: an opcode and its payload.

    `TextMessage` and `BinaryMessage` are what a connection gives and what
    `create_message` makes.

    Args:
        opcode: `OPCODE_TEXT` or `OPCODE_BINARY`.
        payload: a `str` for text, `bytes` for binary.
    """

    __slots__ = ('opcode', 'payload')

    def __init__(self, opcode: int, payload: bytes | str) -> None:
        self.opcode = opcode
        self.payload = payload

    def encode(self) -> bytes:
        """The payload as bytes on the wire."""
        payload = self.payload
        return payload.encode('utf-8') if isinstance(payload, str) else payload

    def frame(self, mask: bool = False) -> Frame:
        """The message as one final frame, masked with a fresh random key if `mask` (a client's)."""
        return Frame(self.opcode, self.encode(), os.urandom(4) if mask else b'')

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        """The message as frames of at most `fragment_size` payload bytes (see `Frame.fragment`).

        Args:
            fragment_size: the most payload bytes in each frame.
            mask: whether to mask each frame with a fresh random key.

        Raises:
            ValueError: a `fragment_size` under 1.
        """
        return Frame(self.opcode, self.encode()).fragment(fragment_size, mask)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.opcode == other.opcode and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        more = '...' if len(self.payload) > 40 else ''
        return f'<{type(self).__name__} {self.payload[:40]!r}{more} len={len(self.payload)}>'


class TextMessage(Message):
    """A text message; `payload` is a `str` (sent as UTF-8).

    Raises:
        TypeError: a payload that is not a `str`.
    """

    # A received message keeps the UTF-8 it came as (`_utf8`) with the text decoded from it
    # (`_utf8_of`): sending it on, unchanged, then costs no encoding. Encoding 1 KiB of
    # non-ASCII text was a quarter of the server's instructions per 1 KiB text echo
    # (callgrind, bench/run.py '1 KiB text echo, 64 x 16').
    __slots__ = ('_utf8', '_utf8_of')
    payload: str
    _utf8: bytes
    _utf8_of: str | None

    def __init__(self, payload: str) -> None:
        if not isinstance(payload, str):
            raise TypeError(f'TextMessage payload must be str, not {type(payload).__name__}')
        self.opcode = OPCODE_TEXT
        self.payload = payload
        self._utf8_of = None

    def encode(self) -> bytes:
        """The payload as bytes on the wire."""
        payload = self.payload
        try:
            if payload is self._utf8_of:  # the text as received: its bytes as they came
                return self._utf8
        except AttributeError:  # made by a subclass that did not call __init__
            pass
        return payload.encode('utf-8')


class BinaryMessage(Message):
    """A binary message; `payload` is `bytes` (made from any bytes-like object).

    Raises:
        TypeError: a payload that is not bytes-like (a `str` above all: that
            is a `TextMessage`).
    """

    __slots__ = ()
    payload: bytes

    def __init__(self, payload: bytes | bytearray | memoryview) -> None:
        self.opcode = OPCODE_BINARY
        self.payload = bytes_like(payload, 'a BinaryMessage payload')


def as_message(data: Any) -> Message:
    """`data` as a message: a `str` is text, a bytes-like object binary; else `TypeError`."""
    if isinstance(data, Message):
        return data
    if isinstance(data, str):
        return TextMessage(data)
    return BinaryMessage(bytes_like(data, 'a message', SENDABLE))


def received_message(opcode: int, payload: bytes | str, utf8: bytes | None = None) -> Message:
    """A message as it arrived: a `TextMessage` if `opcode` is text (`payload` decoded
    already, `utf8` the bytes it came as or None), else a `BinaryMessage` (`payload`
    bytes). Nothing is checked: the payload is known good."""
    if opcode == OPCODE_TEXT:
        text: TextMessage = _new_object(TextMessage)
        text.opcode = opcode
        text.payload = payload  # type: ignore[assignment]
        if utf8 is None:
            text._utf8_of = None
        else:
            text._utf8_of = text.payload
            text._utf8 = utf8
        return text
    binary: BinaryMessage = _new_object(BinaryMessage)
    binary.opcode = opcode
    binary.payload = payload  # type: ignore[assignment]
    return binary


if HAS_SPEEDUPS:
    # The C accelerator makes the messages that arrive whole (`FrameParser.next_whole_messages`)
    # itself, slot by slot as `received_message` does: a Python call less a message, 2,000
    # of AsyncServer's 15,300 instructions per message (callgrind, bench/run.py '16 B text
    # echo, 64 x 16').
    from wspy._speedups import message_classes

    message_classes(TextMessage, BinaryMessage)


def create_message(opcode: int, payload: bytes) -> Message:
    """A `TextMessage` (payload decoded as UTF-8) or `BinaryMessage` for `opcode`.

    Args:
        opcode: `OPCODE_TEXT` or `OPCODE_BINARY`.
        payload: the message's bytes.

    Raises:
        ValueError: any other opcode.
        UnicodeDecodeError: a text payload that is not UTF-8.
    """
    if opcode == OPCODE_TEXT:
        return TextMessage(bytes(payload).decode('utf-8'))
    if opcode == OPCODE_BINARY:
        return BinaryMessage(payload)
    raise ValueError(f'not a data opcode: {opcode:#x}')
