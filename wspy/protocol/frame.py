"""Frames (RFC 6455 section 5): `Frame`, opcodes, close codes and the parser.

`FrameParser` is fed bytes of any size and hands out whole frames. It does
no I/O, so the blocking `websocket` and the event-loop server share it.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import TYPE_CHECKING, Any, Final

from wspy.protocol.compat import renamed_close_code, warn_deprecated
from wspy.errors import InvalidPayload, PayloadTooBig, PingError, ProtocolError
from wspy.protocol.masking import (HAS_SPEEDUPS, mask, split_frame, split_message,
                                   split_messages)

__all__ = [
    'BYTES_LIKE', 'DEFAULT_MAX_SIZE', 'MESSAGE_LIMIT', 'OPCODE_BINARY', 'OPCODE_CLOSE',
    'OPCODE_CONTINUATION', 'OPCODE_PING', 'OPCODE_PONG', 'OPCODE_TEXT', 'ControlFrame', 'Frame',
    'FrameParser', 'MessageLimit', 'bytes_like', 'close_payload', 'compressed_size_bound',
    'contains_frame', 'is_valid_close_code', 'mask', 'parse_close', 'pop_frame', 'read_frame',
    'unmasked_frame',
]

#: A continuation frame: the next fragment of a message (RFC 6455 5.2: "%x0 denotes a
#: continuation frame"; 5.4: the fragments after the first have "the opcode set to 0").
OPCODE_CONTINUATION = 0x0
#: A text frame (5.2: "%x1 denotes a text frame"): its payload is UTF-8 (5.6).
OPCODE_TEXT = 0x1
#: A binary frame (5.2: "%x2 denotes a binary frame").
OPCODE_BINARY = 0x2
#: A close frame (5.2: "%x8 denotes a connection close"): see `ControlFrame.close`.
OPCODE_CLOSE = 0x8
#: A ping (5.2: "%x9 denotes a ping"), which the peer answers with a pong (5.5.2).
OPCODE_PING = 0x9
#: A pong (5.2: "%xA denotes a pong"): an answer to a ping, or unsolicited (5.5.3).
OPCODE_PONG = 0xA
_KNOWN_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})

# The close codes: RFC 6455 7.4.1 (1000-1011, 1015) and the IANA registry (1012-1014).
#: 1000, RFC 6455 7.4.1: "a normal closure, meaning that the purpose for which the
#: connection was established has been fulfilled". The default of `Connection.close()`.
CLOSE_NORMAL = 1000
#: 1001: 'an endpoint is "going away", such as a server going down or a browser having
#: navigated away from a page' (7.4.1). wspy's servers close their clients with it when
#: they shut down.
CLOSE_GOING_AWAY = 1001
#: 1002: "an endpoint is terminating the connection due to a protocol error" (7.4.1); the
#: code of `ProtocolError`.
CLOSE_PROTOCOL_ERROR = 1002
#: 1003: "an endpoint is terminating the connection because it has received a type of
#: data it cannot accept" (7.4.1), such as binary for an endpoint of text only.
CLOSE_UNSUPPORTED_DATA = 1003
#: 1005, never sent: "It is designated for use in applications expecting a status code to
#: indicate that no status code was actually present" (7.4.1). `onclose` gets it for a
#: close frame without a code.
CLOSE_NO_STATUS = 1005
#: 1006, never sent: for "the connection was closed abnormally, e.g., without sending or
#: receiving a Close control frame" (7.4.1). `onclose` gets it when the connection dropped.
CLOSE_ABNORMAL = 1006
#: 1007: "received data within a message that was not consistent with the type of the
#: message (e.g., non-UTF-8 [RFC3629] data within a text message)" (7.4.1); the code of
#: `InvalidPayload`.
CLOSE_INVALID_DATA = 1007
#: 1008: "received a message that violates its policy" (7.4.1). `AsyncServer` closes with
#: it a client that does not read (over `max_buffer_size`).
CLOSE_POLICY_VIOLATION = 1008
#: 1009: "received a message that is too big for it to process" (7.4.1); the code of
#: `PayloadTooBig` (over `max_message_size` or `max_frame_size`).
CLOSE_MESSAGE_TOO_BIG = 1009
#: 1010, from a client: it "has expected the server to negotiate one or more extension,
#: but the server didn't return them in the response message of the WebSocket handshake"
#: (7.4.1).
CLOSE_MISSING_EXTENSION = 1010
#: 1011: the server "encountered an unexpected condition that prevented it from
#: fulfilling the request" (7.4.1). wspy also fails with it a connection whose keepalive
#: ping went unanswered, and `WebSocketApplication` one whose handler raised.
CLOSE_INTERNAL_ERROR = 1011
#: 1012, Service Restart (IANA registry): the server is restarting.
CLOSE_SERVICE_RESTART = 1012
#: 1013, Try Again Later (IANA registry): the server is overloaded for now.
CLOSE_TRY_AGAIN_LATER = 1013
#: 1014, Bad Gateway (IANA registry): a gateway or proxy had an invalid answer upstream.
CLOSE_BAD_GATEWAY = 1014
#: 1015, never sent: for "the connection was closed due to a failure to perform a TLS
#: handshake (e.g., the server certificate can't be verified)" (7.4.1).
CLOSE_TLS_HANDSHAKE = 1015

if TYPE_CHECKING:
    from wspy.protocol.message import Message

    # wspy 0.9's names: at run time they come from __getattr__, with a DeprecationWarning.
    CLOSE_NOACCEPT_DTYPE: Final = 1003
    CLOSE_POLICY: Final = 1008
    CLOSE_MESSAGE_TOOBIG: Final = 1009
    CLOSE_MISSING_EXTENSIONS: Final = 1010
    CLOSE_UNABLE: Final = 1011
else:
    def __getattr__(name: str) -> object:
        """wspy 0.9's close-code names (deprecated): `wspy.protocol.compat.RENAMED_CLOSE_CODES`."""
        return renamed_close_code(__name__, name, globals())

#: Default limit on the size of one frame and of one message: 1 MiB.
DEFAULT_MAX_SIZE = 1 << 20


class MessageLimit(enum.Enum):
    """The type of `MESSAGE_LIMIT`."""

    MESSAGE_LIMIT = 'MESSAGE_LIMIT'


#: The default `max_frame_size` of a `websocket`: frames are limited as messages are, by
#: the `max_message_size` of the `Connection` over it (`DEFAULT_MAX_SIZE` without one).
MESSAGE_LIMIT = MessageLimit.MESSAGE_LIMIT
# RSV1: the bit permessage-deflate and deflate-frame set on a compressed frame.
_RSV1 = 0x40

#: The largest payload of a control frame, RFC 6455 5.5: "All control frames MUST have a
#: payload length of 125 bytes or less and MUST NOT be fragmented."
MAX_CONTROL_PAYLOAD = 125

# Codes an endpoint may put in a close frame (RFC 6455 7.4 and the IANA
# registry): 1004-1006 and 1015 are reserved for local use, 1016-2999 are
# unassigned, 3000-4999 belong to libraries and applications.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                             1011, 1012, 1013, 1014})

_HEAD = struct.Struct('!BB')
_HEAD16 = struct.Struct('!BBH')
_HEAD64 = struct.Struct('!BBQ')
_UINT16 = struct.Struct('!H')
_UINT64 = struct.Struct('!Q')
_KEY = struct.Struct('4s')
_new_object = object.__new__
# From this size on, a payload goes out apart from its header (see `Frame.pack_parts`):
# copying 64 KiB into one buffer with its header costs more than a second buffer does.
_PACK_LIMIT = 0x10000


def unmasked_frame(opcode: int, payload: bytes) -> tuple[bytes, bytes]:
    """A final, unmasked frame without RSV bits, without making a `Frame`.

    Returns:
        (the frame's bytes, `b''`), or for a payload of 64 KiB and more (its
        header, `payload`), to send one after the other: the payload is not
        copied.
    """
    length = len(payload)
    if length < 126:
        return _HEAD.pack(0x80 | opcode, length) + payload, b''
    if length < _PACK_LIMIT:
        return _HEAD16.pack(0x80 | opcode, 126, length) + payload, b''
    return _HEAD64.pack(0x80 | opcode, 127, length), payload


# The same in one C call: 1,500 instructions less a message sent (callgrind, bench/run.py
# '16 B text echo, 64 x 16').
if HAS_SPEEDUPS:
    from wspy._speedups import unmasked_frame


#: What `bytes_like` takes, for its TypeError.
BYTES_LIKE = 'bytes-like (bytes, bytearray, memoryview)'


def compressed_size_bound(size: int) -> int:
    """The most bytes a deflate compressor may turn `size` bytes into.

    zlib's conservative `deflateBound` (any window and memory level): data
    that does not compress goes out in stored blocks of 5 bytes of header
    each, and a small memory level makes those blocks small (128 bytes at
    level 1); fixed Huffman codes grow random data by 1/8 at worst.
    """
    return size + ((size + 7) >> 3) + ((size + 63) >> 6) + 16


def bytes_like(data: Any, what: str = 'a payload', expected: str = BYTES_LIKE) -> bytes:
    """The bytes of a bytes-like object (bytes, bytearray, memoryview, array, ...).

    Args:
        data: the object: `bytes` comes back as it is, anything else copied.
        what: what `data` is, for the error message.
        expected: what it should have been, for the error message.

    Raises:
        TypeError: "`what` must be `expected`" for anything else, an `int`
            above all (`bytes(10**9)` would allocate a gigabyte of zeros).
    """
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f'{what} must be {expected}, not {type(data).__name__}') from None
    with view:
        return view.tobytes()


def is_valid_close_code(code: int) -> bool:
    """Whether `code` may appear in a close frame on the wire.

    1000-1003 and 1007-1014 (RFC 6455 7.4.1 and the IANA registry: 1004
    is reserved, 1005, 1006 and 1015 only report what happened), and
    3000-4999, which RFC 6455 7.4.2 reserves "for use by libraries,
    frameworks, and applications" (3000-3999) and "for private use"
    (4000-4999).
    """
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


def close_payload(code: int | None = None, reason: str = '') -> bytes:
    """The payload of a close frame with `code` and `reason` (RFC 6455 5.5.1).

    "If there is a body, the first two bytes of the body MUST be a 2-byte
    unsigned integer (in network byte order) representing a status code";
    the reason follows in UTF-8.

    Args:
        code: the close code, or None for an empty payload.
        reason: the close reason; it needs a `code`.

    Raises:
        ValueError: a reason without a code, a code that may not be sent (see
            `is_valid_close_code`), or a reason over 123 bytes in UTF-8 (the
            payload would be over 125).
    """
    if code is None:
        if reason:
            raise ValueError('a close reason needs a close code')
        return b''
    if not is_valid_close_code(code):
        raise ValueError(f'invalid close code {code}')
    data = _UINT16.pack(code) + reason.encode('utf-8')
    if len(data) > MAX_CONTROL_PAYLOAD:
        raise ValueError('close reason longer than 123 bytes')
    return data


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a received close frame's payload, validated.

    Returns:
        `(None, '')` for an empty payload, else the code and the reason.

    Raises:
        ProtocolError: a payload of 1 byte, or a code no endpoint may send
            (see `is_valid_close_code`).
        InvalidPayload: a reason that is not UTF-8 (RFC 6455 8.1).
    """
    if not payload:
        return None, ''
    if len(payload) == 1:
        raise ProtocolError('close frame with a 1-byte payload')
    code = _UINT16.unpack_from(payload)[0]
    if not is_valid_close_code(code):
        raise ProtocolError(f'invalid close code {code}')
    try:
        reason = bytes(payload[2:]).decode('utf-8')
    except UnicodeDecodeError:
        raise InvalidPayload('close reason is not valid UTF-8') from None
    return code, reason


def _legacy_masking_key(masking_key: bytes) -> bytes:
    """`Frame(..., mask=True)` of wspy 0.9: a random key unless one is given (deprecated)."""
    # 4: warn_deprecated <- here <- Frame.__init__ (or ControlFrame's) <- the user's code.
    warn_deprecated('Frame(..., mask=True)', 'Frame(..., masking_key=os.urandom(4))',
                    stacklevel=4)
    return masking_key or os.urandom(4)


class Frame:
    """One WebSocket frame (RFC 6455 5.2); `payload` is the unmasked payload.

    `pack()` gives the frame's bytes on the wire, its payload masked with
    `masking_key`. A client masks what it sends and a server does not
    (5.1: "a client MUST mask all frames that it sends to the server", and
    "A server MUST NOT mask any frames that it sends to the client").

    Args:
        opcode: `OPCODE_TEXT`, `OPCODE_BINARY`, `OPCODE_CONTINUATION`, or a
            control opcode (see `ControlFrame`).
        payload: the unmasked payload: bytes-like, or a `str` (encoded as
            UTF-8).
        masking_key: `b''` for an unmasked frame, or 4 bytes (5.3: "The
            masking key is a 32-bit value chosen at random by the client":
            `os.urandom(4)`).
        final: the FIN bit: whether this frame ends its message.
        rsv1: the RSV1 bit, for a negotiated extension (permessage-deflate
            marks a compressed message with it).
        rsv2: the RSV2 bit, for a negotiated extension.
        rsv3: the RSV3 bit, for a negotiated extension.
        mask: wspy 0.9's keyword, deprecated (pass
            `masking_key=os.urandom(4)`): True gives the frame a random
            masking key unless `masking_key` is given.

    Raises:
        ValueError: a `masking_key` that is neither empty nor 4 bytes.
        TypeError: a payload that is neither a `str` nor bytes-like.
    """

    __slots__ = ('final', 'masking_key', 'opcode', 'payload', 'rsv1', 'rsv2', 'rsv3')

    def __init__(self, opcode: int, payload: bytes | bytearray | memoryview | str = b'',
                 masking_key: bytes = b'', final: bool = True, rsv1: bool = False,
                 rsv2: bool = False, rsv3: bool = False, *, mask: bool = False) -> None:
        if mask:
            masking_key = _legacy_masking_key(masking_key)
        if len(masking_key) not in (0, 4):
            raise ValueError('masking key must be empty or 4 bytes')
        self.opcode = opcode
        if type(payload) is not bytes:
            payload = (payload.encode('utf-8') if isinstance(payload, str)
                       else bytes_like(payload, 'a frame payload'))
        self.payload: bytes = payload
        self.masking_key = masking_key
        self.final = final
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3

    @property
    def masked(self) -> bool:
        """Whether the frame is sent masked."""
        return bool(self.masking_key)

    def header(self) -> bytes:
        """The frame's header bytes, including the masking key."""
        b1 = (self.opcode | (self.final << 7) | (self.rsv1 << 6) | (self.rsv2 << 5)
              | (self.rsv3 << 4))
        maskbit = 0x80 if self.masking_key else 0
        length = len(self.payload)
        if length < 126:
            head = _HEAD.pack(b1, maskbit | length)
        elif length < 0x10000:
            head = _HEAD16.pack(b1, maskbit | 126, length)
        else:
            head = _HEAD64.pack(b1, maskbit | 127, length)
        return head + self.masking_key

    def pack(self) -> bytes:
        """The frame as bytes on the wire."""
        if self.masking_key:
            return self.header() + mask(self.masking_key, self.payload)
        return self.header() + self.payload

    def pack_parts(self) -> tuple[bytes, bytes]:
        """The frame on the wire in two parts, to send one after the other.

        Returns:
            (the frame's bytes, `b''`), or for a payload of 64 KiB and more
            (its header, its payload masked): a large payload is not copied
            into one buffer with its header.
        """
        if len(self.payload) < _PACK_LIMIT:
            return self.pack(), b''
        key = self.masking_key
        return self.header(), mask(key, self.payload) if key else self.payload

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        """Split a data frame into frames of at most `fragment_size` payload bytes.

        The first keeps the opcode and RSV bits, the others are continuation
        frames, and the last has this frame's FIN bit: RFC 6455 5.4, a
        fragmented message is "a single frame with the FIN bit clear and an
        opcode other than 0, followed by zero or more frames with the FIN bit
        clear and the opcode set to 0, and terminated by a single frame with
        the FIN bit set and an opcode of 0".

        Args:
            fragment_size: the most payload bytes in each frame.
            mask: whether to mask each frame with a fresh random key.

        Raises:
            ValueError: a `fragment_size` under 1.
        """
        if fragment_size < 1:
            raise ValueError('fragment_size must be positive')
        payload = self.payload
        starts = range(0, len(payload), fragment_size) if payload else [0]
        frames = []
        for start in starts:
            key = os.urandom(4) if mask else b''
            frames.append(Frame(OPCODE_CONTINUATION, payload[start:start + fragment_size],
                                key, final=False))
        frames[0].opcode = self.opcode
        frames[0].rsv1, frames[0].rsv2, frames[0].rsv3 = self.rsv1, self.rsv2, self.rsv3
        frames[-1].final = self.final
        return frames

    def unpack_close(self) -> tuple[int | None, str]:
        """Code and reason of a close frame: `(None, '')` when it has no code.

        Raises:
            ProtocolError: a payload of 1 byte, or a code no endpoint may send.
            InvalidPayload: a reason that is not UTF-8.
        """
        return parse_close(self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.opcode, self.payload, self.masking_key, self.final,
                self.rsv1, self.rsv2, self.rsv3) == \
            (other.opcode, other.payload, other.masking_key, other.final,
             other.rsv1, other.rsv2, other.rsv3)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        flags = ''.join(name for name, on in
                        (('F', self.final), ('1', self.rsv1), ('2', self.rsv2),
                         ('3', self.rsv3), ('M', self.masking_key)) if on)
        return (f'<{type(self).__name__} opcode={self.opcode:#x} flags={flags or "-"} '
                f'len={len(self.payload)}>')


class ControlFrame(Frame):
    """A close, ping or pong frame: its arguments are `Frame`'s.

    RFC 6455 5.5: "All control frames MUST have a payload length of 125
    bytes or less and MUST NOT be fragmented." A longer payload is refused
    when the frame is built (no parser would accept the frame).

    Raises:
        PingError: a ping or pong payload over 125 bytes.
        ValueError: a close payload over 125 bytes, or a `masking_key` that
            is neither empty nor 4 bytes.
    """

    __slots__ = ()

    def __init__(self, opcode: int, payload: bytes | bytearray | memoryview | str = b'',
                 masking_key: bytes = b'', final: bool = True, rsv1: bool = False,
                 rsv2: bool = False, rsv3: bool = False, *, mask: bool = False) -> None:
        if mask:
            masking_key = _legacy_masking_key(masking_key)
        super().__init__(opcode, payload, masking_key, final, rsv1, rsv2, rsv3)
        if len(self.payload) > MAX_CONTROL_PAYLOAD:
            error = PingError if opcode in (OPCODE_PING, OPCODE_PONG) else ValueError
            raise error(f'control frame payload of {len(self.payload)} bytes, over '
                        f'{MAX_CONTROL_PAYLOAD}')

    @classmethod
    def close(cls, code: int | None = None, reason: str = '',
              masking_key: bytes = b'') -> ControlFrame:
        """A close frame with `code` and `reason` (RFC 6455 5.5.1).

        Args:
            code: the close code (the `CLOSE_*` constants, or 3000-4999 for
                applications), or None for a close frame without one.
            reason: the close reason, at most 123 bytes in UTF-8; it needs a
                `code`.
            masking_key: 4 random bytes on the client's side, `b''` on the
                server's.

        Raises:
            ValueError: a code that may not be sent, a reason without a code,
                or a reason too long.
        """
        return cls(OPCODE_CLOSE, close_payload(code, reason), masking_key)


class FrameParser:
    """Incremental frame parser: `feed()` bytes, then take frames with `next_frame()`.

    The bytes may come in pieces of any size. Each header is checked as
    soon as it is complete (RFC 6455 5.2): a reserved opcode, an RSV bit no
    negotiated extension uses, a fragmented control frame or one over 125
    bytes, masking on the wrong side, or a 64-bit length with its most
    significant bit set is a `ProtocolError`.

    Args:
        require_mask: True on a server (5.1: "The server MUST close the
            connection upon receiving a frame that is not masked"), False on
            a client ("A client MUST close a connection if it detects a
            masked frame"), None to accept both.
        max_frame_size: the largest payload accepted, in bytes (None: no
            limit); a frame over it is refused from its header, before its
            payload is read (`PayloadTooBig`). A compressed frame (RSV1
            negotiated and set) is judged by the size it inflates to, which
            the extension bounds, and may take up to
            `compressed_size_bound(max_frame_size)` on the wire.
        rsv_allowed: the RSV bits (0x40, 0x20, 0x10) that negotiated
            extensions may set.
    """

    __slots__ = (
        '_buf',
        '_header',
        '_peeked',
        '_pos',
        'max_frame_size',
        'require_mask',
        'rsv_allowed',
    )

    def __init__(self, *, require_mask: bool | None = None,
                 max_frame_size: int | None = DEFAULT_MAX_SIZE, rsv_allowed: int = 0) -> None:
        self.require_mask = require_mask
        self.max_frame_size = max_frame_size
        self.rsv_allowed = rsv_allowed
        # Received bytes: our own, or a caller's buffer lent until `keep()`.
        self._buf: bytearray | memoryview = bytearray()
        self._pos = 0
        # (first byte, masking key, payload length, header length) of the
        # frame whose payload is still arriving.
        self._header: tuple[int, bytes, int, int] | None = None
        # How many payload bytes of that frame `peek_payload` has handed out.
        self._peeked = 0

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of a returned frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        buf = self._buf
        if isinstance(buf, memoryview):
            buf = self._buf = bytearray(buf[self._pos:])
            self._pos = 0
        elif self._pos:
            del buf[:self._pos]
            self._pos = 0
        buf += data

    def lend(self, view: memoryview) -> None:
        """Parse `view` where it is, without copying, until `keep()`.

        For an event loop's shared receive buffer: the frames that arrived
        whole are parsed out of it directly. The caller must call `keep()`
        before the buffer changes. With bytes still buffered, `view` is
        appended as `feed()` does.
        """
        if self._pos < len(self._buf):
            self.feed(view)
        else:
            self._buf = view
            self._pos = 0

    def keep(self) -> None:
        """Copy what is left of a lent buffer (the start of a frame) into our own."""
        if isinstance(self._buf, memoryview):
            self._buf = bytearray(self._buf[self._pos:])
            self._pos = 0

    def take_buffer(self) -> bytes:
        """Remove and return every byte not yet parsed."""
        rest = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = 0
        self._header = None
        return rest

    def __iter__(self) -> FrameParser:
        return self

    def __next__(self) -> Frame:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> Frame | None:
        """The next complete frame (its payload unmasked), or None until more bytes arrive.

        Raises:
            ProtocolError: the next frame breaks RFC 6455 (`PayloadTooBig`
                over `max_frame_size`); the frames before it are returned
                first.
        """
        header = self._header
        if header is None:
            if len(self._buf) - self._pos < 2:  # the usual end of a batch: no call
                return None
            if split_frame is not None:
                # A complete, valid frame in one C call; anything else is parsed below.
                split = split_frame(self._buf, self._pos, self.require_mask,
                                    self.max_frame_size, self.rsv_allowed)
                if split is not None:
                    b1, payload, key, self._pos = split
                    return _received_frame(b1, payload, key)
            header = self._parse_header()
            if header is None:
                return None
        b1, key, length, header_length = header
        start = self._pos + header_length
        end = start + length
        buf = self._buf
        if len(buf) < end:
            return None
        # A view of the payload (the lent buffer is one already): not a copy.
        data = buf[start:end] if type(buf) is memoryview else memoryview(buf)[start:end]
        try:
            payload = mask(key, data) if key else bytes(data)
        finally:
            data.release()
        self._pos = end
        self._header = None
        self._peeked = 0
        return _received_frame(b1, payload, key)

    #: Whether `next_whole_message` can give anything (it needs the C accelerator).
    splits_messages = split_message is not None

    def next_whole_message(self, max_message_size: int | None
                           ) -> tuple[int, bytes | str, bytes | None] | None:
        """The next frame if it is a whole message on its own, as (opcode, payload, utf8).

        That is a complete final text or binary frame without reserved
        bits, within `max_message_size`, a text payload valid UTF-8 (and
        given as `str`, with `utf8` its bytes unless they are all ASCII,
        else None). None for anything else, to go through
        `next_frame()`, and always without the C accelerator
        (`splits_messages`). A connection's fast path for the usual message.
        """
        if self._header is not None or split_message is None or len(self._buf) - self._pos < 2:
            return None  # the last of the usual end of a read: no C call on an empty buffer
        split = split_message(self._buf, self._pos, self.require_mask, self.max_frame_size,
                              max_message_size)
        if split is None:
            return None
        opcode, payload, self._pos, utf8 = split
        return opcode, payload, utf8

    def next_whole_messages(self, max_message_size: int | None) -> list[Message]:
        """Every next frame that is a whole message on its own (see `next_whole_message`), up
        to the first that is not, in one call: a list of messages (made as
        `wspy.protocol.message.received_message` makes them), empty without the C
        accelerator."""
        if self._header is not None or split_messages is None or len(self._buf) - self._pos < 2:
            return []
        messages, self._pos = split_messages(self._buf, self._pos, self.require_mask,
                                             self.max_frame_size, max_message_size)
        return messages

    def ready(self) -> bool:
        """Whether `next_frame()` has a frame (or an error) to give without more bytes."""
        try:
            header = self._header or self._parse_header()
        except ProtocolError:
            return True
        return header is not None and len(self._buf) >= self._pos + header[3] + header[2]

    def missing(self) -> int:
        """How many bytes of the frame still arriving are yet to come (0 until its header has)."""
        header = self._header
        return 0 if header is None else self._pos + header[3] + header[2] - len(self._buf)

    def pending_first_byte(self) -> int | None:
        """The first header byte (FIN, RSV, opcode) of the frame still arriving, if any."""
        header = self._header or self._parse_header()
        return None if header is None else header[0]

    def peek_payload(self) -> bytes:
        """The unmasked payload bytes of the frame still arriving, since the last peek.

        This lets a connection check a long frame as it arrives (say, its
        UTF-8) instead of once it is complete.
        """
        header = self._header or self._parse_header()
        if header is None:
            return b''
        _, key, length, header_length = header
        payload_start = self._pos + header_length
        start = payload_start + self._peeked
        end = min(len(self._buf), payload_start + length)
        if end <= start:
            return b''
        view = memoryview(self._buf)
        try:
            chunk = mask(key, view[start:end], self._peeked) if key else bytes(view[start:end])
        finally:
            view.release()
        self._peeked += end - start
        return chunk

    def _parse_header(self) -> tuple[int, bytes, int, int] | None:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b1 = buf[pos]
        b2 = buf[pos + 1]
        opcode = b1 & 0x0F
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(f'reserved opcode {opcode:#x}')
        if b1 & 0x70 & (0x70 if opcode & 0x8 else ~self.rsv_allowed):
            raise ProtocolError('reserved bit set without a negotiated extension')
        length = b2 & 0x7F
        if opcode & 0x8:
            if not b1 & 0x80:
                raise ProtocolError('fragmented control frame')
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError('control frame payload over 125 bytes')
        masked = b2 & 0x80
        if self.require_mask is not None and bool(masked) != self.require_mask:
            raise ProtocolError('unmasked frame from a client' if self.require_mask
                                else 'masked frame from a server')
        header_length = 2
        if length == 126:
            if available < 4:
                return None
            length = _UINT16.unpack_from(buf, pos + 2)[0]
            header_length = 4
        elif length == 127:
            if available < 10:
                return None
            length = _UINT64.unpack_from(buf, pos + 2)[0]
            if length >> 63:
                raise ProtocolError('payload length with the most significant bit set')
            header_length = 10
        limit = self.max_frame_size
        if limit is not None and length > limit and not (
                b1 & _RSV1 & self.rsv_allowed and length <= compressed_size_bound(limit)):
            raise PayloadTooBig(f'frame of {length} bytes over the limit of {limit}')
        key = b''
        if masked:
            if available < header_length + 4:
                return None
            key = _KEY.unpack_from(buf, pos + header_length)[0]
            header_length += 4
        header = self._header = (b1, key, length, header_length)
        return header


def _received_frame(b1: int, payload: bytes, key: bytes) -> Frame:
    """A frame whose header has been checked, built without `Frame.__init__`'s checks."""
    opcode = b1 & 0x0F
    frame = _new_object(ControlFrame if opcode & 0x8 else Frame)
    frame.opcode = opcode
    frame.payload = payload
    frame.masking_key = key
    frame.final = b1 & 0x80 != 0
    frame.rsv1 = b1 & 0x40 != 0
    frame.rsv2 = b1 & 0x20 != 0
    frame.rsv3 = b1 & 0x10 != 0
    return frame


def _parse_one(data: bytes | bytearray | memoryview) -> tuple[Frame | None, int]:
    parser = FrameParser(max_frame_size=None)
    parser.feed(data)
    frame = parser.next_frame()
    return frame, len(data) - parser.buffered


def contains_frame(data: bytes | bytearray | memoryview) -> bool:
    """Whether `data` starts with a complete frame.

    Raises:
        ProtocolError: the frame at its start breaks RFC 6455 (see
            `read_frame`).
    """
    return _parse_one(data)[0] is not None


def read_frame(data: bytes | bytearray | memoryview) -> Frame:
    """The frame at the start of `data`, masked or not (its payload unmasked), of any size.

    Raises:
        ProtocolError: `data` does not start with a complete frame, or the
            frame breaks RFC 6455 (an RSV bit set counts: no extension is
            negotiated here).
    """
    frame = _parse_one(data)[0]
    if frame is None:
        raise ProtocolError('incomplete frame')
    return frame


def pop_frame(data: bytes | bytearray | memoryview) -> tuple[Frame | None, bytes]:
    """The frame at the start of `data` and the bytes after it.

    Returns:
        (the frame, the bytes after it), or (None, all of `data`) while the
        frame is incomplete.

    Raises:
        ProtocolError: the frame breaks RFC 6455 (see `read_frame`).
    """
    frame, used = _parse_one(data)
    return frame, bytes(data[used:])
