"""The protocol core in memory: RFC 6455 (and RFC 7692) case by case, bytes only.

Each test drives `wspy.protocol.connection.Protocol` through `MemoryConnection`
(test/memory.py): frames from the peer go in as bytes, frames written come
out as bytes parsed back, time is a fake clock. No socket, no thread, no
sleep. Most cases run on both sides: a server (incoming frames must be
masked) and a client (incoming frames must not be).
"""

from __future__ import annotations

import ast
import itertools
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from memory import FakeClock, MemoryConnection, connected_pair, negotiated_hooks, transfer
from wspy.errors import (ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, PingError,
                         ProtocolError, SocketClosed)
from wspy.protocol.connection import State
from wspy.protocol.deflate_frame import DeflateFrame
from wspy.protocol.deflate_message import DeflateMessage
from wspy.protocol.frame import ControlFrame, Frame, FrameParser
from wspy.protocol.message import BinaryMessage, TextMessage

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GRINNING = '\N{GRINNING FACE}'.encode()  # F0 9F 98 80: a 4-byte character


@pytest.fixture(params=['server', 'client'])
def conn(request: pytest.FixtureRequest) -> MemoryConnection:
    """A connection on either side, with no extension and the default limits."""
    return MemoryConnection(server_side=request.param == 'server')


def close_frame(code: int, reason: bytes = b'') -> Frame:
    """A close frame with any code, valid or not (`ControlFrame.close` refuses bad ones)."""
    return Frame(CLOSE, struct.pack('!H', code) + reason)


def header(conn: MemoryConnection, first: int, length: int) -> bytes:
    """A frame header from the peer (masked with key 0 when the peer is a client)."""
    mask_bit = 0x80 if conn.server_side else 0
    if length < 126:
        head = bytes([first, mask_bit | length])
    elif length < 0x10000:
        head = bytes([first, mask_bit | 126]) + struct.pack('!H', length)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack('!Q', length)
    return head + (b'\0\0\0\0' if conn.server_side else b'')


def assert_open(conn: MemoryConnection) -> None:
    assert conn.state is State.OPEN
    assert not conn.transport_closed and not conn.aborted
    assert conn.events == [] or all(e[0] in ('ping', 'pong') for e in conn.events)


def assert_failed(conn: MemoryConnection, code: int) -> None:
    """The connection failed with `code`: its close frame went out, the transport ended."""
    assert conn.state is State.CLOSED
    assert conn.codes() == [code]
    assert conn.transport_closed
    errors = conn.errors()
    assert len(errors) == 1 and isinstance(errors[0], ProtocolError), conn.events
    assert errors[0].code == code
    assert conn.closes() == [('close', code, conn.closes()[0][2])]
    assert conn.events[-1][0] == 'close'  # onerror first, then onclose
    close = next(f for f in conn.sent() if f.opcode == CLOSE)
    assert bool(close.masking_key) == (not conn.server_side)


def compress(payload: bytes, bits: int = 15) -> bytes:
    """Raw deflate with a sync flush, its empty-block tail removed (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b'\x00\x00\xff\xff')
    return data[:-4]


# -- data frames (RFC 6455 5.2, 5.6) -------------------------------------------------------

def test_text_message(conn: MemoryConnection) -> None:
    assert conn.feed(Frame(TEXT, 'héllo')) == [TextMessage('héllo')]
    assert conn.sent() == []
    assert_open(conn)


def test_binary_message(conn: MemoryConnection) -> None:
    [message] = conn.feed(Frame(BINARY, b'\x00\xff\x80'))
    assert type(message) is BinaryMessage and message.payload == b'\x00\xff\x80'
    assert_open(conn)


@pytest.mark.parametrize('opcode', [TEXT, BINARY])
def test_empty_messages(conn: MemoryConnection, opcode: int) -> None:
    [message] = conn.feed(Frame(opcode))
    assert message.opcode == opcode and not message.payload
    [message] = conn.feed(Frame(opcode, final=False), Frame(CONT, final=False), Frame(CONT))
    assert message.opcode == opcode and not message.payload
    assert_open(conn)


@pytest.mark.parametrize('length', [125, 126, 127, 0xFFFF, 0x10000, 0x10001])
def test_payload_lengths_at_the_7_16_and_64_bit_boundaries(conn: MemoryConnection,
                                                             length: int) -> None:
    payload = os.urandom(length)
    raw = header(conn, 0x82, length)
    assert len(raw) - (4 if conn.server_side else 0) == (2 if length < 126 else
                                                          4 if length < 0x10000 else 10)
    assert conn.feed_bytes(raw + payload) == [BinaryMessage(payload)]
    assert_open(conn)


@pytest.mark.parametrize('length', [125, 126, 0xFFFF, 0x10000])
def test_sent_lengths_use_the_shortest_encoding(conn: MemoryConnection, length: int) -> None:
    conn.send(b'x' * length)
    second = conn.written[1] & 0x7F
    assert second == (length if length < 126 else 126 if length < 0x10000 else 127)
    size = struct.unpack_from('!H' if second == 126 else '!Q', conn.written, 2)[0] \
        if second >= 126 else second
    assert size == length
    [frame] = conn.sent()
    assert frame.payload == b'x' * length and frame.final and frame.opcode == BINARY


def test_messages_fed_one_byte_at_a_time(conn: MemoryConnection) -> None:
    frames = [Frame(TEXT, 'ab', final=False), Frame(PING, b'p'), Frame(CONT, 'c'),
              Frame(BINARY, os.urandom(300))]
    data = b''
    for frame in frames:
        key = os.urandom(4) if conn.server_side else b''
        data += Frame(frame.opcode, frame.payload, key, frame.final).pack()
    messages = []
    for i in range(len(data)):
        got = conn.feed_bytes(data[i:i + 1])
        if i < len(data) - 1:
            assert all(m.opcode == TEXT for m in got)
        messages += got
    assert messages == [TextMessage('abc'), BinaryMessage(frames[3].payload)]
    assert [f.opcode for f in conn.sent()] == [PONG]


def test_several_frames_in_one_read(conn: MemoryConnection) -> None:
    messages = conn.feed(*[Frame(TEXT, str(i)) for i in range(50)])
    assert messages == [TextMessage(str(i)) for i in range(50)]


def test_payload_length_with_the_top_bit_set(conn: MemoryConnection) -> None:
    conn.feed_bytes(header(conn, 0x82, 1 << 63)[:10])
    assert_failed(conn, 1002)


# -- masking (RFC 6455 5.1, 5.3) -------------------------------------------------------------

def test_server_fails_an_unmasked_client_frame_with_1002() -> None:
    server = MemoryConnection(server_side=True)
    assert server.feed(Frame(TEXT, 'hi'), mask=False) == []
    assert_failed(server, 1002)


def test_client_fails_a_masked_server_frame_with_1002() -> None:
    client = MemoryConnection(server_side=False)
    assert client.feed(Frame(TEXT, 'hi'), mask=True) == []
    assert_failed(client, 1002)


def test_unmasked_control_frame_from_a_client() -> None:
    server = MemoryConnection(server_side=True)
    server.feed(Frame(PING, b'x'), mask=False)
    assert_failed(server, 1002)


def test_server_sends_unmasked_frames() -> None:
    server = MemoryConnection(server_side=True)
    server.send('text')
    server.send(b'binary' * 20000)
    server.send_ping(b'p')
    server.close()
    frames = server.sent()
    assert [f.opcode for f in frames] == [TEXT, BINARY, PING, CLOSE]
    assert not any(f.masking_key for f in frames)
    assert server.written[1] & 0x80 == 0


def test_client_sends_masked_frames_with_random_keys() -> None:
    client = MemoryConnection(server_side=False)
    payload = b'\x00' * 64
    client.send(payload)
    client.send(payload)
    client.send('a' * 200, fragment_size=100)
    client.send_ping(b'p')
    client.send_pong(b'q')
    client.close()
    frames = client.sent()
    assert [f.opcode for f in frames] == [BINARY, BINARY, TEXT, CONT, PING, PONG, CLOSE]
    assert all(len(f.masking_key) == 4 for f in frames)
    assert frames[0].masking_key != frames[1].masking_key
    assert len({f.masking_key for f in frames}) == len(frames)
    # On the wire, the zero payload is the key repeated: masked, not sent in clear.
    assert client.written[6:6 + 64] == frames[0].masking_key * 16


# -- fragmentation (RFC 6455 5.4) -------------------------------------------------------------

@pytest.mark.parametrize('opcode, parts', [
    (TEXT, ['Hel', 'lo, ', 'wörld']),
    (BINARY, [b'\x00', b'', b'\x01\x02']),
])
def test_fragmented_message(conn: MemoryConnection, opcode: int, parts: list) -> None:
    frames = [Frame(opcode if i == 0 else CONT, part, final=i == len(parts) - 1)
              for i, part in enumerate(parts)]
    assert conn.feed(*frames[:-1]) == []
    [message] = conn.feed(frames[-1])
    assert message.opcode == opcode
    assert message.payload == parts[0][:0].join(parts)
    assert_open(conn)


def test_continuation_without_a_message_to_continue(conn: MemoryConnection) -> None:
    conn.feed(Frame(CONT, 'x'))
    assert_failed(conn, 1002)


def test_continuation_after_a_complete_message(conn: MemoryConnection) -> None:
    assert conn.feed(Frame(TEXT, 'done'), Frame(CONT, 'more')) == [TextMessage('done')]
    assert_failed(conn, 1002)


@pytest.mark.parametrize('opcode', [TEXT, BINARY])
def test_new_message_inside_a_fragmented_one(conn: MemoryConnection, opcode: int) -> None:
    conn.feed(Frame(TEXT, 'a', final=False), Frame(opcode, 'b'))
    assert_failed(conn, 1002)


# -- control frames inside fragments (RFC 6455 5.4, 5.5) -----------------------------------------

def test_ping_between_fragments_is_answered_with_its_payload(conn: MemoryConnection) -> None:
    messages = conn.feed(Frame(TEXT, 'frag', final=False), Frame(PING, b'ping me'),
                         Frame(CONT, 'ment', final=False), Frame(PING, b''), Frame(CONT, 's'))
    assert messages == [TextMessage('fragments')]
    pongs = conn.sent()
    assert [(f.opcode, f.payload) for f in pongs] == [(PONG, b'ping me'), (PONG, b'')]
    assert all(bool(f.masking_key) == (not conn.server_side) for f in pongs)
    assert conn.events == [('ping', b'ping me'), ('ping', b'')]


def test_pong_is_sent_before_onping_runs(conn: MemoryConnection) -> None:
    seen = []
    conn.onping = lambda payload: seen.append(conn.sent())  # type: ignore[method-assign]
    conn.feed(Frame(PING, b'x'))
    assert [(f.opcode, f.payload) for f in seen[0]] == [(PONG, b'x')]


def test_pong_between_fragments(conn: MemoryConnection) -> None:
    messages = conn.feed(Frame(BINARY, b'a', final=False), Frame(PONG, b'unsolicited'),
                         Frame(CONT, b'b'))
    assert messages == [BinaryMessage(b'ab')]
    assert conn.sent() == []
    assert conn.events == [('pong', b'unsolicited')]


def test_close_between_fragments(conn: MemoryConnection) -> None:
    messages = conn.feed(Frame(TEXT, 'never', final=False), ControlFrame.close(1001, 'away'),
                         Frame(CONT, ' finished'))
    assert messages == []
    assert conn.codes() == [1001]
    assert conn.closes() == [('close', 1001, 'away')]
    assert conn.state is State.CLOSED and conn.errors() == []


def test_ping_with_the_largest_payload(conn: MemoryConnection) -> None:
    conn.feed(Frame(PING, b'p' * 125))
    assert [(f.opcode, f.payload) for f in conn.sent()] == [(PONG, b'p' * 125)]


# -- control frame rules and reserved bits (RFC 6455 5.2, 5.5) ------------------------------------

@pytest.mark.parametrize('opcode', [PING, PONG, CLOSE])
def test_fragmented_control_frame(conn: MemoryConnection, opcode: int) -> None:
    conn.feed(Frame(opcode, b'', final=False))
    assert_failed(conn, 1002)


@pytest.mark.parametrize('opcode', [PING, PONG, CLOSE])
def test_control_payload_over_125_bytes(conn: MemoryConnection, opcode: int) -> None:
    payload = b'\x03\xe8' + b'x' * 124 if opcode == CLOSE else b'x' * 126
    conn.feed(Frame(opcode, payload))
    assert_failed(conn, 1002)


@pytest.mark.parametrize('opcode', [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(conn: MemoryConnection, opcode: int) -> None:
    conn.feed(Frame(opcode, b'x'))
    assert_failed(conn, 1002)


@pytest.mark.parametrize('opcode', [TEXT, BINARY, PING, CLOSE])
@pytest.mark.parametrize('bit', ['rsv1', 'rsv2', 'rsv3'])
def test_reserved_bits_without_an_extension(conn: MemoryConnection, opcode: int,
                                            bit: str) -> None:
    frame = Frame(opcode, b'\x03\xe8' if opcode == CLOSE else b'x', **{bit: True})
    assert conn.feed(frame) == []
    assert_failed(conn, 1002)


def test_frames_after_a_failure_are_ignored(conn: MemoryConnection) -> None:
    conn.feed(Frame(7))
    written = bytes(conn.written)
    assert conn.feed(Frame(TEXT, 'late'), Frame(PING)) == []
    assert conn.written == written
    assert len(conn.closes()) == 1


# -- UTF-8 (RFC 6455 5.6, 8.1) --------------------------------------------------------------------

SPLITS = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


@pytest.mark.parametrize('cuts', SPLITS)
def test_utf8_split_across_frames_at_every_byte(conn: MemoryConnection,
                                                cuts: tuple[int, ...]) -> None:
    text = b'a' + GRINNING + b'z'
    bounds = [0, *(1 + c for c in cuts), len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    frames = [Frame(TEXT if i == 0 else CONT, part, final=i == len(parts) - 1)
              for i, part in enumerate(parts)]
    for frame in frames[:-1]:
        assert conn.feed(frame) == []
        assert conn.check_partial()
    assert conn.feed(frames[-1]) == [TextMessage('a\N{GRINNING FACE}z')]
    assert_open(conn)


@pytest.mark.parametrize('invalid', [
    b'\xff', b'\xc0\xaf', b'\xe0\x80\xaf', b'\xed\xa0\x80', b'\xed\xbf\xbf',
    b'\xf4\x90\x80\x80', b'\xf8\x88\x80\x80\x80', b'\x80', b'a\xce',
])
def test_invalid_utf8_in_one_frame(conn: MemoryConnection, invalid: bytes) -> None:
    conn.feed(Frame(TEXT, b'ok ' + invalid))
    assert_failed(conn, 1007)


@pytest.mark.parametrize('first, second', [
    (b'\xed', b'\xa0\x80'),  # a surrogate, split after its lead byte
    (b'\xed\xa0', b'\x80'),  # and after its second byte (fails at once: see below)
    (b'\xf0\x9f', b'\x41'),  # a 4-byte sequence cut by an ASCII byte
    (b'\xf4', b'\x90\x80\x80'),  # over U+10FFFF
])
def test_invalid_utf8_split_across_frames(conn: MemoryConnection, first: bytes,
                                          second: bytes) -> None:
    conn.feed(Frame(TEXT, b'x' + first, final=False), Frame(CONT, second, final=False))
    assert_failed(conn, 1007)


@pytest.mark.parametrize('prefix', [b'\xed\xa0', b'\xe0\x80', b'\xf0\x80', b'\xf4\x90', b'\xc1'])
def test_invalid_utf8_fails_at_the_fragment_it_is_in(conn: MemoryConnection,
                                                     prefix: bytes) -> None:
    """RFC 6455 8.1: fail as soon as the bytes cannot become valid UTF-8, not at the end."""
    conn.feed(Frame(TEXT, b'abc' + prefix, final=False))
    assert_failed(conn, 1007)


def test_utf8_truncated_at_the_end_of_the_message(conn: MemoryConnection) -> None:
    assert conn.feed(Frame(TEXT, b'a' + GRINNING[:3], final=False)) == []
    assert conn.state is State.OPEN  # it may still be completed
    conn.feed(Frame(CONT, b''))
    assert_failed(conn, 1007)


def test_utf8_truncated_in_an_unfragmented_message(conn: MemoryConnection) -> None:
    conn.feed(Frame(TEXT, b'a' + GRINNING[:2]))
    assert_failed(conn, 1007)


def test_binary_messages_are_not_utf8(conn: MemoryConnection) -> None:
    frames = [Frame(BINARY, b'\xed\xa0\x80', final=False), Frame(CONT, b'\xff')]
    assert conn.feed(*frames) == [BinaryMessage(b'\xed\xa0\x80\xff')]


def test_check_partial_fails_a_frame_still_arriving(conn: MemoryConnection) -> None:
    """The invalid byte is seen before the rest of a long frame arrives."""
    payload = b'valid so far \xff' + b'x' * 1000
    raw = header(conn, 0x81, len(payload)) + payload
    assert conn.feed_bytes(raw[:-1000]) == []
    assert conn.state is State.OPEN and conn.sent() == []
    assert not conn.check_partial()
    assert_failed(conn, 1007)


def test_check_partial_accepts_valid_text_arriving(conn: MemoryConnection) -> None:
    payload = b'abc' + GRINNING * 100
    raw = header(conn, 0x81, len(payload)) + payload
    messages = []
    for start in range(0, len(raw), 7):  # pieces that cut characters anywhere
        messages += conn.feed_bytes(raw[start:start + 7])
        assert conn.check_partial()
    assert messages == [TextMessage('abc' + '\N{GRINNING FACE}' * 100)]
    assert_open(conn)


def test_check_partial_continues_the_message_state(conn: MemoryConnection) -> None:
    """A continuation arriving is checked from where the fragments before it stopped."""
    conn.feed(Frame(TEXT, b'a' + GRINNING[:2], final=False))
    rest = GRINNING[2:] + b'b\xed\xa0\x80' + b'c' * 100
    raw = header(conn, 0x80, len(rest)) + rest
    conn.feed_bytes(raw[:len(raw) - 100 - 3])  # the character completed: still valid
    assert conn.check_partial()
    conn.feed_bytes(raw[len(raw) - 100 - 3:len(raw) - 100])
    assert not conn.check_partial()
    assert_failed(conn, 1007)


def test_check_partial_ignores_binary_frames(conn: MemoryConnection) -> None:
    conn.feed_bytes(header(conn, 0x82, 100) + b'\xff' * 50)
    assert conn.check_partial()
    assert_open(conn)


# -- the close handshake (RFC 6455 5.5.1, 7) ------------------------------------------------------

def test_peer_closes_first(conn: MemoryConnection) -> None:
    assert conn.feed(ControlFrame.close(1000, 'bye')) == []
    [echo] = conn.sent()
    assert echo.opcode == CLOSE and echo.payload == b'\x03\xe8'  # its code, no reason
    assert bool(echo.masking_key) == (not conn.server_side)
    assert conn.write_states == [State.CLOSING]
    assert conn.state is State.CLOSED
    assert conn.closes() == [('close', 1000, 'bye')]
    assert conn.onclose_saw == (State.CLOSED, True)
    assert conn.errors() == [] and not conn.aborted
    assert (conn.close_code, conn.close_reason) == (1000, 'bye')
    assert conn.close_received == (1000, 'bye') and conn.close_sent == (1000, '')


def test_peer_closes_without_a_status_code(conn: MemoryConnection) -> None:
    conn.feed(Frame(CLOSE))
    [echo] = conn.sent()
    assert echo.opcode == CLOSE and echo.payload == b''
    assert conn.closes() == [('close', 1005, '')]
    assert conn.state is State.CLOSED and conn.errors() == []


def test_we_close_first(conn: MemoryConnection) -> None:
    assert conn.close(1000, 'done')
    [close] = conn.take_sent()
    assert close.unpack_close() == (1000, 'done')
    assert conn.state is State.CLOSING and not conn.transport_closed
    # Until the peer's close: its messages are dropped, its pings not answered.
    assert conn.feed(Frame(TEXT, 'late'), Frame(PING, b'p'), Frame(BINARY, b'x')) == []
    assert conn.take_sent() == []
    assert conn.state is State.CLOSING and conn.closes() == []
    conn.feed(ControlFrame.close(1000, 'ok'))
    assert conn.sent() == []  # no second close frame
    assert conn.state is State.CLOSED and conn.transport_closed
    assert conn.closes() == [('close', 1000, 'ok')]
    assert conn.errors() == []


def test_close_is_sent_once(conn: MemoryConnection) -> None:
    assert conn.close(1001)
    assert conn.close(1000)
    assert conn.codes() == [1001]


def test_close_without_a_code_then_the_peer_echoes_none() -> None:
    server, client = connected_pair()
    server.close(None)
    transfer(server, client)
    assert client.closes() == [('close', 1005, '')]
    assert client.sent()[0].payload == b''
    transfer(client, server)
    assert server.closes() == [('close', 1005, '')]


@pytest.mark.parametrize('first', ['server', 'client'])
def test_close_handshake_between_two_ends(first: str) -> None:
    server, client = connected_pair()
    closer, other = (server, client) if first == 'server' else (client, server)
    closer.close(1000, 'bye')
    transfer(closer, other)
    assert other.closes() == [('close', 1000, 'bye')] and other.transport_closed
    assert closer.state is State.CLOSING
    transfer(other, closer)
    assert closer.closes() == [('close', 1000, '')] and closer.transport_closed
    assert server.errors() == client.errors() == []


def test_frames_after_the_peers_close_are_ignored(conn: MemoryConnection) -> None:
    assert conn.feed(ControlFrame.close(1000), Frame(TEXT, 'after'), Frame(PING, b'p')) == []
    assert conn.codes() == [1000] and len(conn.sent()) == 1
    assert conn.closes() == [('close', 1000, '')]


def test_close_frame_with_a_1_byte_payload(conn: MemoryConnection) -> None:
    conn.feed(Frame(CLOSE, b'\x03'))
    assert_failed(conn, 1002)


@pytest.mark.parametrize('code', [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_invalid_close_codes(conn: MemoryConnection, code: int) -> None:
    conn.feed(close_frame(code))
    assert_failed(conn, 1002)


@pytest.mark.parametrize('code', [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes_are_echoed(conn: MemoryConnection, code: int) -> None:
    conn.feed(close_frame(code, b'why'))
    assert conn.codes() == [code]
    assert conn.closes() == [('close', code, 'why')]
    assert conn.errors() == []


def test_close_reason_in_utf8(conn: MemoryConnection) -> None:
    conn.feed(close_frame(1000, 'fermé \N{GRINNING FACE}'.encode()))
    assert conn.closes() == [('close', 1000, 'fermé \N{GRINNING FACE}')]


@pytest.mark.parametrize('reason', [b'\xff', b'\xed\xa0\x80', GRINNING[:3]])
def test_close_reason_not_utf8(conn: MemoryConnection, reason: bytes) -> None:
    conn.feed(close_frame(1000, reason))
    assert_failed(conn, 1007)


def test_protocol_error_while_closing(conn: MemoryConnection) -> None:
    """After our close, a broken frame ends the connection at once (no second close)."""
    conn.close(1000)
    conn.feed(Frame(0xB))
    assert conn.codes() == [1000]
    assert conn.state is State.CLOSED and conn.transport_closed
    assert [type(e) for e in conn.errors()] == [ProtocolError]
    assert conn.closes() == [('close', 1006, '')]


# -- sending after the close ----------------------------------------------------------------------

@pytest.mark.parametrize('peer_close, exception, code', [
    (ControlFrame.close(1000), ConnectionClosedOK, 1000),
    (ControlFrame.close(1001), ConnectionClosedOK, 1001),
    (Frame(CLOSE), ConnectionClosedOK, 1005),
    (ControlFrame.close(1011, 'oops'), ConnectionClosedError, 1011),
    (ControlFrame.close(4000), ConnectionClosedError, 4000),
    (Frame(0xF), ConnectionClosedError, 1002),  # we failed the connection
    (Frame(TEXT, b'\xff'), ConnectionClosedError, 1007),
])
def test_send_after_the_close_raises(conn: MemoryConnection, peer_close: Frame,
                                     exception: type[ConnectionClosed], code: int) -> None:
    conn.feed(peer_close)
    written = bytes(conn.written)
    for send in (lambda: conn.send('x'), lambda: conn.send(b'x' * 70000),
                 lambda: conn.send('x', fragment_size=1), lambda: conn.send_ping(b'p'),
                 lambda: conn.send_pong(), lambda: conn.send_frames(Frame(TEXT, 'x'))):
        with pytest.raises(exception) as info:
            send()
        assert info.value.code == code
    assert conn.written == written


def test_send_after_our_close_raises(conn: MemoryConnection) -> None:
    conn.close(1000)
    with pytest.raises(ConnectionClosed):
        conn.send('x')
    assert conn.codes() == [1000] and len(conn.sent()) == 1


def test_send_after_a_lost_connection_raises(conn: MemoryConnection) -> None:
    conn.lose(OSError('reset'))
    with pytest.raises(ConnectionClosedError) as info:
        conn.send('x')
    assert info.value.code == 1006
    assert conn.sent() == []


# -- limits (RFC 6455 10.4) -----------------------------------------------------------------------

@pytest.mark.parametrize('frame_limit', ['message', None])
def test_message_at_the_limit_is_accepted_one_byte_more_is_not(frame_limit: str | None) -> None:
    conn = MemoryConnection(max_message_size=100, max_frame_size=frame_limit)
    assert conn.feed(Frame(BINARY, b'x' * 100)) == [BinaryMessage(b'x' * 100)]
    assert conn.feed(Frame(TEXT, 'é' * 50)) == [TextMessage('é' * 50)]
    conn.feed(Frame(BINARY, b'x' * 101))
    assert_failed(conn, 1009)


def test_fragments_over_the_limit(conn: MemoryConnection) -> None:
    conn.max_message_size = 100
    assert conn.feed(Frame(TEXT, 'a' * 60, final=False), Frame(CONT, 'b' * 40)) \
        == [TextMessage('a' * 60 + 'b' * 40)]
    assert conn.feed(Frame(BINARY, b'a' * 60, final=False), Frame(CONT, b'b' * 40, final=False)) \
        == []
    conn.feed(Frame(CONT, b'c'))
    assert_failed(conn, 1009)


def test_a_huge_frame_is_refused_from_its_header(conn: MemoryConnection) -> None:
    conn.feed_bytes(header(conn, 0x82, 1 << 40))  # the payload never needs to arrive
    assert_failed(conn, 1009)


def test_no_limit() -> None:
    conn = MemoryConnection(max_message_size=None, max_frame_size=None)
    payload = b'x' * (2 << 20)
    assert conn.feed(Frame(BINARY, payload, final=False), Frame(CONT, payload)) \
        == [BinaryMessage(payload * 2)]


def test_pings_do_not_count_towards_the_message_limit(conn: MemoryConnection) -> None:
    conn.max_message_size = 10
    messages = conn.feed(Frame(TEXT, 'a' * 5, final=False), Frame(PING, b'p' * 100),
                         Frame(CONT, 'b' * 5))
    assert messages == [TextMessage('a' * 5 + 'b' * 5)]


# -- sending (RFC 6455 5.2-5.4) -------------------------------------------------------------------

def test_text_and_binary_types_are_kept(conn: MemoryConnection) -> None:
    conn.send('text')
    conn.send(b'bytes')
    conn.send(bytearray(b'array'))
    conn.send(memoryview(b'view'))
    conn.send(TextMessage('message'))
    conn.send(BinaryMessage(b'binary message'))
    assert [(f.opcode, f.payload, f.final) for f in conn.sent()] == [
        (TEXT, b'text', True), (BINARY, b'bytes', True), (BINARY, b'array', True),
        (BINARY, b'view', True), (TEXT, b'message', True), (BINARY, b'binary message', True)]


def test_text_that_cannot_be_encoded_is_refused_before_anything_goes_out() -> None:
    for conn in (MemoryConnection(), MemoryConnection(server_side=False), deflate_conn()):
        with pytest.raises(UnicodeEncodeError):
            conn.send('lone \ud800 surrogate')
        assert conn.sent() == []
        conn.send('fine')
        assert_open(conn)


@pytest.mark.parametrize('code, reason', [(1005, ''), (1006, ''), (999, ''), (5000, ''),
                                          (1000, 'x' * 124), (None, 'a reason without a code')])
def test_closing_with_a_code_that_cannot_be_sent(conn: MemoryConnection, code: int | None,
                                                 reason: str) -> None:
    with pytest.raises(ValueError):
        conn.close(code, reason)
    assert conn.sent() == []
    assert_open(conn)
    assert conn.close(1000, 'x' * 123)
    assert conn.codes() == [1000]


@pytest.mark.parametrize('bad', [42, None, 3.5, ['a'], {'a': 1}, object()])
def test_sending_a_bad_type_is_a_type_error(conn: MemoryConnection, bad: object) -> None:
    with pytest.raises(TypeError):
        conn.send(bad)  # type: ignore[arg-type]
    assert conn.sent() == []
    conn.send('still open')
    assert_open(conn)


def test_fragment_size_splits_a_message() -> None:
    server, client = connected_pair()
    server.send('abcdefg', fragment_size=3)
    frames = server.sent()
    assert [(f.opcode, f.payload, f.final) for f in frames] == [
        (TEXT, b'abc', False), (CONT, b'def', False), (CONT, b'g', True)]
    assert transfer(server, client) == [TextMessage('abcdefg')]
    client.send(b'0123456789', fragment_size=5)
    frames = client.sent()
    assert [(f.opcode, f.final) for f in frames] == [(BINARY, False), (CONT, True)]
    assert all(f.masking_key for f in frames)
    assert transfer(client, server) == [BinaryMessage(b'0123456789')]


def test_fragment_size_splits_utf8_anywhere_and_the_peer_reassembles_it() -> None:
    server, client = connected_pair()
    text = 'é\N{GRINNING FACE}x' * 10
    server.send(text, fragment_size=1)
    assert len(server.sent()) == len(text.encode())
    assert transfer(server, client) == [TextMessage(text)]


def test_send_frames_sends_hand_made_frames_as_they_are(conn: MemoryConnection) -> None:
    frames = [Frame(TEXT, 'a', final=False), Frame(CONT, 'b')]
    conn.send_frames(*frames)
    assert conn.sent() == frames


def test_a_failed_write_drops_the_connection(conn: MemoryConnection) -> None:
    conn.write_error = OSError('broken pipe')
    with pytest.raises(SocketClosed):
        conn.send('x')
    assert conn.aborted and conn.state is State.CLOSED
    assert conn.closes() == [('close', 1006, '')]


@pytest.mark.parametrize('payload', [b'x' * 126, 'é' * 63])
def test_ping_and_pong_payloads_over_125_bytes(conn: MemoryConnection,
                                               payload: bytes | str) -> None:
    with pytest.raises(PingError):
        conn.send_ping(payload)
    with pytest.raises(PingError):
        conn.send_pong(payload)
    assert conn.sent() == []
    conn.send_ping(b'x' * 125)
    conn.send_pong('é' * 62)
    assert [f.opcode for f in conn.sent()] == [PING, PONG]


# -- keepalive, with time as deadlines ------------------------------------------------------------

def keepalive_conn(server_side: bool = True, **options: float | None) -> MemoryConnection:
    options = {'ping_interval': 20.0, 'ping_timeout': 10.0, **options}
    return MemoryConnection(server_side=server_side, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize('server_side', [True, False])
def test_keepalive_pings_and_measures_latency(server_side: bool) -> None:
    conn = keepalive_conn(server_side)
    clock = conn.clock
    assert isinstance(clock, FakeClock)
    assert conn.keepalive_delays == [20.0]
    assert conn.keepalive() == pytest.approx(20.0)  # too early: come back at the interval
    assert conn.sent() == []
    clock.advance(5)
    assert conn.keepalive() == pytest.approx(15.0)
    clock.advance(15)
    assert conn.keepalive() == pytest.approx(10.0)  # pinged: come back at its timeout
    [ping] = conn.take_sent()
    assert ping.opcode == PING and len(ping.payload) == 4
    assert bool(ping.masking_key) == (not server_side)
    clock.advance(0.25)
    conn.feed(Frame(PONG, ping.payload))
    assert conn.latency == pytest.approx(0.25)
    assert conn.events == [('pong', ping.payload)]
    clock.advance(9.75)
    assert conn.keepalive() == pytest.approx(10.0)  # answered: the next ping at 20 s
    assert conn.sent() == []
    clock.advance(10)
    conn.keepalive()
    [second] = conn.sent()
    assert second.opcode == PING and second.payload != ping.payload
    assert_open(conn)


def test_keepalive_without_a_pong_fails_with_1011() -> None:
    conn = keepalive_conn()
    conn.clock.advance(20)  # type: ignore[attr-defined]
    conn.keepalive()
    assert [f.opcode for f in conn.take_sent()] == [PING]
    conn.feed(Frame(PONG, b'not it'))  # a pong to another ping does not count
    conn.clock.advance(9.9)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(0.1)
    assert conn.state is State.OPEN
    conn.clock.advance(0.1)  # type: ignore[attr-defined]
    assert conn.keepalive() is None
    assert conn.codes() == [1011]
    assert conn.state is State.CLOSED and conn.transport_closed and conn.aborted
    assert conn.closes() == [('close', 1011, 'keepalive ping timeout')]
    assert [e.code for e in conn.errors()] == [1011]  # type: ignore[attr-defined]


def test_keepalive_when_the_ping_cannot_be_written() -> None:
    """A transport with no room: the ping waits; blocked for ping_timeout is a failure."""
    conn = keepalive_conn(ping_timeout=3.0)
    conn.writable = False
    conn.clock.advance(20)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(1.0)
    assert conn.sent() == []
    conn.clock.advance(2)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(1.0)
    conn.clock.advance(1)  # type: ignore[attr-defined]
    assert conn.keepalive() is None
    assert conn.sent() == []  # no room for a close frame either
    assert conn.aborted and conn.state is State.CLOSED
    assert conn.closes() == [('close', 1006, '')]


def test_keepalive_room_again_before_the_timeout() -> None:
    conn = keepalive_conn(ping_timeout=3.0)
    conn.writable = False
    conn.clock.advance(20)  # type: ignore[attr-defined]
    conn.keepalive()
    conn.writable = True
    conn.clock.advance(2)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(3.0)
    assert [f.opcode for f in conn.sent()] == [PING]


def test_keepalive_without_a_timeout_never_fails() -> None:
    conn = keepalive_conn(ping_timeout=None)
    for _ in range(3):
        conn.clock.advance(20)  # type: ignore[attr-defined]
        assert conn.keepalive() == pytest.approx(20.0)
    assert [f.opcode for f in conn.sent()] == [PING] * 3
    assert_open(conn)


def test_no_keepalive_without_a_ping_interval() -> None:
    conn = keepalive_conn(ping_interval=None)
    assert conn.keepalive_delays == []
    conn.clock.advance(3600)  # type: ignore[attr-defined]
    assert conn.keepalive() is None  # nothing to come back for
    assert conn.sent() == []
    assert_open(conn)


def test_keepalive_stops_once_closing(conn: MemoryConnection) -> None:
    conn.ping_interval, conn.ping_timeout = 20.0, 10.0
    conn.close()
    conn.clock.advance(60)  # type: ignore[attr-defined]
    assert conn.keepalive() is None
    assert conn.codes() == [1000] and len(conn.sent()) == 1


def test_keepalive_waits_while_the_application_does_not_read() -> None:
    conn = keepalive_conn()
    conn.clock.advance(20)  # type: ignore[attr-defined]
    conn.keepalive()
    conn._inbox_full = lambda: True  # type: ignore[method-assign]
    conn.clock.advance(30)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(10.0)  # its pong may be queued unread
    assert conn.state is State.OPEN


def test_keepalive_reading_for_an_idle_connection_looks_for_the_pong_soon() -> None:
    conn = keepalive_conn()
    conn._receive_for_keepalive = lambda: True  # type: ignore[method-assign]
    conn.clock.advance(20)  # type: ignore[attr-defined]
    first = conn.keepalive()
    assert first is not None and first < 0.01
    conn.clock.advance(4)  # type: ignore[attr-defined]
    assert conn.keepalive() == pytest.approx(2.0)  # half the time elapsed


# -- a lost connection ----------------------------------------------------------------------------

def test_lost_connection_reports_onerror_then_1006(conn: MemoryConnection) -> None:
    error = ConnectionResetError('reset by peer')
    conn.feed(Frame(TEXT, 'half', final=False))
    conn.lose(error)
    assert conn.events == [('error', error), ('close', 1006, '')]
    assert conn.state is State.CLOSED and conn.transport_closed
    assert conn.sent() == []
    assert conn.close_code == 1006


def test_lost_connection_while_closing_is_no_error(conn: MemoryConnection) -> None:
    conn.close(1000)
    conn.lose(EOFError('eof'))
    assert conn.events == [('close', 1006, '')]


def test_lost_connection_after_the_close_is_ignored(conn: MemoryConnection) -> None:
    conn.feed(ControlFrame.close(1000))
    conn.lose(OSError('late'))
    assert conn.events == [('close', 1000, '')]


# -- permessage-deflate (RFC 7692) ----------------------------------------------------------------

def deflate_conn(server_side: bool = True, **options: int | None) -> MemoryConnection:
    server_hooks, client_hooks = negotiated_hooks([DeflateMessage()])
    return MemoryConnection(server_side=server_side,
                            hooks=server_hooks if server_side else client_hooks,
                            **options)  # type: ignore[arg-type]


def test_negotiation_gives_a_hook_on_each_side() -> None:
    server_hooks, client_hooks = negotiated_hooks([DeflateMessage()])
    assert len(server_hooks) == len(client_hooks) == 1
    # The default offer asks for a 12-bit server window: the client inflates with it.
    assert server_hooks[0].compress_bits == 12  # type: ignore[attr-defined]


@pytest.mark.parametrize('server_side', [True, False])
def test_compressed_message_in(server_side: bool) -> None:
    conn = deflate_conn(server_side)
    text = 'compress me ' * 50
    [message] = conn.feed(Frame(TEXT, compress(text.encode()), rsv1=True))
    assert message == TextMessage(text)
    [message] = conn.feed(Frame(BINARY, b'plain'))  # uncompressed with RSV1 clear
    assert message == BinaryMessage(b'plain')
    assert_open(conn)


def test_empty_compressed_message() -> None:
    """RFC 7692 7.2.3.6: an empty message compressed is one 0x00 byte."""
    conn = deflate_conn()
    assert compress(b'') == b'\x00'
    assert conn.feed(Frame(TEXT, b'\x00', rsv1=True)) == [TextMessage('')]
    assert conn.feed(Frame(TEXT, compress(b'next'), rsv1=True)) == [TextMessage('next')]
    assert_open(conn)


def test_fragmented_compressed_message_with_a_ping_inside() -> None:
    conn = deflate_conn()
    payload = os.urandom(64) * 100
    data = compress(payload)
    third = len(data) // 3
    messages = conn.feed(Frame(BINARY, data[:third], final=False, rsv1=True),
                         Frame(PING, b'p'),
                         Frame(CONT, data[third:2 * third], final=False),
                         Frame(CONT, data[2 * third:]))
    assert messages == [BinaryMessage(payload)]
    assert [f.opcode for f in conn.sent()] == [PONG]


def test_compressed_message_fed_one_byte_at_a_time() -> None:
    conn = deflate_conn(server_side=False)
    raw = Frame(TEXT, compress(b'abc' * 100), rsv1=True).pack()
    messages = []
    for i in range(len(raw)):
        messages += conn.feed_bytes(raw[i:i + 1])
        assert conn.check_partial()
    assert messages == [TextMessage('abc' * 100)]


@pytest.mark.parametrize('frame', [
    Frame(CONT, b'x', rsv1=True),  # RSV1 on a continuation
    Frame(PING, b'x', rsv1=True),  # RSV1 on a control frame
    Frame(TEXT, b'x', rsv2=True),  # a bit no extension negotiated
])
def test_deflate_reserved_bit_misuse(frame: Frame) -> None:
    conn = deflate_conn()
    conn.feed(Frame(TEXT, compress(b'start'), final=False, rsv1=True), frame)
    assert_failed(conn, 1002)


def test_compressed_invalid_utf8() -> None:
    conn = deflate_conn()
    conn.feed(Frame(TEXT, compress(b'ok \xed\xa0\x80'), rsv1=True))
    assert_failed(conn, 1007)


def test_corrupt_compressed_data() -> None:
    conn = deflate_conn()
    conn.feed(Frame(BINARY, b'\xff\xff\xff\xff', rsv1=True))
    assert_failed(conn, 1007)


def test_compression_bomb_is_refused_with_1009() -> None:
    conn = deflate_conn(max_message_size=1000)
    bomb = compress(b'\0' * 1_000_000)
    assert len(bomb) < 1000
    conn.feed(Frame(BINARY, bomb, rsv1=True))
    assert_failed(conn, 1009)


def test_fragmented_compression_bomb_is_refused_with_1009() -> None:
    conn = deflate_conn(max_message_size=1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(b'a' * 600) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(b'b' * 600) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert conn.feed(Frame(BINARY, first, final=False, rsv1=True)) == []
    assert conn.state is State.OPEN
    conn.feed(Frame(CONT, second[:-4]))
    assert_failed(conn, 1009)


def test_compressed_message_exactly_at_the_limit() -> None:
    conn = deflate_conn(max_message_size=1000)
    messages = conn.feed(Frame(BINARY, compress(b'z' * 1000), rsv1=True))
    assert messages == [BinaryMessage(b'z' * 1000)]


@pytest.mark.parametrize('sender', ['server', 'client'])
def test_outgoing_messages_are_compressed(sender: str) -> None:
    server, client = connected_pair([DeflateMessage()])
    source, target = (server, client) if sender == 'server' else (client, server)
    text = 'the same words again, ' * 40
    source.send(text)
    [frame] = source.sent()
    assert frame.rsv1 and frame.opcode == TEXT and len(frame.payload) < len(text) // 4
    assert bool(frame.masking_key) == (sender == 'client')
    assert transfer(source, target) == [TextMessage(text)]
    source.send(b'tiny')  # under the threshold: sent as it is
    [frame] = source.sent()
    assert not frame.rsv1 and frame.payload == b'tiny'
    assert transfer(source, target) == [BinaryMessage(b'tiny')]


def test_compressed_message_sent_in_fragments() -> None:
    server, client = connected_pair([DeflateMessage()])
    payload = os.urandom(1000).hex().encode()  # compresses to about half
    server.send(payload, fragment_size=50)
    frames = server.sent()
    assert len(frames) > 1
    assert frames[0].rsv1 and not any(f.rsv1 for f in frames[1:])
    assert [f.opcode for f in frames] == [BINARY] + [CONT] * (len(frames) - 1)
    assert transfer(server, client) == [BinaryMessage(payload)]


@pytest.mark.parametrize('takeover', [True, False])
def test_context_takeover(takeover: bool) -> None:
    extension = DeflateMessage(server_no_context_takeover=not takeover,
                               client_no_context_takeover=not takeover)
    server, client = connected_pair([extension])
    text = 'a sentence that repeats itself, word for word: ' * 3
    sizes = []
    for _ in range(3):
        server.send(text)
        [frame] = server.sent()
        sizes.append(len(frame.payload))
        assert transfer(server, client) == [TextMessage(text)]
        client.send(text)
        assert transfer(client, server) == [TextMessage(text)]
    if takeover:  # the window remembers the first message: the next ones are references
        assert sizes[1] < sizes[0] // 2 and sizes[2] == sizes[1]
    else:
        assert sizes[0] == sizes[1] == sizes[2]


def test_incompressible_message_goes_uncompressed() -> None:
    server, client = connected_pair([DeflateMessage()])
    payload = os.urandom(1000)
    server.send(payload)
    [frame] = server.sent()
    assert not frame.rsv1 and frame.payload == payload
    assert transfer(server, client) == [BinaryMessage(payload)]
    server.send(b'after ' * 100)  # the context forgot the random payload with the peer
    assert transfer(server, client) == [BinaryMessage(b'after ' * 100)]


# -- deflate-frame (x-webkit-deflate-frame) -------------------------------------------------------

def test_deflate_frame_compresses_each_frame() -> None:
    server, client = connected_pair([DeflateFrame()])
    payload = b'every frame on its own ' * 100
    client.send(payload, fragment_size=600)
    frames = client.sent()
    assert len(frames) == 4 and all(f.rsv1 and f.masking_key for f in frames)
    assert transfer(client, server) == [BinaryMessage(payload)]
    server.send('short')
    assert not server.sent()[0].rsv1
    assert transfer(server, client) == [TextMessage('short')]


def test_deflate_frame_fragments_in() -> None:
    hooks, _ = negotiated_hooks([DeflateFrame()])
    conn = MemoryConnection(server_side=True, hooks=hooks)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)

    def part(data: bytes) -> bytes:
        return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]

    messages = conn.feed(Frame(TEXT, part('hé'.encode() + GRINNING[:2]), final=False, rsv1=True),
                         Frame(CONT, GRINNING[2:], final=False),  # a frame sent uncompressed
                         Frame(CONT, part(b'llo'), rsv1=True))
    assert messages == [TextMessage('hé\N{GRINNING FACE}llo')]


def test_deflate_frame_bomb() -> None:
    hooks, _ = negotiated_hooks([DeflateFrame()])
    conn = MemoryConnection(server_side=True, hooks=hooks, max_message_size=1000)
    conn.feed(Frame(BINARY, compress(b'\0' * 100_000), rsv1=True))
    assert_failed(conn, 1009)


# -- the core does no I/O -------------------------------------------------------------------------

WSPY = Path(__file__).resolve().parent.parent / 'wspy'
FORBIDDEN = {'socket', 'select', 'selectors', 'threading'}
# Modules outside wspy/protocol that the core may import (themselves checked the same way).
ALLOWED_OUTSIDE = {'wspy.errors', 'wspy._speedups'}
CORE_MODULES = sorted(f'wspy.protocol.{p.stem}'.removesuffix('.__init__')
                      for p in (WSPY / 'protocol').glob('*.py'))


def _imports(module: str) -> set[str]:
    """Every module `module` imports anywhere in its source (absolute names)."""
    path = WSPY.parent / (module.replace('.', '/') + '.py')
    if not path.exists():
        path = WSPY.parent / module.replace('.', '/') / '__init__.py'
    if not path.exists():
        return set()  # a compiled extension (wspy._speedups)
    names = set()
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.rsplit('.', node.level - 1)[0]
                base = f'{parent}.{base}'.rstrip('.')
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names
                         if (WSPY.parent / f'{base}.{alias.name}'.replace('.', '/')).exists()
                         or (WSPY.parent / (f'{base}.{alias.name}'.replace('.', '/') + '.py'))
                         .exists())
    return names


@pytest.mark.parametrize('module', CORE_MODULES)
def test_core_module_imports_no_io(module: str) -> None:
    """Nothing under wspy/protocol imports socket, select(ors) or threading, even through
    another wspy module; of wspy outside wspy/protocol, only wspy.errors and wspy._speedups."""
    seen: dict[str, str] = {}
    todo = [module]
    problems = []
    while todo:
        current = todo.pop()
        for name in _imports(current):
            top = name.split('.')[0]
            if top in FORBIDDEN:
                problems.append(f'{current} imports {name}')
            if top != 'wspy' or name in seen or name == 'wspy':
                continue
            seen[name] = current
            if not (name.startswith('wspy.protocol') or name in ALLOWED_OUTSIDE):
                problems.append(f'{current} imports {name}, outside the core')
            todo.append(name)
    assert problems == []


def test_core_runs_with_socket_and_select_unavailable() -> None:
    """Import every core module (without the wspy package's own __init__, which loads the
    drivers) with socket, select and selectors made unimportable; run a message through.

    Except TLS over memory buffers: `ssl` itself imports socket (the core uses only its
    memory BIOs; the static check above covers the module's own imports)."""
    code = f"""
import sys, types
for name in ('socket', 'select', 'selectors', '_socket', 'ssl'):
    sys.modules[name] = None
package = types.ModuleType('wspy')
package.__path__ = [{str(WSPY)!r}]
sys.modules['wspy'] = package
import importlib
for name in {[name for name in CORE_MODULES if name != 'wspy.protocol.tls']!r}:
    try:
        importlib.import_module(name)
    except ImportError as error:
        print(name, error)
from wspy.protocol.frame import Frame, FrameParser
parser = FrameParser(require_mask=True)
parser.feed(Frame(1, 'hi', b'abcd').pack())
assert parser.next_frame().payload == b'hi'
"""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ''


def test_whole_messages_skip_the_frames_with_the_accelerator(
        conn: MemoryConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the C accelerator, a one-frame message comes out of the buffer as a message."""
    through_frames: list[int] = []
    next_frame = FrameParser.next_frame

    def counted(parser: FrameParser) -> Frame | None:
        frame = next_frame(parser)
        if frame is not None:
            through_frames.append(frame.opcode)
        return frame

    monkeypatch.setattr(FrameParser, 'next_frame', counted)
    assert conn.feed(Frame(TEXT, 'é'.encode()), Frame(BINARY, b'\x00'),
                     Frame(TEXT, b'a', final=False), Frame(CONT, b'b'), Frame(PING, b'p'),
                     Frame(TEXT, b'\xff')) == [TextMessage('é'), BinaryMessage(b'\x00'),
                                               TextMessage('ab')]
    whole = [] if FrameParser.splits_messages else [TEXT, BINARY]
    assert through_frames == [*whole, TEXT, CONT, PING, TEXT]  # the invalid text too: 1007
    assert_failed(conn, 1007)


@pytest.mark.parametrize('whole_messages', [True, False])
def test_a_received_text_goes_back_out_as_it_came(
        conn: MemoryConnection, monkeypatch: pytest.MonkeyPatch, whole_messages: bool) -> None:
    """An echo of a non-ASCII text message sends the bytes it came as, without encoding it
    again (through the accelerator's whole messages, or frame by frame); a text changed
    since is encoded."""
    if not whole_messages:
        monkeypatch.setattr(FrameParser, 'splits_messages', False)
    text = 'héllo € ' + GRINNING.decode()
    received = conn.feed(Frame(TEXT, text.encode()), Frame(TEXT, b'plain'))
    assert received == [TextMessage(text), TextMessage('plain')]
    assert received[0].encode() is received[0].encode()  # kept, not made again
    for message in received:
        conn.send(message)
    received[0].payload = 'changed ' + text
    conn.send(received[0])
    assert [frame.payload for frame in conn.sent()] == [
        text.encode(), b'plain', ('changed ' + text).encode()]
