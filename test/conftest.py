"""Shared fixtures: echo servers on 127.0.0.1 port 0 and a raw byte-level client."""

from __future__ import annotations

import base64
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy
from wspy.protocol.frame import FrameParser
from wspy.protocol.handshake import HeadReader, parse_response

from certs import Certs, make_certs

TIMEOUT = 10.0


class EchoServer(wspy.BaseServer):
    """Echoes every message and records what happened, for assertions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[Any, ...]] = []
        self.closed = threading.Condition()

    def onopen(self, client: wspy.ServerConnection) -> None:
        self.events.append(('open', client.request.target))

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        client.send(message)

    def onping(self, client: wspy.ServerConnection, payload: bytes) -> None:
        self.events.append(('ping', payload))

    def onclose(self, client: wspy.ServerConnection, code: int, reason: str) -> None:
        with self.closed:
            self.events.append(('close', code, reason))
            self.closed.notify_all()

    def onerror(self, client: wspy.ServerConnection, error: Exception) -> None:
        self.events.append(('error', error))

    def wait_closes(self, count: int, timeout: float = TIMEOUT) -> list[tuple[Any, ...]]:
        """Wait for `count` onclose calls; returns the close events."""
        def closes() -> list[tuple[Any, ...]]:
            return [e for e in self.events if e[0] == 'close']
        with self.closed:
            assert self.closed.wait_for(lambda: len(closes()) >= count, timeout), self.events
        return closes()


# The servers every end-to-end test runs against: a class and its options.
SERVERS = {
    'Server': (wspy.Server, {}),
    'AsyncServer-epoll': (wspy.AsyncServer, {'selector': getattr(selectors, 'EpollSelector',
                                                                 selectors.DefaultSelector)}),
    'AsyncServer-poll': (wspy.AsyncServer, {'selector': selectors.PollSelector}),
    'AsyncServer-select': (wspy.AsyncServer, {'selector': selectors.SelectSelector}),
}

ServerFactory = Callable[..., Any]


def server_factory(base: type, base_options: dict[str, Any]) -> ServerFactory:
    """`make(handler, address, **options)`: a server of class `base` with `handler`'s callbacks.

    `handler` is a class with callbacks (an `EchoServer` by default); it is
    combined with `base` unless it already is one.
    """
    def make(handler: type | None = None, address: Any = ('127.0.0.1', 0),
             **options: Any) -> Any:
        handler = handler or EchoServer
        bases: tuple[type, ...] = (handler,)
        if not issubclass(handler, base):
            bases = (*bases, base)
        return type('TestServer', bases, {})(address, **{**base_options, **options})

    return make


@contextlib.contextmanager
def running(make: ServerFactory) -> Iterator[Callable[..., Any]]:
    """`start(handler, **options)` starts servers made by `make`; all shut down at the end."""
    servers: list[wspy.BaseServer] = []

    def start(handler: type | None = None, **options: Any) -> Any:
        server = make(handler, **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


@pytest.fixture(params=list(SERVERS))
def make_server(request: pytest.FixtureRequest) -> ServerFactory:
    """Build a server of each kind in turn: `make_server(handler, address, **options)`."""
    return server_factory(*SERVERS[request.param])


@pytest.fixture
def serve(make_server: ServerFactory) -> Iterator[Callable[..., Any]]:
    """Start a server (by default an echo server) on a free port; shut down afterwards."""
    with running(make_server) as start:
        yield start


def url(server: wspy.Server, path: str = '/') -> str:
    """The ws:// (or, for a TLS server, wss://) URL of a server started by `serve`."""
    scheme = 'ws' if server.ssl_context is None else 'wss'
    return f'{scheme}://127.0.0.1:{server.address[1]}{path}'


def upgrade_request(path: str = '/', extra: str = '', key: str | None = None,
                    version: str = '13') -> bytes:
    """A valid client upgrade request, with `extra` header lines appended."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (f'GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n'
            f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
            f'Sec-WebSocket-Version: {version}\r\n{extra}\r\n').encode()


class RawClient:
    """A plain TCP client that speaks bytes, for feeding servers bad input."""

    def __init__(self, server: wspy.Server) -> None:
        self.sock = socket.create_connection(('127.0.0.1', server.address[1]), timeout=TIMEOUT)
        self.parser = FrameParser(require_mask=False, max_frame_size=None)

    def handshake(self, request: bytes | None = None,
                  ) -> tuple[int, wspy.protocol.handshake.Headers, bytes]:
        """Send an upgrade request; the status, headers and whatever followed the head."""
        self.sock.sendall(request or upgrade_request())
        reader = HeadReader()
        head = None
        while head is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('closed before a response')
            head = reader.feed(data)
        status, _, headers = parse_response(head)
        if status == 101:
            self.parser.feed(reader.rest)
        return status, headers, reader.rest

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b'', final: bool = True,
                   **flags: Any) -> None:
        """Send a masked frame."""
        self.send(wspy.Frame(opcode, payload, os.urandom(4), final, **flags).pack())

    def recv_frame(self) -> wspy.Frame | None:
        """The next frame from the server, or None at end of file."""
        frame = self.parser.next_frame()
        while frame is None:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.parser.feed(data)
            frame = self.parser.next_frame()
        return frame

    def recv_close(self) -> tuple[int | None, str]:
        """Skip to the server's close frame; its code and reason."""
        while True:
            frame = self.recv_frame()
            assert frame is not None, 'connection ended without a close frame'
            if frame.opcode == wspy.OPCODE_CLOSE:
                return frame.unpack_close()

    def read_to_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        chunks = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b''.join(chunks)
            chunks.append(data)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture(scope='session')
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA, a server certificate for localhost and a client certificate."""
    return make_certs(tmp_path_factory.mktemp('certs'))


@pytest.fixture
def raw_client() -> Iterator[Callable[[wspy.Server], RawClient]]:
    """Open raw clients to a server; all are closed afterwards."""
    clients: list[RawClient] = []

    def open_client(server: wspy.Server) -> RawClient:
        client = RawClient(server)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether `condition()` turns true within `timeout` seconds (checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def in_threads(function: Callable[[int], object], count: int, timeout: float = 30) -> None:
    """Run `function(0)` ... `function(count - 1)` at once, each in a thread; re-raise a failure."""
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            function(number)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def served_meanwhile(server: wspy.BaseServer) -> Iterator[None]:
    """A client connected before the block and still echoed after it."""
    conn = wspy.connect(url(server), ssl_args=None if server.ssl_context is None
                        else {'verify': False})
    try:
        yield
        conn.send('served meanwhile')
        assert conn.recv().payload == 'served meanwhile'
    finally:
        conn.close()


def assert_echoes(server: wspy.Server, message: str = 'still serving') -> None:
    """A fresh client on `server` gets its message echoed."""
    conn = wspy.connect(url(server), ssl_args=None if server.ssl_context is None
                        else {'verify': False})
    try:
        conn.send(message)
        assert conn.recv().payload == message
    finally:
        conn.close()


# -- worker processes: test/worker_app.py ---------------------------------------------

HERE = Path(__file__).parent


class App:
    """`test/worker_app.py` in a process of its own, with its log kept."""

    def __init__(self, address: str, *extra: str, log: Path) -> None:
        self.address = address
        self.log_path = log
        self.log = log.open('w')
        self.process = subprocess.Popen([sys.executable, str(HERE / 'worker_app.py'), address,
                                         *extra], stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == 'ready\n'

    def connect(self, **options: Any) -> wspy.Connection:
        """A connection to one of the workers (retried while none listens yet)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                if self.address.startswith('/'):
                    conn = wspy.connect('ws://localhost/', unix_socket=self.address, **options)
                else:
                    conn = wspy.connect(f'ws://{self.address}/', **options)
                conn.sock.settimeout(TIMEOUT)
                return conn
            except (ConnectionError, FileNotFoundError, wspy.HandshakeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(TIMEOUT)
        finally:
            self.log.close()

    def logged(self) -> str:
        return self.log_path.read_text()


def pid_of(conn: wspy.Connection) -> int:
    conn.send('pid')
    return int(conn.recv().payload)


def connections_to(app: App, pids: int, exclude: set[int] = frozenset(),
                   timeout: float = TIMEOUT) -> dict[int, wspy.Connection]:
    """Connect until `pids` different workers (none in `exclude`) hold one connection each."""
    found: dict[int, wspy.Connection] = {}
    deadline = time.monotonic() + timeout
    while len(found) < pids:
        assert time.monotonic() < deadline, f'only reached workers {sorted(found)}'
        conn = app.connect()
        pid = pid_of(conn)
        if pid in found or pid in exclude:
            conn.close()
            time.sleep(0.01)
        else:
            found[pid] = conn
    return found


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def start(address: str | None = None, *extra: str) -> App:
        made = App(address or f'127.0.0.1:{free_port()}', *extra,
                   log=tmp_path / f'app{len(apps)}.log')
        apps.append(made)
        return made

    yield start
    for made in apps:
        if made.process.poll() is None:
            made.process.kill()
            made.process.wait()
        made.log.close()
