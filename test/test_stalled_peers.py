"""Peers that stop reading, stay silent or trickle: every wait stays bounded.

Each test here guards a defect that a hostile or careless peer could hit:
a blocked write froze the keepalive of every connection, `shutdown()` and
`close()` outlived their timeouts, silent clients each held a thread of the
threaded `Server`, and a connection that only sends was failed by its own
keepalive.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import wspy
from wspy.protocol.frame import OPCODE_CLOSE, FrameParser

from conftest import EchoServer, url


def raw_websocket(server: Any, **options: Any) -> wspy.websocket:
    """A client `websocket` whose handshake is done: the test reads and writes it by hand."""
    sock = wspy.websocket(**options)
    sock.connect(server.address)
    return sock


def flood(sock: wspy.websocket, size: int = 12 << 20) -> threading.Thread:
    """Send `size` bytes of echo requests from a thread, never reading the echoes."""
    frame = wspy.Frame(wspy.OPCODE_BINARY, os.urandom(64 << 10), masking_key=b'abcd').pack()

    def send() -> None:
        try:
            for _ in range(size // len(frame)):
                socket.socket.sendall(sock, frame)
        except OSError:
            pass  # the server dropped this client, as it should

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def read_to_end(sock: socket.socket, timeout: float) -> bytes | None:
    """What arrives until end of file (or a reset); None if it does not end within `timeout`."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = socket.socket.recv(sock, 65536)
        except TimeoutError:
            return None
        except OSError:
            return bytes(received)
        if not data:
            return bytes(received)
        received += data


def close_codes(data: bytes) -> list[int]:
    """The codes of the close frames in what a server sent."""
    parser = FrameParser(require_mask=False, max_frame_size=None)
    parser.feed(data)
    return [int.from_bytes(frame.payload[:2], 'big')
            for frame in iter(parser.next_frame, None) if frame.opcode == OPCODE_CLOSE]


@pytest.fixture
def threaded() -> Iterator[list[wspy.Server]]:
    """Servers started by a test, shut down at its end."""
    servers: list[wspy.Server] = []
    yield servers
    for server in servers:
        server.shutdown()


def start(servers: list[Any], cls: type = wspy.Server, **options: Any) -> Any:
    server = type('Echo', (EchoServer, cls), {})(('127.0.0.1', 0), **options)
    server.start()
    servers.append(server)
    return server


def test_a_peer_that_never_reads_does_not_freeze_keepalive(threaded: list[Any]) -> None:
    """Client A floods and never reads; B never answers pings: B is still failed (1011)
    within the ping timeout, and A is dropped after write_timeout."""
    server = start(threaded, ping_interval=1, ping_timeout=1, write_timeout=2)
    flooder = raw_websocket(server)
    silent = raw_websocket(server)
    try:
        sender = flood(flooder)
        began = time.monotonic()
        received = read_to_end(silent, 6)
        assert received is not None and close_codes(received) == [1011]
        assert time.monotonic() - began < 6
        sender.join(10)
        assert not sender.is_alive()  # A was dropped: its sends failed
        closes = server.wait_closes(2)
        assert sorted(event[1] for event in closes) == [1006, 1011]
    finally:
        flooder.close()
        silent.close()


@pytest.mark.parametrize('cls', [wspy.Server, wspy.AsyncServer])
def test_shutdown_returns_in_time_with_a_peer_that_never_reads(threaded: list[Any],
                                                               cls: type) -> None:
    server = start([], cls, max_join_time=2, write_timeout=30, ping_interval=None)
    flooder = raw_websocket(server)
    try:
        flood(flooder)
        time.sleep(1)  # the echoes fill the socket buffers: the server's writes block
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 2 + 1 + 1.5
    finally:
        flooder.close()


@pytest.fixture
def deaf_server() -> Iterator[tuple[str, Any]]:
    """A server that completes the handshake, then never reads: its URL and address."""
    listener = wspy.websocket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    stop = threading.Event()
    held: list[wspy.websocket] = []

    def accept() -> None:
        sock, _ = listener.accept()
        held.append(sock)
        stop.wait(30)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = listener.getsockname()
    yield f'ws://127.0.0.1:{address[1]}/', address
    stop.set()
    thread.join(5)
    for sock in held:
        sock.close()
    listener.close()


def test_client_close_returns_while_another_thread_is_blocked_sending(
        deaf_server: tuple[str, Any]) -> None:
    conn = wspy.connect(deaf_server[0], close_timeout=2, write_timeout=60, ping_interval=None)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            while True:
                conn.send(b'x' * (1 << 20))
        except BaseException as error:
            errors.append(error)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(0.5)  # the socket buffers fill: the sender blocks, holding the send lock
    began = time.monotonic()
    conn.close()
    assert time.monotonic() - began < 2 + 1
    sender.join(3)
    assert not sender.is_alive()
    assert isinstance(errors[0], wspy.ConnectionClosed), errors
    assert conn.closed and conn.close_code == 1006


def test_a_write_that_makes_no_progress_times_out(deaf_server: tuple[str, Any]) -> None:
    closes: list[int] = []

    class Recorder(wspy.Connection):
        def onclose(self, code: int, reason: str) -> None:
            closes.append(code)

    sock = wspy.websocket(write_timeout=1)
    sock.connect(deaf_server[1])
    conn = Recorder(sock, ping_interval=None)
    began = time.monotonic()
    with pytest.raises(wspy.WriteTimeout):
        while time.monotonic() - began < 20:
            conn.send(b'x' * (1 << 20))
    assert time.monotonic() - began < 1 + 3
    assert closes == [1006] and conn.closed
    with pytest.raises(wspy.ConnectionClosed):
        conn.send('after the timeout')


def test_silent_clients_hold_no_thread_and_get_408_in_time(threaded: list[Any]) -> None:
    server = start(threaded, handshake_timeout=1, backlog_size=1024)
    threads_before = threading.active_count()
    socks = [socket.create_connection(server.address) for _ in range(300)]
    try:
        time.sleep(0.3)
        assert threading.active_count() - threads_before < 10
        began = time.monotonic()
        for sock in socks:
            received = read_to_end(sock, max(0.1, began + 2.5 - time.monotonic()))
            assert received is not None and received.startswith(b'HTTP/1.1 408 ')
        assert time.monotonic() - began < 2.5
    finally:
        for sock in socks:
            sock.close()


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname='localhost')
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize('cls', [wspy.Server, wspy.AsyncServer])
def test_trickled_client_hellos_are_dropped_at_the_handshake_timeout(
        threaded: list[Any], certs: Any, cls: type) -> None:
    server = start(threaded, cls, handshake_timeout=1,
                   ssl_args={'certfile': certs.server_cert, 'keyfile': certs.server_key})
    hello = client_hello()
    threads_before = threading.active_count()
    socks = [socket.create_connection(server.address) for _ in range(30)]
    try:
        began = time.monotonic()
        ended: set[int] = set()
        index = 0
        while len(ended) < len(socks) and time.monotonic() - began < 4:
            for number, sock in enumerate(socks):
                if number in ended:
                    continue
                try:
                    sock.send(hello[index:index + 1])
                    sock.settimeout(0.01)
                    if sock.recv(4096) == b'':
                        ended.add(number)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    ended.add(number)
            index += 1
            time.sleep(0.1)
            assert threading.active_count() - threads_before < 10
        assert len(ended) == len(socks)
        assert time.monotonic() - began < 1 + 1.5
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize('cls', [wspy.Server, wspy.AsyncServer])
def test_a_connection_that_only_sends_stays_alive(threaded: list[Any], cls: type) -> None:
    """Pongs are seen while the application never calls recv(); messages wait for it."""
    server = start(threaded, cls, ping_interval=None)
    conn = wspy.connect(url(server), ping_interval=0.2, ping_timeout=0.3)
    try:
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < 2:
            conn.send(f'message {sent}')
            sent += 1
            time.sleep(0.05)
        assert conn.latency is not None and conn.latency < 0.1
        assert not conn.closed
        for number in range(sent):  # the echoes, kept in order for recv()
            assert conn.recv().payload == f'message {number}'
    finally:
        conn.close()
    assert conn.close_code == 1000


def test_a_flood_to_one_idle_client_holds_up_no_other_keepalive(
        deaf_server: tuple[str, Any]) -> None:
    """One server floods pings at a client that nobody receives on; another client's
    peer never answers: that client is still failed (1011) and finished in time."""
    listener = wspy.websocket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    stop = threading.Event()
    ping = wspy.ControlFrame(wspy.OPCODE_PING, b'flood').pack() * 1000

    def flood_pings() -> None:
        sock, _ = listener.accept()
        try:
            while not stop.is_set():
                socket.socket.sendall(sock, ping)
        except OSError:
            pass
        finally:
            sock.close()

    flooder = threading.Thread(target=flood_pings, daemon=True)
    flooder.start()
    flooded = wspy.connect(f'ws://127.0.0.1:{listener.getsockname()[1]}/', ping_interval=0.1,
                           ping_timeout=60)
    unanswered = wspy.connect(deaf_server[0], ping_interval=0.2, ping_timeout=0.3)
    try:
        time.sleep(0.2)  # the flood is under way
        began = time.monotonic()
        while not unanswered.closed and time.monotonic() - began < 5:
            time.sleep(0.02)
        assert unanswered.closed and unanswered.close_code == 1011
        assert time.monotonic() - began < 2
    finally:
        stop.set()
        flooded.abort()
        flooder.join(5)
        flooded.close()
        unanswered.close()
        listener.close()
