"""Extensions: the header grammar, negotiation, and both deflate extensions."""

from __future__ import annotations

import functools
import os
import socket
import time
import zlib

import pytest

import wspy
import wspy.protocol.extension
from wspy.protocol.deflate_frame import DeflateFrameHook
from wspy.protocol.deflate_message import DeflateHook
from wspy.protocol.extension import (accept_response, format_extension, negotiate, offer_header,
                                     parse_extensions)
from wspy.protocol.frame import Frame

from conftest import assert_echoes, url

T, C = wspy.OPCODE_TEXT, wspy.OPCODE_CONTINUATION


def test_parse_extensions_grammar() -> None:
    parsed = parse_extensions('permessage-deflate; client_max_window_bits; server_max_window_bits'
                              '="10", x-foo,deflate-frame ;max_window_bits=9')
    assert parsed == [
        ('permessage-deflate', [('client_max_window_bits', None),
                                ('server_max_window_bits', '10')]),
        ('x-foo', []), ('deflate-frame', [('max_window_bits', '9')])]
    assert format_extension('a', [('b', None), ('c', '1')]) == 'a; b; c=1'


@pytest.mark.parametrize('bad', ['', ',', 'a;', 'a; b=', 'a b', 'a,', 'a; b="x y"', 'a; b=@'])
def test_malformed_extension_headers(bad: str) -> None:
    if bad == '':
        assert parse_extensions(bad) == []
        return
    with pytest.raises(wspy.InvalidRequest):
        parse_extensions(bad)


def server_negotiates(offer: str, *extensions: wspy.Extension) -> tuple[str | None, list]:
    return negotiate(offer, list(extensions or [wspy.DeflateMessage()]))


@pytest.mark.parametrize('offer,response', [
    ('permessage-deflate', 'permessage-deflate; server_max_window_bits=12'),
    ('permessage-deflate; client_max_window_bits',
     'permessage-deflate; server_max_window_bits=12'),
    ('permessage-deflate; server_max_window_bits=10',
     'permessage-deflate; server_max_window_bits=10'),
    ('permessage-deflate; server_max_window_bits=15',
     'permessage-deflate; server_max_window_bits=12'),
    ('permessage-deflate; server_no_context_takeover',
     'permessage-deflate; server_no_context_takeover; server_max_window_bits=12'),
    ('permessage-deflate; client_no_context_takeover',
     'permessage-deflate; server_max_window_bits=12'),
    # several offers: the first acceptable one wins
    ('permessage-deflate; unknown=1, permessage-deflate; server_max_window_bits=9',
     'permessage-deflate; server_max_window_bits=9'),
    ('permessage-deflate; server_max_window_bits=8, permessage-deflate',
     'permessage-deflate; server_max_window_bits=12'),
])
def test_server_answers_offers(offer: str, response: str) -> None:
    accepted, hooks = server_negotiates(offer)
    assert accepted == response and len(hooks) == 1


@pytest.mark.parametrize('offer', [
    'permessage-deflate; server_max_window_bits',         # needs a value
    'permessage-deflate; server_max_window_bits=16',
    'permessage-deflate; server_max_window_bits=07',
    'permessage-deflate; client_max_window_bits=7',
    'permessage-deflate; server_no_context_takeover=1',
    'permessage-deflate; server_no_context_takeover; server_no_context_takeover',
    'permessage-deflate; bogus',
    'permessage-deflate; server_max_window_bits=8',       # zlib cannot compress with it
    'x-unknown-extension',
])
def test_server_declines_bad_offers(offer: str) -> None:
    assert server_negotiates(offer) == (None, [])


def test_server_limits_and_resets_the_client_when_configured() -> None:
    ext = wspy.DeflateMessage(client_max_window_bits=10, client_no_context_takeover=True,
                              server_max_window_bits=None, server_no_context_takeover=True)
    accepted, (hook,) = negotiate('permessage-deflate; client_max_window_bits', [ext])
    assert accepted == ('permessage-deflate; server_no_context_takeover; '
                        'client_no_context_takeover; client_max_window_bits=10')
    assert (hook.compress_bits, hook.compress_reset) == (15, True)
    assert (hook.decompress_bits, hook.decompress_reset) == (10, True)
    # a client that did not offer client_max_window_bits is not limited
    accepted, (hook,) = negotiate('permessage-deflate', [ext])
    assert 'client_max_window_bits' not in accepted and hook.decompress_bits == 15


def test_conflicting_extensions_are_never_both_accepted() -> None:
    accepted, hooks = negotiate('deflate-frame, permessage-deflate',
                                [wspy.DeflateMessage(), wspy.DeflateFrame()])
    assert accepted == 'deflate-frame' and len(hooks) == 1
    accepted, hooks = negotiate('x-webkit-deflate-frame; max_window_bits=10',
                                [wspy.DeflateFrame()])
    assert accepted == 'x-webkit-deflate-frame' and hooks[0].compress_bits == 10


def test_client_offers() -> None:
    assert offer_header([wspy.DeflateMessage()]) == \
        'permessage-deflate; server_max_window_bits=12; client_max_window_bits'
    assert offer_header([wspy.DeflateMessage(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=None, client_max_window_bits=9), wspy.DeflateFrame(
        max_window_bits=10, no_context_takeover=True)]) == (
        'permessage-deflate; server_no_context_takeover; client_no_context_takeover; '
        'client_max_window_bits=9, deflate-frame; max_window_bits=10; no_context_takeover')
    assert offer_header([]) is None


def test_client_checks_responses() -> None:
    ext = wspy.DeflateMessage(client_max_window_bits=12)
    (hook,) = accept_response('permessage-deflate; server_max_window_bits=10; '
                              'client_max_window_bits=11; client_no_context_takeover', [ext])
    assert (hook.compress_bits, hook.compress_reset) == (11, True)
    assert (hook.decompress_bits, hook.decompress_reset) == (10, False)
    for bad in ['permessage-deflate; server_max_window_bits=13',   # over the 12 asked
                'permessage-deflate; client_max_window_bits=13',   # over the offer
                'permessage-deflate; client_max_window_bits',      # no value
                'permessage-deflate; client_max_window_bits=8',    # zlib cannot
                'permessage-deflate; bogus',
                'permessage-deflate, permessage-deflate',
                'deflate-frame']:                                  # not offered
        with pytest.raises(wspy.NegotiationError):
            accept_response(bad, [ext])
    with pytest.raises(wspy.NegotiationError):
        accept_response('permessage-deflate',
                        [wspy.DeflateMessage(server_no_context_takeover=True)])
    assert accept_response(None, [ext]) == []


def pair(compress_reset: bool, decompress_reset: bool, bits: int = 15,
         threshold: int = 0) -> tuple[DeflateHook, DeflateHook]:
    def hook() -> DeflateHook:
        return DeflateHook(compress_bits=bits, compress_reset=compress_reset,
                           decompress_bits=bits, decompress_reset=decompress_reset,
                           threshold=threshold, level=6, mem_level=5)
    return hook(), hook()


@pytest.mark.parametrize('reset', [False, True])
def test_message_round_trips_with_and_without_context_takeover(reset: bool) -> None:
    sender, receiver = pair(reset, reset)
    text = b'the same words again and again ' * 20
    sizes = []
    for _ in range(3):
        frame = sender.send(Frame(T, text))
        assert frame.rsv1 and len(frame.payload) < len(text)
        sizes.append(len(frame.payload))
        assert receiver.recv(frame, None).payload == text
    if reset:
        assert sizes[0] == sizes[1] == sizes[2]
    else:
        assert sizes[1] < sizes[0]  # the context remembered the first message


def test_fragmented_compressed_message() -> None:
    sender, receiver = pair(False, False)
    data = os.urandom(300) * 10
    frames = sender.send(Frame(wspy.OPCODE_BINARY, data)).fragment(100)
    assert frames[0].rsv1 and not any(f.rsv1 for f in frames[1:])
    assert b''.join(receiver.recv(f, None).payload for f in frames) == data


def test_threshold_and_empty_messages() -> None:
    sender, receiver = pair(False, False, threshold=10)
    small = sender.send(Frame(T, b'short'))
    assert not small.rsv1 and receiver.recv(small, None).payload == b'short'
    sender, receiver = pair(False, False)
    empty = sender.send(Frame(T, b''))
    assert not empty.rsv1 and empty.payload == b''  # deflate cannot make it shorter
    compressed_empty = Frame(T, sender.compress(b''), rsv1=True)  # as other peers send it
    assert receiver.recv(compressed_empty, None).payload == b''


def test_window_bits_8_inflates() -> None:
    # zlib cannot compress with 8 bits, but a peer may: inflating works.
    sender = DeflateHook(compress_bits=9, compress_reset=False, decompress_bits=8,
                         decompress_reset=False, threshold=0, level=6, mem_level=5)
    raw = zlib.compressobj(6, zlib.DEFLATED, -9)
    data = raw.compress(b'abc' * 10) + raw.flush(zlib.Z_SYNC_FLUSH)
    assert sender.recv(Frame(T, data[:-4], rsv1=True), None).payload == b'abc' * 10


def test_inflating_is_bounded_and_validated() -> None:
    sender, receiver = pair(False, False)
    frame = sender.send(Frame(wspy.OPCODE_BINARY, bytes(100000)))
    with pytest.raises(wspy.PayloadTooBig):
        receiver.recv(frame, 99999)
    _, receiver = pair(False, False)
    assert len(receiver.recv(frame, 100000).payload) == 100000
    with pytest.raises(wspy.InvalidPayload):
        pair(False, False)[1].recv(Frame(T, b'\xff\xff\xff garbage', rsv1=True), None)
    with pytest.raises(wspy.ProtocolError):
        pair(False, False)[1].recv(Frame(C, b'x', rsv1=True), None)


def test_deflate_frame_compresses_each_frame() -> None:
    def hook() -> DeflateFrameHook:
        return DeflateFrameHook(compress_bits=15, compress_reset=False, decompress_bits=15,
                                decompress_reset=False, threshold=0, level=6, mem_level=5)
    sender, receiver = hook(), hook()
    frames = [sender.send(f) for f in Frame(T, b'abcdef' * 100).fragment(150)]
    assert all(f.rsv1 for f in frames)
    assert b''.join(receiver.recv(f, None).payload for f in frames) == b'abcdef' * 100
    assert receiver.recv(Frame(T, b'plain'), None).payload == b'plain'


def test_deflate_frame_negotiation() -> None:
    ext = wspy.DeflateFrame(max_window_bits=11)
    assert ext.offers() == [[('max_window_bits', '11')]]
    assert ext.accept_offer([('max_window_bits', '8')]) is None
    assert ext.accept_offer([('max_window_bits', '10'), ('max_window_bits', '10')]) is None
    response, hook = ext.accept_offer([('no_context_takeover', None)])
    assert response == [('max_window_bits', '11')] and hook.compress_reset
    with pytest.raises(wspy.NegotiationError):
        ext.accept_response([('bogus', None)])
    with pytest.raises(ValueError):
        wspy.DeflateFrame(max_window_bits=20)
    with pytest.raises(ValueError):
        wspy.DeflateMessage(server_max_window_bits=7)


# -- end to end ----------------------------------------------------------------------

def rss_mib() -> float:
    """This process's resident memory, in MiB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('no VmRSS')


@pytest.mark.parametrize('client_ext', [wspy.DeflateMessage(), wspy.DeflateFrame(),
                                        wspy.DeflateMessage(client_max_window_bits=9,
                                                            server_no_context_takeover=True)],
                         ids=['permessage-deflate', 'deflate-frame', 'small-windows'])
def test_compressed_echo(serve, client_ext: wspy.Extension) -> None:
    limits = {'max_message_size': 4 << 20, 'max_frame_size': 4 << 20}  # random data stays big
    server = serve(extensions=[wspy.DeflateMessage(), wspy.DeflateFrame()], **limits)
    conn = wspy.connect(url(server), extensions=[client_ext], **limits)
    assert len(conn.sock.hooks) == 1
    header = dict(conn.sock.response_headers)['Sec-WebSocket-Extensions']
    assert header.startswith(client_ext.name)
    for message in ['text ' * 1000, b'\x00' * 100000, 'é' * 10, b'', os.urandom(3 << 20)]:
        conn.send(message)
        assert conn.recv().payload == message
        conn.send(message, fragment_size=777)
        assert conn.recv().payload == message
    conn.close()


def test_compressed_frames_are_smaller_on_the_wire(serve, raw_client) -> None:
    server = serve(extensions=[wspy.DeflateMessage()])
    client = raw_client(server)
    status, headers, _ = client.handshake(
        b'GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
        b'Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n')
    assert status == 101
    assert headers['Sec-WebSocket-Extensions'].startswith('permessage-deflate')
    client.parser.rsv_allowed = 0x40
    client.send_frame(T, b'uncompressed but echoed compressed ' * 50)
    frame = client.recv_frame()
    assert frame.rsv1 and len(frame.payload) < 200
    client.send_frame(wspy.OPCODE_PING, b'p', rsv1=True)  # never on control frames
    assert client.recv_close()[0] == wspy.CLOSE_PROTOCOL_ERROR


def docstring_example(module: object) -> dict[str, object]:
    """Run the indented code example of a module's docstring; the names it defines."""
    lines = (module.__doc__ or '').split('::\n', 1)[1].splitlines()
    code = '\n'.join(line[4:] for line in lines)
    names: dict[str, object] = {'wspy': wspy}
    exec(code, names)
    return names


def test_custom_extension_from_the_docs(serve) -> None:
    example = docstring_example(wspy.protocol.extension)
    server = serve(extensions=[example['Reverse']()])
    conn = wspy.connect(url(server), extensions=[example['Reverse']()])
    assert dict(conn.sock.response_headers)['Sec-WebSocket-Extensions'] == 'x-reverse'
    assert isinstance(conn.sock.hooks[0], example['ReverseHook'])
    conn.send('drawer')
    assert conn.recv().payload == 'drawer'  # reversed on the wire, both ways
    conn.close()


@functools.cache
def bomb(size: int) -> bytes:
    """A raw-deflate stream (sync-flushed, tail removed) of `size` zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b''.join(parts)[:-4]


def test_compression_bomb_is_refused_with_1009(serve, raw_client) -> None:
    payload = bomb(1 << 30)  # inflates to 1 GiB
    assert len(payload) < 2 << 20
    server = serve(extensions=[wspy.DeflateMessage()], max_frame_size=4 << 20)
    client = raw_client(server)
    client.handshake(
        b'GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
        b'Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n')
    before = rss_mib()
    client.send_frame(wspy.OPCODE_BINARY, payload, rsv1=True)
    assert client.recv_close()[0] == wspy.CLOSE_MESSAGE_TOO_BIG
    assert rss_mib() - before < 100
    assert_echoes(server)


def test_compressed_text_continuation_arriving_in_pieces(serve, raw_client) -> None:
    # RSV1 marks only the first frame of a compressed message: the bytes of a
    # continuation frame still arriving are compressed, not UTF-8 to check.
    server = serve(extensions=[wspy.DeflateMessage()])
    client = raw_client(server)
    client.handshake(
        b'GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
        b'Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n')
    client.parser.rsv_allowed = 0x40
    hook = DeflateHook(compress_bits=15, compress_reset=False, decompress_bits=15,
                       decompress_reset=False, threshold=0, level=6, mem_level=5)
    text = ''.join(chr(0x4e00 + i % 5000) for i in range(20000))
    frames = hook.send(Frame(T, text.encode())).fragment(1000)
    for frame in frames:
        frame.masking_key = os.urandom(4)
    data = b''.join(f.pack() for f in frames)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no coalescing
    for start in range(0, len(data), 333):  # every frame arrives in pieces
        client.send(data[start:start + 333])
        time.sleep(0.003)
    echoed = client.recv_frame()
    assert hook.recv(echoed, None).payload.decode() == text
