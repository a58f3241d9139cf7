"""The client: URLs, redirects, handshake failures, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import wspy
from wspy.protocol.handshake import HeadReader, accept_key, parse_request

from conftest import url


class StubHTTPServer:
    """Answers each connection with `respond(request)`'s bytes, then closes it."""

    def __init__(self, respond: Callable[[wspy.protocol.handshake.Request], bytes]) -> None:
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.respond = respond
        self.requests: list[wspy.protocol.handshake.Request] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                reader = HeadReader()
                head = None
                while head is None:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head = reader.feed(data)
                if head is None:
                    continue
                request = parse_request(head)
                self.requests.append(request)
                answer = self.respond(request)
                if answer:
                    conn.sendall(answer)
                    time.sleep(0.05)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stub() -> Iterator[Callable[..., StubHTTPServer]]:
    stubs: list[StubHTTPServer] = []

    def start(respond: Callable[[wspy.protocol.handshake.Request], bytes]) -> StubHTTPServer:
        stubs.append(StubHTTPServer(respond))
        return stubs[-1]

    yield start
    for s in stubs:
        s.close()


def redirect(status: int, location: str) -> Callable[[wspy.protocol.handshake.Request], bytes]:
    return lambda request: (f'HTTP/1.1 {status} Moved\r\nLocation: {location}\r\n'
                            'Content-Length: 0\r\n\r\n').encode()


@pytest.mark.parametrize('status', [301, 302, 303, 307, 308])
def test_follows_absolute_redirects_to_another_server(serve, stub, status: int) -> None:
    server = serve()
    moved = stub(redirect(status, url(server, '/new?x=1')))
    conn = wspy.connect(f'ws://127.0.0.1:{moved.port}/old')
    conn.send('redirected')
    assert conn.recv().payload == 'redirected'
    assert server.events[0] == ('open', '/new?x=1')  # onopen ran before the echo
    conn.close()


def test_follows_relative_redirects_on_the_same_host(stub) -> None:
    def respond(request: wspy.protocol.handshake.Request) -> bytes:
        if request.path == '/start':
            return redirect(302, 'next')(request)
        if request.path == '/next':
            return redirect(307, '/final')(request)
        key = request.headers['Sec-WebSocket-Key']
        return ('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                f'Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n'
                ).encode() + wspy.Frame(wspy.OPCODE_TEXT, b'welcome').pack()

    server = stub(respond)
    conn = wspy.connect(f'ws://127.0.0.1:{server.port}/start')
    assert [r.target for r in server.requests] == ['/start', '/next', '/final']
    assert server.requests[-1].headers['Host'] == f'127.0.0.1:{server.port}'
    assert conn.recv().payload == 'welcome'  # sent in the same packet as the 101
    conn.abort()


def test_redirect_limit(stub) -> None:
    loop = stub(redirect(302, '/again'))
    with pytest.raises(wspy.RedirectError):
        wspy.connect(f'ws://127.0.0.1:{loop.port}/', max_redirects=3)
    assert len(loop.requests) == 4
    with pytest.raises(wspy.RedirectError) as info:
        wspy.connect(f'ws://127.0.0.1:{loop.port}/', max_redirects=0)
    assert info.value.status == 302 and ('Location', '/again') in info.value.headers
    assert len(loop.requests) == 5


def test_error_status_carries_the_body(stub) -> None:
    body = b'no such endpoint\n'
    server = stub(lambda r: b'HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s'
                  % (len(body), body))
    with pytest.raises(wspy.InvalidStatus) as info:
        wspy.connect(f'ws://127.0.0.1:{server.port}/')
    assert (info.value.status, info.value.body) == (404, body)
    assert isinstance(info.value, wspy.HandshakeError)


def test_wrong_accept_key(stub) -> None:
    server = stub(lambda r: b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                  b'Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n')
    with pytest.raises(wspy.InvalidHeader):
        wspy.connect(f'ws://127.0.0.1:{server.port}/')


def test_garbage_response(stub) -> None:
    server = stub(lambda r: b'SSH-2.0-OpenSSH\r\n\r\n')
    with pytest.raises(wspy.InvalidResponse):
        wspy.connect(f'ws://127.0.0.1:{server.port}/')


def test_server_closing_without_answer(stub) -> None:
    server = stub(lambda r: b'')
    with pytest.raises(wspy.HandshakeError):
        wspy.connect(f'ws://127.0.0.1:{server.port}/')


def test_handshake_timeout() -> None:
    silent = socket.create_server(('127.0.0.1', 0))
    try:
        started = time.monotonic()
        with pytest.raises(wspy.HandshakeTimeout):
            wspy.connect(f'ws://127.0.0.1:{silent.getsockname()[1]}/', timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_connection_refused_is_an_os_error() -> None:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        wspy.connect(f'ws://127.0.0.1:{port}/')


def test_hostname_and_custom_host_header(serve) -> None:
    seen = {}
    server = serve()
    conn = wspy.connect(f'ws://localhost:{server.address[1]}/', host='example.test')
    seen['host'] = conn.sock.getpeername()[0]
    conn.send('by name')
    assert conn.recv().payload == 'by name'
    conn.close()
    assert seen['host'] == '127.0.0.1'


def test_bad_urls() -> None:
    for bad in ('http://example.com/', 'ws:///nohost'):
        with pytest.raises(wspy.InvalidURI):
            wspy.connect(bad)


def test_server_masked_frame_fails_the_client(stub) -> None:
    def respond(request: wspy.protocol.handshake.Request) -> bytes:
        key = request.headers['Sec-WebSocket-Key']
        return ('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                f'Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n'
                ).encode() + wspy.Frame(wspy.OPCODE_TEXT, b'masked', b'abcd').pack()

    server = stub(respond)
    conn = wspy.connect(f'ws://127.0.0.1:{server.port}/', close_timeout=1)
    with pytest.raises(wspy.ConnectionClosedError) as info:
        conn.recv()
    assert info.value.code == wspy.CLOSE_PROTOCOL_ERROR


def test_client_keepalive_fails_a_silent_server() -> None:
    listener = socket.create_server(('127.0.0.1', 0))
    held = []

    def accept_and_go_silent() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        reader = HeadReader()
        head = None
        while head is None:
            head = reader.feed(conn.recv(4096))
        key = parse_request(head).headers['Sec-WebSocket-Key']
        conn.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                      f'Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n'
                      ).encode())

    thread = threading.Thread(target=accept_and_go_silent)
    thread.start()
    try:
        conn = wspy.connect(f'ws://127.0.0.1:{listener.getsockname()[1]}/', ping_interval=0.2,
                            ping_timeout=0.3, close_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(wspy.ConnectionClosedError) as info:
            conn.recv()
        assert info.value.code == 1011
        assert time.monotonic() - started < 3
    finally:
        thread.join(5)
        for sock in held:
            sock.close()
        listener.close()
