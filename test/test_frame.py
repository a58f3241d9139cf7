"""Frames: packing, the incremental parser, and every rejection RFC 6455 asks for."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wspy
from wspy import ProtocolError
from wspy.protocol import frame as frame_module
from wspy.protocol.frame import (OPCODE_BINARY, OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING,
                                 OPCODE_TEXT, ControlFrame, Frame, FrameParser, close_payload,
                                 is_valid_close_code, parse_close)

from test_properties import frames
from wspy.protocol.message import BinaryMessage, TextMessage, received_message


def parse_all(data: bytes, chunks: list[int] | None = None, **options) -> list[Frame]:
    """Feed `data` to a parser in pieces of the given sizes; every frame it yields."""
    parser = FrameParser(max_frame_size=None, **options)
    frames = []
    pos = 0
    for size in chunks or [len(data)]:
        parser.feed(data[pos:pos + size])
        pos += size
        frames.extend(parser)
    parser.feed(data[pos:])
    frames.extend(parser)
    assert parser.buffered == 0
    return frames


@pytest.mark.parametrize('length', [0, 1, 125, 126, 127, 0xFFFF, 0x10000, 70000])
@pytest.mark.parametrize('masked', [False, True])
def test_pack_and_parse_round_trip(length: int, masked: bool) -> None:
    payload = os.urandom(length)
    key = os.urandom(4) if masked else b''
    frame = Frame(wspy.OPCODE_BINARY, payload, key)
    raw = frame.pack()
    header = 2 + (0 if length < 126 else 2 if length < 0x10000 else 8) + (4 if masked else 0)
    assert len(raw) == header + length
    if masked and length:
        assert raw[header:] != payload or length < 4
    assert parse_all(raw) == [frame]


def test_header_fields_are_on_the_wire() -> None:
    raw = Frame(wspy.OPCODE_TEXT, b'hi', final=False, rsv1=True, rsv3=True).pack()
    assert raw == bytes([0x01 | 0x40 | 0x10, 2]) + b'hi'
    assert Frame(wspy.OPCODE_PING, 'x', b'abcd').pack()[:2] == bytes([0x89, 0x81])
    assert Frame(wspy.OPCODE_TEXT, 'é').payload == 'é'.encode()


def stream() -> tuple[bytes, list[Frame]]:
    frames = [Frame(wspy.OPCODE_TEXT, b'hello', os.urandom(4), final=False),
              ControlFrame(wspy.OPCODE_PING, b'p', os.urandom(4)),
              Frame(wspy.OPCODE_CONTINUATION, os.urandom(300), os.urandom(4)),
              Frame(wspy.OPCODE_BINARY, os.urandom(70000), os.urandom(4)),
              ControlFrame.close(1000, 'bye', os.urandom(4))]
    return b''.join(f.pack() for f in frames), frames


def test_parser_fed_byte_by_byte() -> None:
    data, frames = stream()
    assert parse_all(data, [1] * len(data)) == frames


@pytest.mark.parametrize('seed', range(20))
def test_parser_fed_random_chunks(seed: int) -> None:
    data, frames = stream()
    rng = random.Random(seed)
    chunks = []
    while sum(chunks) < len(data):
        chunks.append(rng.randint(1, 5000))
    assert parse_all(data, chunks, require_mask=True) == frames


def test_control_frames_are_control_frame_instances() -> None:
    data, _ = stream()
    kinds = [type(f) for f in parse_all(data)]
    assert kinds == [Frame, ControlFrame, Frame, Frame, ControlFrame]


def test_frames_before_a_bad_one_come_out_first() -> None:
    good = Frame(wspy.OPCODE_TEXT, b'ok', b'abcd').pack()
    parser = FrameParser(require_mask=True)
    parser.feed(good + bytes([0x83, 0x80]) + b'abcd')
    assert parser.next_frame().payload == b'ok'
    with pytest.raises(wspy.ProtocolError):
        parser.next_frame()


BAD_FRAMES = [
    ('reserved opcode 3', bytes([0x83, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('reserved opcode 0xB', bytes([0x8B, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('RSV1 unnegotiated', bytes([0xC1, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('RSV2 unnegotiated', bytes([0xA1, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('RSV3 unnegotiated', bytes([0x91, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('control over 125', bytes([0x89, 0xFE, 0, 126]) + b'abcd', wspy.ProtocolError, {}),
    ('fragmented ping', bytes([0x09, 0x80]) + b'abcd', wspy.ProtocolError, {}),
    ('unmasked from a client', bytes([0x81, 0x00]), wspy.ProtocolError, {}),
    ('64-bit length MSB', bytes([0x82, 0xFF]) + struct.pack('!Q', 1 << 63) + b'abcd',
     wspy.ProtocolError, {}),
    ('over the frame limit', bytes([0x82, 0xFF]) + struct.pack('!Q', 1 << 40),
     wspy.PayloadTooBig, {}),
    ('masked from a server', bytes([0x81, 0x80]) + b'abcd', wspy.ProtocolError,
     {'require_mask': False}),
]


@pytest.mark.parametrize('name,data,error,options', BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_rejections(name: str, data: bytes, error: type, options: dict) -> None:
    parser = FrameParser(**{'require_mask': True, **options})
    parser.feed(data)
    with pytest.raises(error) as info:
        parser.next_frame()
    assert info.value.code == (1009 if error is wspy.PayloadTooBig else 1002)


def test_frame_limit_is_checked_from_the_header() -> None:
    parser = FrameParser(require_mask=True, max_frame_size=1000)
    parser.feed(bytes([0x82, 0xFE]) + struct.pack('!H', 1001))  # no payload sent at all
    with pytest.raises(wspy.PayloadTooBig):
        parser.next_frame()
    parser = FrameParser(require_mask=True, max_frame_size=1000)
    parser.feed(Frame(wspy.OPCODE_BINARY, b'x' * 1000, b'abcd').pack())
    assert len(parser.next_frame().payload) == 1000


def test_negotiated_rsv_bits_are_allowed() -> None:
    parser = FrameParser(rsv_allowed=0x40)
    parser.feed(Frame(wspy.OPCODE_TEXT, b'x', rsv1=True).pack())
    assert parser.next_frame().rsv1


@pytest.mark.parametrize('size,step', [(1000, 7), (200_000, 9_999)])
def test_peek_payload_unmasks_a_frame_as_it_arrives(size: int, step: int) -> None:
    payload = os.urandom(size)
    raw = Frame(wspy.OPCODE_TEXT, payload, b'\x01\x02\x03\x04').pack()
    parser = FrameParser(require_mask=True)
    assert parser.peek_payload() == b'' and parser.pending_first_byte() is None
    seen = b''
    for start in range(0, len(raw) - 1, step):
        parser.feed(raw[start:min(start + step, len(raw) - 1)])
        seen += parser.peek_payload()
    assert parser.next_frame() is None
    assert parser.pending_first_byte() == 0x81
    assert seen == payload[:-1]
    parser.feed(raw[-1:])
    assert parser.next_frame().payload == payload
    assert parser.peek_payload() == b''


def test_missing_counts_the_bytes_a_frame_still_needs() -> None:
    raw = Frame(wspy.OPCODE_BINARY, b'x' * 70_000, b'abcd').pack()  # a 14-byte header
    parser = FrameParser(require_mask=True)
    parser.feed(raw[:10])
    assert parser.next_frame() is None and parser.missing() == 0  # header not complete
    parser.feed(raw[10:30_000])
    assert parser.next_frame() is None and parser.missing() == len(raw) - 30_000
    parser.feed(raw[30_000:] + raw[:5])  # the frame, and the start of the next
    assert len(parser.next_frame().payload) == 70_000
    assert parser.next_frame() is None and parser.missing() == 0


def test_fragment() -> None:
    frames = Frame(wspy.OPCODE_TEXT, b'abcdefgh', rsv1=True).fragment(3, mask=True)
    assert [f.payload for f in frames] == [b'abc', b'def', b'gh']
    assert [f.opcode for f in frames] == [wspy.OPCODE_TEXT, 0, 0]
    assert [f.final for f in frames] == [False, False, True]
    assert [f.rsv1 for f in frames] == [True, False, False]
    assert all(len(f.masking_key) == 4 for f in frames)
    assert len(Frame(wspy.OPCODE_TEXT, b'').fragment(3)) == 1
    with pytest.raises(ValueError):
        Frame(wspy.OPCODE_TEXT, b'x').fragment(0)


def test_bad_masking_key() -> None:
    with pytest.raises(ValueError):
        Frame(wspy.OPCODE_TEXT, b'x', b'abc')


def test_original_byte_helpers() -> None:
    raw = Frame(wspy.OPCODE_TEXT, b'hello', b'abcd').pack()
    assert wspy.contains_frame(raw)
    assert not wspy.contains_frame(raw[:-1])
    assert wspy.read_frame(raw).payload == b'hello'
    with pytest.raises(wspy.ProtocolError):
        wspy.read_frame(raw[:3])
    frame, rest = wspy.pop_frame(raw + b'\x81')
    assert frame.payload == b'hello' and rest == b'\x81'
    assert wspy.pop_frame(raw[:4]) == (None, raw[:4])


@pytest.mark.parametrize('code', [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    assert parse_close(close_payload(code, 'why')) == (code, 'why')


@pytest.mark.parametrize('code', [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(wspy.ProtocolError):
        parse_close(struct.pack('!H', code))
    with pytest.raises(ValueError):
        close_payload(code)


def test_close_payloads() -> None:
    assert parse_close(b'') == (None, '')
    with pytest.raises(wspy.ProtocolError):
        parse_close(b'\x03')
    with pytest.raises(wspy.InvalidPayload) as info:
        parse_close(struct.pack('!H', 1000) + b'\xff')
    assert info.value.code == 1007
    with pytest.raises(ValueError):
        close_payload(1000, 'x' * 124)
    with pytest.raises(ValueError):
        close_payload(None, 'reason without code')
    assert ControlFrame.close(1000, 'ok').unpack_close() == (1000, 'ok')


def test_repr_and_equality() -> None:
    frame = Frame(wspy.OPCODE_TEXT, b'x', b'abcd', final=False)
    assert 'opcode=0x1' in repr(frame) and 'M' in repr(frame)
    assert frame != Frame(wspy.OPCODE_TEXT, b'x')
    assert frame.__eq__(object()) is NotImplemented


def test_rsv_bits_are_never_allowed_on_control_frames() -> None:
    parser = FrameParser(rsv_allowed=0x70)
    parser.feed(Frame(wspy.OPCODE_PING, b'x', rsv1=True).pack())
    with pytest.raises(wspy.ProtocolError):
        parser.next_frame()


# -- the C accelerator's split_frame agrees with the Python parser ----------------------

try:
    from wspy._speedups import split_frame as c_split_frame
    from wspy._speedups import split_message as c_split_message
    from wspy._speedups import split_messages as c_split_messages
    from wspy._speedups import unmasked_frame as c_unmasked_frame
    from wspy._speedups import message_classes
    message_classes(TextMessage, BinaryMessage)  # done by wspy.protocol.message unless disabled
except ImportError:  # pragma: no cover - a build without a compiler
    c_split_frame = c_split_message = c_split_messages = c_unmasked_frame = None
needs_c = pytest.mark.skipif(c_split_frame is None, reason='the C accelerator is not built')


def python_parse(data: bytes, require_mask: bool | None, limit: int | None,
                 rsv_allowed: int) -> tuple[Frame | None, int] | ProtocolError:
    """What the pure-Python parser makes of `data`: (frame or None, bytes used) or its error."""
    parser = FrameParser(require_mask=require_mask, max_frame_size=limit,
                         rsv_allowed=rsv_allowed)
    saved, frame_module.split_frame = frame_module.split_frame, None
    try:
        parser.feed(data)
        frame = parser.next_frame()
    except ProtocolError as error:
        return error
    finally:
        frame_module.split_frame = saved
    return frame, len(data) - parser.buffered


ORDINARY_FRAMES = [
    Frame(OPCODE_TEXT, b'hello', b'abcd'),
    Frame(OPCODE_BINARY, b''),
    Frame(OPCODE_BINARY, bytes(125), b'\x00\x00\x00\x00'),
    Frame(OPCODE_TEXT, b'x' * 126, b'\xff\x01\x02\x03', final=False),
    Frame(OPCODE_CONTINUATION, b'y' * 65535, b'wxyz'),
    Frame(OPCODE_BINARY, os.urandom(65536)),
    Frame(OPCODE_BINARY, os.urandom(300_000), b'1234'),  # unmasked with the GIL released
    Frame(OPCODE_PING, b'p' * 125, b'pppp'),
    Frame(OPCODE_CLOSE, b'\x03\xe8bye'),
]


@needs_c
@pytest.mark.parametrize('frame', ORDINARY_FRAMES, ids=lambda f: f'{f.opcode}-{len(f.payload)}')
def test_split_frame_takes_ordinary_frames_in_one_call(frame: Frame) -> None:
    assert c_split_frame is not None
    data = b'\x89\x00' + frame.pack() + b'\x81'  # after a pong, before the next frame
    split = c_split_frame(data, 2, None, None, 0)
    assert split is not None
    b1, payload, key, end = split
    assert (b1 & 0x0F, bool(b1 & 0x80), payload, key) == (
        frame.opcode, frame.final, frame.payload, frame.masking_key)
    assert end == len(data) - 1
    assert c_split_frame(data[:-2], 2, None, None, 0) is None  # one byte short


@needs_c
@given(st.one_of(st.binary(max_size=200), frames.map(lambda f: f.pack())),
       st.sampled_from([None, True, False]), st.sampled_from([None, 0, 5, 125, 126, 70000]),
       st.sampled_from([0, 0x40, 0x70]))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_split_frame_takes_only_what_the_python_parser_takes_alike(
        data: bytes, require_mask: bool | None, limit: int | None, rsv_allowed: int) -> None:
    assert c_split_frame is not None
    split = c_split_frame(data, 0, require_mask, limit, rsv_allowed)
    python = python_parse(data, require_mask, limit, rsv_allowed)
    if split is None:
        return  # the Python parser decides, whatever it decides
    assert not isinstance(python, ProtocolError), python
    frame, used = python
    assert frame is not None
    b1, payload, key, end = split
    assert (b1 & 0x0F, bool(b1 & 0x80), bool(b1 & 0x40), bool(b1 & 0x20), bool(b1 & 0x10),
            payload, key, end) == (frame.opcode, frame.final, frame.rsv1, frame.rsv2,
                                   frame.rsv3, frame.payload, frame.masking_key, used)


@needs_c
def test_split_frame_leaves_bad_headers_and_limits_to_python() -> None:
    assert c_split_frame is not None
    ok = Frame(OPCODE_TEXT, b'hi', b'abcd').pack()
    assert c_split_frame(ok, 0, True, 10, 0) is not None
    for data, require_mask, limit, rsv_allowed in [
            (b'\x83\x00', None, None, 0),  # reserved opcode
            (b'\xc1\x00', None, None, 0),  # RSV1 not negotiated
            (b'\xc8\x00', None, None, 0x40),  # RSV1 on a control frame
            (b'\x09\x00', None, None, 0),  # fragmented ping
            (b'\x89\x7e\x00\x7e' + bytes(126), None, None, 0),  # ping over 125 bytes
            (b'\x81\x7f' + b'\x80' + bytes(7), None, None, 0),  # 64-bit length, top bit set
            (ok, False, None, 0),  # masked frame from a server
            (Frame(OPCODE_TEXT, b'hi').pack(), True, None, 0),  # unmasked from a client
            (ok, None, 1, 0),  # over max_frame_size
    ]:
        assert c_split_frame(data, 0, require_mask, limit, rsv_allowed) is None, data
        assert isinstance(python_parse(data, require_mask, limit, rsv_allowed), ProtocolError)
    with pytest.raises(TypeError):
        c_split_frame(ok, 0, None, None)


@needs_c
@given(st.one_of(st.binary(max_size=200), frames.map(lambda f: f.pack())),
       st.sampled_from([None, True, False]), st.sampled_from([None, 0, 5, 126, 70000]),
       st.sampled_from([None, 0, 3, 126, 70000]))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_split_message_takes_only_whole_valid_messages(
        data: bytes, require_mask: bool | None, frame_limit: int | None,
        message_limit: int | None) -> None:
    assert c_split_message is not None
    split = c_split_message(data, 0, require_mask, frame_limit, message_limit)
    python = python_parse(data, require_mask, frame_limit, 0)
    if split is None:
        return
    assert not isinstance(python, ProtocolError), python
    frame, used = python
    assert frame is not None and frame.final and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert message_limit is None or len(frame.payload) <= message_limit
    opcode, payload, end, utf8 = split
    assert (opcode, end) == (frame.opcode, used)
    assert payload == (frame.payload.decode() if opcode == OPCODE_TEXT else frame.payload)
    assert utf8 == (frame.payload if opcode == OPCODE_TEXT and not payload.isascii() else None)


@needs_c
def test_split_message_decodes_text_and_leaves_the_rest_to_the_frames() -> None:
    assert c_split_message is not None
    text = Frame(OPCODE_TEXT, 'héllo €'.encode(), b'abcd').pack()
    assert c_split_message(b'..' + text, 2, True, None, None) == (
        OPCODE_TEXT, 'héllo €', 2 + len(text), 'héllo €'.encode())
    ascii_text = Frame(OPCODE_TEXT, b'hello', b'abcd').pack()
    assert c_split_message(ascii_text, 0, True, None, None) == (
        OPCODE_TEXT, 'hello', len(ascii_text), None)
    binary = Frame(OPCODE_BINARY, b'\xff\x00').pack()
    assert c_split_message(binary, 0, False, 10, 2) == (OPCODE_BINARY, b'\xff\x00', 4, None)
    for data, message_limit in [
            (Frame(OPCODE_TEXT, b'\xff', b'abcd').pack(), None),  # invalid UTF-8: 1007 in Python
            (Frame(OPCODE_TEXT, b'part', final=False).pack(), None),  # a fragment
            (Frame(OPCODE_CONTINUATION, b'end').pack(), None),
            (Frame(OPCODE_PING, b'').pack(), None),  # control frames go through next_frame()
            (Frame(OPCODE_BINARY, b'zz', rsv1=True).pack(), None),  # compressed
            (binary, 1),  # over max_message_size: PayloadTooBig in Python
            (binary[:-1], None),  # incomplete
    ]:
        assert c_split_message(data, 0, None, None, message_limit) is None, data


@needs_c
@given(st.lists(st.one_of(st.binary(max_size=20), frames.map(lambda f: f.pack())), max_size=6),
       st.sampled_from([None, True, False]), st.sampled_from([None, 0, 5, 126, 70000]),
       st.sampled_from([None, 0, 3, 126, 70000]))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_split_messages_is_split_message_until_it_gives_none(
        pieces: list[bytes], require_mask: bool | None, frame_limit: int | None,
        message_limit: int | None) -> None:
    assert c_split_message is not None and c_split_messages is not None
    data = b'..' + b''.join(pieces)
    expected, pos = [], 2
    while (split := c_split_message(data, pos, require_mask, frame_limit, message_limit)):
        opcode, payload, pos, utf8 = split
        expected.append(received_message(opcode, payload, utf8))
    messages, end = c_split_messages(data, 2, require_mask, frame_limit, message_limit)
    assert (messages, end) == (expected, pos)
    for made, python in zip(messages, expected, strict=True):
        assert type(made) is type(python) and made.encode() == python.encode()


@needs_c
def test_split_messages_stops_at_the_first_frame_that_is_not_a_message() -> None:
    assert c_split_messages is not None
    whole = [Frame(OPCODE_TEXT, 'é'.encode(), b'abcd').pack(), Frame(OPCODE_BINARY, b'b').pack()]
    ping = Frame(OPCODE_PING, b'').pack()
    data = b''.join(whole) + ping + whole[0]
    messages, end = c_split_messages(data, 0, None, None, None)
    assert end == len(b''.join(whole))
    text, binary = messages
    assert type(text) is TextMessage and type(binary) is BinaryMessage
    assert (text.opcode, text.payload, binary.opcode, binary.payload) == (
        OPCODE_TEXT, 'é', OPCODE_BINARY, b'b')
    assert text.encode() is text._utf8  # the bytes as they came, not encoded again
    text.payload = 'changed'
    assert text.encode() == b'changed'
    [ascii_text], _ = c_split_messages(Frame(OPCODE_TEXT, b'ab', b'abcd').pack(), 0, True,
                                       None, None)
    assert (ascii_text.payload, ascii_text._utf8_of, ascii_text.encode()) == ('ab', None, b'ab')
    assert c_split_messages(data, len(data), None, None, None) == ([], len(data))
    assert c_split_messages(ping, 0, None, None, None) == ([], 0)


@needs_c
@pytest.mark.parametrize('size', [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize('opcode', [OPCODE_TEXT, OPCODE_BINARY, OPCODE_PING])
def test_c_unmasked_frame_packs_as_frame_does(opcode: int, size: int) -> None:
    assert c_unmasked_frame is not None
    payload = os.urandom(size)
    packed = Frame(opcode, payload).pack()
    data, rest = c_unmasked_frame(opcode, payload)
    assert data + rest == packed
    assert rest == (b'' if size < 65536 else payload)
    assert c_unmasked_frame(opcode, bytearray(payload))[0] + rest == packed
    with pytest.raises(TypeError):
        c_unmasked_frame(opcode, 'text')


@needs_c
def test_message_classes_takes_only_classes_with_the_slots() -> None:
    class NoSlots:
        opcode = payload = _utf8 = _utf8_of = None

    with pytest.raises(TypeError, match='not a slot'):
        message_classes(NoSlots, BinaryMessage)
    with pytest.raises(AttributeError):
        message_classes(BinaryMessage, BinaryMessage)  # no _utf8
    with pytest.raises(TypeError):
        message_classes(TextMessage, 'not a class')
    # What was registered stays.
    [message], _ = c_split_messages(Frame(OPCODE_TEXT, b'ok').pack(), 0, None, None, None)
    assert type(message) is TextMessage
