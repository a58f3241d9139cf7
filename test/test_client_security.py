"""The blocking client against hostile peers: trickled TLS, slow proxies, redirects that would
take credentials elsewhere, and the `auth` option of a raw `websocket`."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wspy
from wspy.protocol.handshake import HeadReader, Request, accept_key, parse_request

from certs import Certs
from conftest import EchoServer, running, server_factory
from test_tls import server_tls, trusting

#: How long a trickling peer goes on at most: the old code waited for all of it.
TRICKLE_FOR = 6.0
#: What a bounded wait may take beyond its timeout, on a busy machine.
SLACK = 2.5


class RawServer:
    """Serves each connection on 127.0.0.1 with `handle(conn)` in a thread of its own."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.handle = handle
        self.done = threading.Event()  # set when a handler has returned
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handle(conn)
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def start_server() -> Iterator[Callable[..., Any]]:
    """Start a threaded `wspy.Server` (an echo server) with options; shut down afterwards."""
    with running(server_factory(wspy.Server, {})) as start:
        yield start


def read_head(conn: socket.socket) -> Request:
    """Read an HTTP request head from a plain socket."""
    reader = HeadReader()
    head = None
    while head is None:
        data = conn.recv(4096)
        if not data:
            raise ConnectionError('closed before a request')
        head = reader.feed(data)
    return parse_request(head)


def trickle(conn: socket.socket, data: bytes, interval: float) -> None:
    """Send `data` a byte at a time, for at most `TRICKLE_FOR` seconds."""
    stop = time.monotonic() + TRICKLE_FOR
    for byte in data:
        if time.monotonic() > stop:
            return
        conn.sendall(bytes([byte]))
        time.sleep(interval)


def switching(request: Request) -> bytes:
    """The 101 answer to an upgrade request."""
    key = request.headers['Sec-WebSocket-Key']
    return ('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
            f'Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n').encode()


def drop(conn: wspy.Connection) -> None:
    """Drop a connection and release its socket."""
    conn.abort()
    conn.sock.close()


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


# -- (2) TLS trickled a byte at a time ------------------------------------------------------

class MemoryTLSServer:
    """The server side of TLS over memory, driven by hand on a plain socket."""

    def __init__(self, conn: socket.socket, certs: Certs) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        self.conn = conn
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.conn.sendall(self.outgoing.read())
                self.incoming.write(self.conn.recv(65536))
        self.conn.sendall(self.outgoing.read())

    def read_request(self) -> Request:
        reader = HeadReader()
        head = None
        while head is None:
            try:
                head = reader.feed(self.tls.read(65536))
            except ssl.SSLWantReadError:
                self.conn.sendall(self.outgoing.read())  # session tickets
                self.incoming.write(self.conn.recv(65536))
        return parse_request(head)

    def encrypt(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self.outgoing.read()


def test_client_tls_records_trickled_after_the_tls_handshake(raw_server, certs: Certs) -> None:
    """The answer comes in one TLS record, a byte at a time: each raw read used to get the
    whole timeout again, and the record took minutes."""
    def handle(conn: socket.socket) -> None:
        tls = MemoryTLSServer(conn, certs)
        tls.handshake()
        request = tls.read_request()
        body = b'x' * 8000  # one record, 8 kB long
        answer = switching(request)[:-2] + b'X-Padding: ' + body + b'\r\n\r\n'
        trickle(conn, tls.encrypt(answer), 0.01)

    server = raw_server(handle)
    start = time.monotonic()
    with pytest.raises(wspy.HandshakeTimeout):
        wspy.connect(f'wss://localhost:{server.port}/', timeout=1, ssl_args=trusting(certs))
    assert elapsed_since(start) < 1 + SLACK


def test_client_tls_handshake_trickled(raw_server, certs: Certs) -> None:
    """A real server flight, a byte at a time."""
    def handle(conn: socket.socket) -> None:
        tls = MemoryTLSServer(conn, certs)
        try:
            tls.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        tls.incoming.write(conn.recv(65536))  # the ClientHello
        try:
            tls.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        trickle(conn, tls.outgoing.read(), 0.01)

    server = raw_server(handle)
    start = time.monotonic()
    with pytest.raises(wspy.HandshakeTimeout):
        wspy.connect(f'wss://localhost:{server.port}/', timeout=1, ssl_args=trusting(certs))
    assert elapsed_since(start) < 1 + SLACK


def client_hello() -> bytes:
    """The bytes a TLS client opens with."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_server_handshake_bounds_a_trickled_client_hello(certs: Certs) -> None:
    listener = wspy.websocket(handshake_timeout=1)
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    listener.enable_ssl(server_side=True, certfile=str(certs.server_cert),
                        keyfile=str(certs.server_key))
    outcome: list[tuple[BaseException | None, float]] = []

    def accept_one() -> None:
        start = time.monotonic()
        try:
            sock, _ = listener.accept()
            sock.close()
        except Exception as error:  # the outcome is what the test asserts
            outcome.append((error, elapsed_since(start)))
        else:
            outcome.append((None, elapsed_since(start)))

    thread = threading.Thread(target=accept_one)
    thread.start()
    client = socket.create_connection(('127.0.0.1', listener.getsockname()[1]), timeout=10)
    try:
        stop = time.monotonic() + TRICKLE_FOR
        try:
            for byte in client_hello():
                if outcome or time.monotonic() > stop:
                    break
                client.sendall(bytes([byte]))
                time.sleep(0.01)
        except OSError:
            pass  # the server gave up and reset the connection
        thread.join(TRICKLE_FOR + 5)
    finally:
        client.close()
        listener.close()
    error, took = outcome[0]
    assert isinstance(error, wspy.HandshakeTimeout), error
    assert took < 1 + SLACK


# -- (3) a proxy that answers CONNECT slowly ---------------------------------------------------

def test_proxy_connect_answer_trickled(raw_server) -> None:
    def handle(conn: socket.socket) -> None:
        read_head(conn)
        trickle(conn, b'HTTP/1.1 200 Connection established\r\n\r\n', 0.25)

    proxy = raw_server(handle)
    start = time.monotonic()
    with pytest.raises(wspy.ProxyError, match='in time') as info:
        wspy.connect('ws://127.0.0.1:9/', proxy=f'http://127.0.0.1:{proxy.port}', timeout=1)
    assert info.value.status == 504
    assert elapsed_since(start) < 1 + SLACK


def test_one_deadline_for_proxy_and_handshake(raw_server) -> None:
    """Slow in each step, but each in its own time: the whole still gets `timeout` only."""
    def handle(conn: socket.socket) -> None:
        read_head(conn)
        time.sleep(0.7)
        conn.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
        request = read_head(conn)  # the upgrade request, through the "tunnel"
        time.sleep(0.7)
        conn.sendall(switching(request))
        time.sleep(1)

    proxy = raw_server(handle)
    start = time.monotonic()
    with pytest.raises(wspy.HandshakeTimeout):
        wspy.connect('ws://127.0.0.1:9/', proxy=f'http://127.0.0.1:{proxy.port}', timeout=1)
    assert elapsed_since(start) < 1 + SLACK


def test_one_deadline_for_all_redirects(raw_server) -> None:
    def handle(conn: socket.socket) -> None:
        read_head(conn)
        time.sleep(0.4)
        conn.sendall(b'HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n')

    server = raw_server(handle)
    start = time.monotonic()
    with pytest.raises(wspy.HandshakeTimeout):
        wspy.connect(f'ws://127.0.0.1:{server.port}/', timeout=1, max_redirects=10)
    assert elapsed_since(start) < 1 + SLACK


# -- (7) redirects and credentials --------------------------------------------------------------

class Recording:
    """A plain WebSocket server that records the request heads it gets and accepts them all."""

    def __init__(self, raw_server: Callable[[Callable[[socket.socket], None]], RawServer],
                 answer: Callable[[Request], bytes] = switching) -> None:
        self.requests: list[Request] = []
        self.answer = answer
        self.server = raw_server(self._handle)
        self.port = self.server.port

    def _handle(self, conn: socket.socket) -> None:
        request = read_head(conn)
        self.requests.append(request)
        conn.sendall(self.answer(request))
        conn.recv(1)  # until the client goes


def redirecting_to(location: str) -> type:
    class Redirect(EchoServer):
        def process_request(self, request: Request) -> wspy.Response:
            return wspy.Response(302, [('Location', location)])
    return Redirect


def test_no_redirect_from_wss_down_to_ws(raw_server, start_server, certs: Certs) -> None:
    plain = Recording(raw_server, lambda request: (
        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="r"\r\n'
        b'Content-Length: 0\r\n\r\n'))
    secure = start_server(redirecting_to(f'ws://127.0.0.1:{plain.port}/'),
                          ssl_args=server_tls(certs))
    with pytest.raises(wspy.RedirectError, match='wss://') as info:
        wspy.connect(f'wss://localhost:{secure.address[1]}/', auth=('alice', 'secret'),
                     ssl_args=trusting(certs))
    assert info.value.status == 302
    assert plain.requests == []


CALLER_HEADERS = [('Cookie', 'session=s3cret'), ('Authorization', 'Bearer t0ken'),
                  ('proxy-authorization', 'Basic cHJveHk6cHc='), ('X-Token', 'app')]


def test_credential_headers_not_sent_to_another_origin(raw_server, start_server) -> None:
    other = Recording(raw_server)
    redirector = start_server(redirecting_to(f'ws://127.0.0.1:{other.port}/'))
    drop(wspy.connect(f'ws://127.0.0.1:{redirector.address[1]}/', headers=CALLER_HEADERS))
    received = {name.lower() for name, _ in other.requests[0].headers.items()}
    assert not received & {'cookie', 'authorization', 'proxy-authorization'}
    assert 'x-token' in received


def test_credential_headers_kept_on_the_same_origin(raw_server) -> None:
    def answer(request: Request) -> bytes:
        if request.path == '/old':
            return b'HTTP/1.1 307 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n'
        return switching(request)

    server = Recording(raw_server, answer)
    drop(wspy.connect(f'ws://127.0.0.1:{server.port}/old', headers=CALLER_HEADERS))
    assert [r.target for r in server.requests] == ['/old', '/new']
    assert server.requests[1].headers['Cookie'] == 'session=s3cret'
    assert server.requests[1].headers['Authorization'] == 'Bearer t0ken'


def test_auth_not_sent_to_another_port(raw_server, start_server) -> None:
    challenge = (b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="r"\r\n'
                 b'Content-Length: 0\r\n\r\n')
    other = Recording(raw_server, lambda request: challenge)
    redirector = start_server(redirecting_to(f'ws://127.0.0.1:{other.port}/'))
    for credentials in ({'auth': ('alice', 'secret')}, {}):
        user = '' if credentials else 'alice:secret@'
        with pytest.raises(wspy.InvalidStatus) as info:
            wspy.connect(f'ws://{user}127.0.0.1:{redirector.address[1]}/', **credentials)
        assert info.value.status == 401
    assert len(other.requests) == 2
    assert all('Authorization' not in request.headers for request in other.requests)


# -- (12) websocket(auth=...) -------------------------------------------------------------------

def test_server_side_auth_must_be_an_authenticator() -> None:
    with pytest.raises(TypeError, match='BasicAuth'):
        wspy.websocket(auth='alice:pw')  # type: ignore[arg-type]
    with wspy.websocket(auth=('alice', 'pw')) as client_socket:
        client_socket.bind(('127.0.0.1', 0))
        with pytest.raises(TypeError, match='for a client'):
            client_socket.listen()
    for server_class in (wspy.Server, wspy.AsyncServer):
        with pytest.raises(TypeError, match='for a client'):
            server_class(('127.0.0.1', 0), auth=('alice', 'pw'))
        with pytest.raises(TypeError, match='BasicAuth'):
            server_class(('127.0.0.1', 0), auth=object())
    with socket.create_server(('127.0.0.1', 0)) as listener, \
            pytest.raises(TypeError, match='for a client'):
        wspy.Server(('127.0.0.1', 0), listener=listener, auth=('alice', 'pw'))


def test_the_password_is_not_in_the_type_error() -> None:
    with pytest.raises(TypeError) as info:
        wspy.websocket(auth=['alice', 'hunter2'])  # type: ignore[arg-type]
    assert 'hunter2' not in str(info.value)


def tls_listener(certs: Certs, **options: Any) -> wspy.websocket:
    listener = wspy.websocket(**options)
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    listener.enable_ssl(server_side=True, certfile=str(certs.server_cert),
                        keyfile=str(certs.server_key))
    return listener


def test_client_websocket_logs_in_over_tls(certs: Certs) -> None:
    listener = tls_listener(certs, auth=wspy.BasicAuth({'alice': 'pw'}), handshake_timeout=5)
    users: list[str | None] = []

    def accept_one() -> None:
        sock, _ = listener.accept()
        assert sock.request is not None
        users.append(sock.request.user)
        sock.close()

    thread = threading.Thread(target=accept_one)
    thread.start()
    client = wspy.websocket(host='localhost', auth=('alice', 'pw'), handshake_timeout=5)
    try:
        client.enable_ssl(cafile=str(certs.ca))
        client.connect(('127.0.0.1', listener.getsockname()[1]))
        thread.join(5)
        assert users == ['alice']
    finally:
        client.close()
        listener.close()


def test_client_websocket_never_sends_auth_in_plain_text(raw_server) -> None:
    server = Recording(raw_server)
    client = wspy.websocket(auth=('alice', 'pw'), handshake_timeout=5)
    try:
        with pytest.raises(wspy.InvalidState, match='TLS'):
            client.connect(('127.0.0.1', server.port))
    finally:
        client.close()
    assert server.requests == []


def test_client_websocket_never_sends_auth_to_an_unchecked_certificate(raw_server) -> None:
    server = Recording(raw_server)
    client = wspy.websocket(auth=('alice', 'pw'), handshake_timeout=5)
    try:
        client.enable_ssl(verify=False)
        with pytest.raises(wspy.InvalidState, match='TLS'):
            client.connect(('127.0.0.1', server.port))
    finally:
        client.close()
    assert server.requests == []
