"""Property tests: the parsers never raise anything but wspy errors, and round-trip."""

from __future__ import annotations

import base64
import binascii

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import wspy
from wspy.protocol.frame import Frame, FrameParser
from wspy.protocol.auth import parse_challenges
from wspy.protocol.handshake import (Headers, HeadReader, Request, ServerHandshake, parse_request,
                                     parse_response)

OPCODES = st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA])

frames = st.builds(
    lambda opcode, payload, key, final, rsv: Frame(
        opcode, payload[:125] if opcode & 8 else payload, key,
        final or bool(opcode & 8), *(() if opcode & 8 else rsv)),  # control: no RSV bits
    OPCODES, st.binary(max_size=70000), st.sampled_from([b'', b'abcd', b'\x00\xff\x10\x80']),
    st.booleans(), st.tuples(st.booleans(), st.booleans(), st.booleans()))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=5), st.lists(st.integers(1, 20000), max_size=20))
def test_any_frames_split_anywhere_parse_back(sent: list[Frame], cuts: list[int]) -> None:
    data = b''.join(f.pack() for f in sent)
    parser = FrameParser(max_frame_size=None, rsv_allowed=0x70)
    received = []
    pos = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[pos:pos + cut])
        pos += cut
        received.extend(parser)
    parser.feed(data[pos:])
    received.extend(parser)
    assert received == sent


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=5), st.lists(st.integers(1, 20000), max_size=20))
def test_frames_parse_back_out_of_a_lent_buffer(sent: list[Frame], cuts: list[int]) -> None:
    """As an event loop does: each piece lands in one shared buffer, lent to the
    parser and overwritten after `keep()`; nothing may still point into it."""
    data = b''.join(f.pack() for f in sent)
    shared = bytearray(len(data) + 1)
    parser = FrameParser(max_frame_size=None, rsv_allowed=0x70)
    received = []
    pos = 0
    for cut in [*cuts, len(data)]:
        piece = data[pos:pos + cut]
        pos += len(piece)
        shared[:len(piece)] = piece
        with memoryview(shared) as view:
            parser.lend(view[:len(piece)])
            received.extend(parser)
            parser.keep()
        shared[:] = b'\xaa' * len(shared)
    assert received == sent
    assert parser.buffered == 0


@settings(max_examples=500)
@given(st.binary(max_size=300), st.sampled_from([None, True, False]))
def test_any_bytes_parse_or_raise_a_protocol_error(data: bytes, require_mask: bool | None) -> None:
    parser = FrameParser(require_mask=require_mask, max_frame_size=1000)
    parser.feed(data)
    try:
        for frame in parser:
            assert isinstance(frame, Frame)
    except wspy.ProtocolError as error:
        assert error.code in (1002, 1009)


http_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b'GET / HTTP/1.1', b'Host: a', b'Upgrade: websocket',
                              b'Connection: Upgrade', b'Sec-WebSocket-Version: 13',
                              b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', b'x', b':',
                              b'\xff\xfe', b'Origin: \x00', b' folded', b'HTTP/1.1 101 OK',
                              b'Sec-WebSocket-Protocol: ,,']), max_size=10)
    .map(lambda lines: b'\r\n'.join(lines) + b'\r\n\r\n'))


@settings(max_examples=500)
@given(http_bytes)
def test_any_http_head_parses_or_raises_a_handshake_error(data: bytes) -> None:
    reader = HeadReader(max_line_length=100, max_headers=5, max_head_size=300)
    try:
        head = reader.feed(data)
        if head is None:
            return
        try:
            ServerHandshake(protocols=['a']).accept(parse_request(head))
        except wspy.HandshakeError as error:
            assert 400 <= error.status < 600
        try:
            parse_response(head)
        except wspy.InvalidResponse:
            pass
    except wspy.SecurityError as error:
        assert error.status == 431
    except wspy.HandshakeError as error:  # from the reader: not HTTP at all
        assert error.status == 400
        assert not data[:1].isalpha()


header_lines = st.lists(st.tuples(
    st.sampled_from(['Host', 'X-a', 'upgrade', 'A:b', '', 'Sp ace', 'é']),
    st.text(alphabet=' \tabc,\x7f\xe9\x00\r\n:', max_size=8)), max_size=6)


@settings(max_examples=500)
@given(header_lines, st.sampled_from(['\r\n\r\n', '\r\n', '', '\r\n\r\n\r\n']))
def test_header_lines_parse_as_they_do_one_by_one(lines: list[tuple[str, str]],
                                                  end: str) -> None:
    # A usual head is parsed by one regular expression; any head must come out as the
    # line-by-line parser reads it (or fail as it does).
    from wspy.protocol.handshake import _parse_header_lines
    text = 'GET / HTTP/1.1' + ''.join(f'\r\n{name}:{value}' for name, value in lines) + end
    head = text.encode('utf-8')
    split = head.split(b'\r\n')
    while split and split[-1] == b'':
        split.pop()
    try:
        expected = _parse_header_lines(split[1:], wspy.InvalidRequest).items()
    except wspy.InvalidRequest:
        expected = None
    try:
        parsed = parse_request(head).headers.items()
    except wspy.InvalidRequest:
        parsed = None
    assert parsed == expected


def _is_16_bytes_of_base64(key: str) -> bool:
    """RFC 6455 4.2.1: "a base64-encoded value that, when decoded, is 16 bytes in length"."""
    try:
        return len(base64.b64decode(key.encode('ascii'), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


@settings(max_examples=500)
@given(st.one_of(
    st.binary(min_size=14, max_size=18).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(alphabet='AB+/=9, \t\xe9', min_size=20, max_size=28)))
@example('dGhlIHNhbXBsZSBub25jZQ==')
def test_the_key_check_accepts_exactly_16_bytes_of_base64(key: str) -> None:
    headers = Headers([('Host', 'x'), ('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                       ('Sec-WebSocket-Version', '13'), ('Sec-WebSocket-Key', key)])
    try:
        ServerHandshake().check(Request('GET', '/', headers))
        accepted = True
    except wspy.InvalidRequest:
        accepted = False
    assert accepted == _is_16_bytes_of_base64(key)


auth_values = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(['Digest', 'Basic', 'username="alice"', 'realm="wspy"', 'uri="/"',
                              'nonce="bm9uY2U="', 'nc=00000001', 'cnonce="c"', 'qop=auth',
                              'response="0"', 'algorithm=SHA-256', 'username*=UTF-8\'\'%FF',
                              'QWxhZGRpbjpvcGVuIHNlc2FtZQ==', ',', ' ', '"', '\\']),
             max_size=12).map(' '.join))


@settings(max_examples=500)
@given(auth_values)
@example("Digest username*=UTF-8''%FF, realm=\"wspy\"")
def test_any_authorization_header_gives_a_user_or_401(value: str) -> None:
    parse_challenges([value])
    request = Request('GET', '/', Headers([('Authorization', value)]))
    for auth in (wspy.BasicAuth({'alice': 'pw'}), wspy.DigestAuth({'alice': 'pw'})):
        try:
            assert auth.authenticate(request) == 'alice'
        except wspy.Unauthorized as error:
            assert error.status == 401
            assert error.headers and error.headers[0][0] == 'WWW-Authenticate'
