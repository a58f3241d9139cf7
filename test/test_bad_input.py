"""A corpus of bad input: each gets the right HTTP status or close code, and the
server keeps serving a normal client."""

from __future__ import annotations

import logging
import struct
import threading
import time

import pytest

import wspy

from conftest import EchoServer, assert_echoes, served_meanwhile, upgrade_request, url

BAD_HANDSHAKES = [
    ('garbage', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 400),
    ('empty lines', b'\r\n\r\n', 400),
    ('POST', upgrade_request().replace(b'GET', b'POST', 1), 405),
    ('HTTP/1.0', upgrade_request().replace(b'HTTP/1.1', b'HTTP/1.0', 1), 400),
    ('HTTP/2.0', upgrade_request().replace(b'HTTP/1.1', b'HTTP/2.0', 1), 505),
    ('plain GET', b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', 426),
    ('version 8', upgrade_request(version='8'), 426),
    ('no version', upgrade_request().replace(b'Sec-WebSocket-Version: 13\r\n', b''), 400),
    ('no key', b'GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
     b'Sec-WebSocket-Version: 13\r\n\r\n', 400),
    ('short key', upgrade_request(key='c2hvcnQ='), 400),
    ('no Host', upgrade_request().replace(b'Host: localhost\r\n', b''), 400),
    ('two Hosts', upgrade_request(extra='Host: other\r\n'), 400),
    ('no Connection', upgrade_request().replace(b'Connection: Upgrade\r\n', b''), 400),
    ('header without colon', upgrade_request(extra='oops\r\n'), 400),
    ('NUL in a header', upgrade_request(extra='X-A: a\x00b\r\n'), 400),
    ('endless header line', upgrade_request(extra='X-Long: ' + 'a' * 9000 + '\r\n'), 431),
    ('10,000 headers', upgrade_request(extra='X-A: b\r\n' * 10000), 431),
]


@pytest.mark.parametrize('name,request_bytes,status', BAD_HANDSHAKES,
                         ids=[b[0] for b in BAD_HANDSHAKES])
def test_bad_handshakes(serve, raw_client, name: str, request_bytes: bytes,
                        status: int) -> None:
    server = serve()
    with served_meanwhile(server):
        client = raw_client(server)
        try:
            client.send(request_bytes)
        except ConnectionError:
            pass  # the server may answer and close before a huge request is all sent
        answer = client.read_to_eof()
    assert answer.startswith(f'HTTP/1.1 {status} '.encode()), answer[:200]
    assert b'Content-Type: text/plain' in answer
    if status == 426:
        assert b'Sec-WebSocket-Version: 13\r\n' in answer
    assert_echoes(server)


def test_origin_and_location_checks(serve, raw_client) -> None:
    server = serve(trusted_origins=['http://good.example'], locations=['/ws'])
    for extra, path, status in [('Origin: http://evil.example\r\n', '/ws', 403),
                                ('', '/ws', 403),
                                ('Origin: http://good.example\r\n', '/other', 404),
                                ('Origin: http://good.example\r\n', '/ws', 101)]:
        client = raw_client(server)
        assert client.handshake(upgrade_request(path, extra))[0] == status
    conn = wspy.connect(f'ws://127.0.0.1:{server.address[1]}/ws', origin='http://good.example')
    conn.send('ok')
    assert conn.recv().payload == 'ok'
    conn.close()


def masked(opcode: int, payload: bytes = b'', final: bool = True, **flags) -> bytes:
    return wspy.Frame(opcode, payload, b'\x11\x22\x33\x44', final, **flags).pack()


T, B, C, CLOSE, PING = (wspy.OPCODE_TEXT, wspy.OPCODE_BINARY, wspy.OPCODE_CONTINUATION,
                        wspy.OPCODE_CLOSE, wspy.OPCODE_PING)

BAD_FRAMES = [
    ('reserved opcode 3', masked(3), 1002),
    ('reserved control opcode 0xB', masked(0xB), 1002),
    ('RSV1 without extension', masked(T, b'x', rsv1=True), 1002),
    ('unmasked client frame', wspy.Frame(T, b'x').pack(), 1002),
    ('ping of 126 bytes', bytes([0x89, 0xFE, 0, 126]) + b'abcd' + b'x' * 126, 1002),
    ('fragmented ping', masked(PING, b'x', final=False), 1002),
    ('continuation first', masked(C, b'x'), 1002),
    ('text inside a fragmented message', masked(T, b'a', final=False) + masked(T, b'b'), 1002),
    ('length with MSB set', bytes([0x82, 0xFF]) + struct.pack('!Q', 1 << 63) + b'abcd', 1002),
    ('frame header announcing 2^62 bytes',
     bytes([0x82, 0xFF]) + struct.pack('!Q', 1 << 62) + b'abcd', 1009),
    ('invalid UTF-8', masked(T, b'\xce\xba\xff'), 1007),
    ('invalid UTF-8 across fragments',
     masked(T, b'\xce', final=False) + masked(C, b'\xff'), 1007),
    ('surrogate in UTF-8', masked(T, b'\xed\xa0\x80'), 1007),
    ('close with 1 byte', masked(CLOSE, b'\x03'), 1002),
    ('close code 1005', masked(CLOSE, struct.pack('!H', 1005)), 1002),
    ('close code 999', masked(CLOSE, struct.pack('!H', 999)), 1002),
    ('close reason not UTF-8', masked(CLOSE, struct.pack('!H', 1000) + b'\xff'), 1007),
]


@pytest.mark.parametrize('name,data,code', BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames(serve, raw_client, name: str, data: bytes, code: int) -> None:
    server = serve()
    with served_meanwhile(server):
        client = raw_client(server)
        assert client.handshake()[0] == 101
        client.send(masked(T, b'before'))
        client.send(data)
        frame = client.recv_frame()
        assert (frame.opcode, frame.payload) == (T, b'before')  # earlier messages still echoed
        assert client.recv_close()[0] == code
        assert client.read_to_eof() == b''  # the server closes the TCP connection first
        client.close()
        assert server.wait_closes(1)[0][1] == code
    assert_echoes(server)


def test_invalid_utf8_fails_before_the_frame_is_complete(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    frame = masked(T, b'valid start \xff' + b'x' * 100000)
    client.send(frame[:100])  # the rest of the frame is never sent
    assert client.recv_close()[0] == 1007


def test_message_over_the_limit_is_refused_with_1009(serve, raw_client) -> None:
    server = serve(max_message_size=1000)
    client = raw_client(server)
    client.handshake()
    client.send(masked(B, b'x' * 600, final=False) + masked(C, b'x' * 600))
    assert client.recv_close()[0] == 1009
    assert_echoes(server)


def test_closing_twice_and_data_after_close(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    client.send(masked(CLOSE, struct.pack('!H', 1000)) + masked(T, b'ignored'))
    assert client.recv_close() == (1000, '')
    assert client.read_to_eof() == b''
    client.close()
    assert server.wait_closes(1)[0][1:] == (1000, '')


def test_empty_close_is_answered_with_an_empty_close(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    client.send(masked(CLOSE))
    assert client.recv_close() == (None, '')
    client.close()
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_NO_STATUS


@pytest.mark.parametrize('name,first,rest', [
    ('surrogate lead at the end of a fragment', masked(T, b'ok \xed\xa0', final=False), b''),
    ('invalid byte in a continuation still arriving',
     masked(T, b'ok', final=False), masked(C, b'fine \xf5' + b'x' * 100000)[:60]),
])
def test_invalid_utf8_fails_before_the_message_is_complete(serve, raw_client, name: str,
                                                           first: bytes, rest: bytes) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    client.send(first + rest)  # the message is never completed
    assert client.recv_close()[0] == 1007


def test_single_frame_over_the_message_limit(serve, raw_client) -> None:
    server = serve(max_message_size=10, max_frame_size=100)
    client = raw_client(server)
    client.handshake()
    client.send(masked(T, b'x' * 11))
    assert client.recv_close()[0] == 1009


def test_request_trickled_one_byte_a_second_gets_408(serve, raw_client) -> None:
    server = serve(handshake_timeout=1.5)
    client = raw_client(server)
    request = upgrade_request()
    answer: list[bytes] = []

    def trickle() -> None:
        try:
            for byte in request:
                client.send(bytes([byte]))
                time.sleep(1.0)
        except OSError:
            pass  # the server has given up on us

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    reader = threading.Thread(target=lambda: answer.append(client.read_to_eof()))
    reader.start()
    assert_echoes(server, 'served during the trickle')
    reader.join(10)
    assert answer and answer[0].startswith(b'HTTP/1.1 408 '), answer


def test_max_connections(serve, raw_client) -> None:
    server = serve(max_connections=2)
    first = wspy.connect(url(server))
    second = wspy.connect(url(server))
    refused = raw_client(server)
    refused.send(upgrade_request())
    answer = refused.read_to_eof()
    assert answer.startswith(b'HTTP/1.1 503 '), answer[:100]
    assert b'Retry-After: 1\r\n' in answer
    refused.close()
    second.send('still served')
    assert second.recv().payload == 'still served'
    first.close()
    server.wait_closes(1)
    deadline = time.monotonic() + 5
    while True:  # a place is free once the server has let go of the closed connections
        try:
            assert_echoes(server)
            break
        except wspy.InvalidStatus as error:
            assert error.status == 503 and time.monotonic() < deadline
            time.sleep(0.05)
    second.close()


def test_rejections_are_logged(serve, raw_client, caplog) -> None:
    server = serve()
    with caplog.at_level(logging.INFO, logger='wspy'):
        client = raw_client(server)
        client.send(upgrade_request(version='8'))
        assert client.read_to_eof().startswith(b'HTTP/1.1 426 ')
    records = [r for r in caplog.records if 'rejected handshake' in r.getMessage()]
    assert records and records[0].levelno == logging.INFO
    assert '426' in records[0].getMessage()


def test_an_exception_in_process_request_is_a_500(serve, raw_client) -> None:
    class Broken:
        def process_request(self, request: wspy.Request) -> None:
            if request.path == '/broken':
                raise RuntimeError('application bug')

    server = serve(type('BrokenServer', (Broken, EchoServer), {}))
    client = raw_client(server)
    client.send(upgrade_request('/broken'))
    assert client.read_to_eof().startswith(b'HTTP/1.1 500 ')
    assert_echoes(server)
