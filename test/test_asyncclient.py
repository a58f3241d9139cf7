"""`AsyncClient`: client connections on the event loop, against every server kind."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

import wspy
from wspy.asyncclient import AsyncClient

from certs import Certs
from conftest import TIMEOUT, EchoServer, free_port, url

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Recorder(AsyncClient):
    """Sends `script` on open, records every callback, closes after `expect` messages."""

    def __init__(self, script: list[Any] = (), expect: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.script = list(script)
        self.expect = expect
        self.events: list[tuple[Any, ...]] = []
        self.done = threading.Condition()

    def record(self, *event: Any) -> None:
        with self.done:
            self.events.append(event)
            self.done.notify_all()

    def wait_for(self, kind: str, count: int = 1) -> list[tuple[Any, ...]]:
        with self.done:
            assert self.done.wait_for(
                lambda: sum(e[0] == kind for e in self.events) >= count, TIMEOUT), self.events
        return [e for e in self.events if e[0] == kind]

    def onopen(self, client: wspy.AsyncConnection) -> None:
        self.record('open', client.protocol)
        for message in self.script:
            client.send(message)

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        self.record('message', message.payload)
        if sum(e[0] == 'message' for e in self.events) == self.expect:
            client.close(1000, 'thanks')

    def onclose(self, client: wspy.AsyncConnection, code: int, reason: str) -> None:
        self.record('close', code, reason)

    def onconnecterror(self, connecting: wspy.Connecting, error: Exception) -> None:
        self.record('failed', error)


@pytest.fixture
def recorder() -> Any:
    made: list[Recorder] = []

    def make(*args: Any, **options: Any) -> Recorder:
        client = Recorder(*args, **options)
        client.start()
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()


def test_echo_text_binary_and_large(serve: Any, recorder: Any) -> None:
    server = serve()
    client = recorder(['hello', b'\x00\x01', PAYLOAD], expect=3)
    connecting = client.connect(url(server, '/path?q=1'), protocols=['chat'])
    assert client.wait_for('close') == [('close', 1000, '')]  # the server's answer
    assert server.wait_closes(1) == [('close', 1000, 'thanks')]
    assert [e[1] for e in client.wait_for('message')] == ['hello', b'\x00\x01', PAYLOAD]
    assert connecting.done and connecting.connection is not None
    assert not connecting.connection.server_side
    assert ('open', '/path?q=1') in server.events


def test_server_close_reaches_the_client(serve: Any, recorder: Any) -> None:
    class Closer(EchoServer):
        def onmessage(self, client: Any, message: wspy.Message) -> None:
            client.close(4000, 'bye')

    server = serve(Closer)
    client = recorder(['close me'])
    client.connect(url(server))
    assert client.wait_for('close') == [('close', 4000, 'bye')]


def test_refused_connection_is_reported(recorder: Any) -> None:
    client = recorder()
    connecting = client.connect(f'ws://127.0.0.1:{free_port()}/')
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, ConnectionRefusedError)
    assert connecting.error is error and connecting.connection is None


def test_http_error_is_reported(serve: Any, recorder: Any) -> None:
    class NotFound(EchoServer):
        def process_request(self, request: wspy.Request) -> wspy.Response | None:
            return wspy.Response(404, body=b'no such thing')

    server = serve(NotFound)
    client = recorder()
    client.connect(url(server))
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, wspy.InvalidStatus) and error.status == 404
    assert error.body == b'no such thing'  # as wspy.connect() gives it


def test_silent_server_times_out(recorder: Any) -> None:
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen()
        client = recorder()
        client.connect(f'ws://127.0.0.1:{silent.getsockname()[1]}/', handshake_timeout=0.3)
        [(_, error)] = client.wait_for('failed')
        assert isinstance(error, wspy.HandshakeTimeout)


def test_not_a_websocket_server_is_reported(recorder: Any) -> None:
    with socket.socket() as http:
        http.bind(('127.0.0.1', 0))
        http.listen()
        client = recorder()
        client.connect(f'ws://127.0.0.1:{http.getsockname()[1]}/')
        peer, _ = http.accept()
        peer.recv(4096)
        peer.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                     b'Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n')
        [(_, error)] = client.wait_for('failed')
        assert isinstance(error, wspy.HandshakeError)
        peer.close()


def test_bad_url_raises_at_once(recorder: Any) -> None:
    with pytest.raises(wspy.InvalidURI):
        recorder().connect('http://example.com/')


def test_host_name_is_resolved_off_the_loop(serve: Any, recorder: Any) -> None:
    server = serve()
    client = recorder(['by name'], expect=1)
    client.connect(f'ws://localhost:{server.address[1]}/')
    assert client.wait_for('message') == [('message', 'by name')]


def test_wss(serve: Any, recorder: Any, certs: Certs) -> None:
    server = serve(ssl_args={'certfile': certs.server_cert, 'keyfile': certs.server_key})
    client = recorder(['secure', PAYLOAD], expect=2, ssl_args={'cafile': certs.ca})
    client.connect(f'wss://localhost:{server.address[1]}/')
    assert [e[1] for e in client.wait_for('message', 2)] == ['secure', PAYLOAD]
    untrusting = recorder()
    untrusting.connect(f'wss://localhost:{server.address[1]}/')
    [(_, error)] = untrusting.wait_for('failed')
    assert isinstance(error, wspy.SSLError)


def test_unix_socket(serve: Any, recorder: Any, tmp_path: Any) -> None:
    path = str(tmp_path / 'server.sock')
    serve(address=path)
    client = recorder(['over unix'], expect=1)
    client.connect('ws://localhost/', unix_socket=path)
    assert client.wait_for('message') == [('message', 'over unix')]


def test_client_connections_on_the_server_loop() -> None:
    """A relay: an AsyncServer whose loop also drives a client connection to another server."""
    class Upstream(EchoServer, wspy.AsyncServer):
        def onmessage(self, client: Any, message: wspy.Message) -> None:
            client.send(f'upstream saw {message.payload}')

    upstream = Upstream(('127.0.0.1', 0), max_join_time=0.5)
    upstream.start()

    class Relay(wspy.AsyncServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.links: dict[Any, Any] = {}
            self.outbound = Outbound(self, loop=self.loop)

        def onopen(self, client: Any) -> None:
            self.links[self.outbound.connect(url(upstream))] = client

    class Outbound(AsyncClient):
        def __init__(self, relay: Relay, **options: Any) -> None:
            super().__init__(**options)
            self.relay = relay

        def onopen(self, client: Any) -> None:
            assert self.loop.in_loop_thread()
            client.send('via relay')

        def onmessage(self, client: Any, message: wspy.Message) -> None:
            for connecting, downstream in self.relay.links.items():
                if connecting.connection is client:
                    downstream.send(message)

    relay = Relay(('127.0.0.1', 0))
    relay.start()
    try:
        with wspy.connect(f'ws://127.0.0.1:{relay.address[1]}/') as conn:
            conn.sock.settimeout(TIMEOUT)
            assert conn.recv().payload == 'upstream saw via relay'
    finally:
        relay.outbound.shutdown()
        relay.shutdown()
        upstream.shutdown()


def test_shutdown_closes_with_1001(serve: Any) -> None:
    server = serve()
    client = Recorder()
    client.start()
    client.connect(url(server))
    client.wait_for('open')
    client.shutdown()
    assert server.wait_closes(1) == [('close', 1001, 'client shutting down')]
    with pytest.raises(wspy.InvalidState):
        client.connect(url(server))


CONNECTIONS = 10_000
IN_FLIGHT = 200


class Crowd(AsyncClient):
    """Opens CONNECTIONS connections, IN_FLIGHT handshakes at a time; each sends one message."""

    def __init__(self, target: str) -> None:
        super().__init__(ping_interval=None)
        self.target = target
        self.started = 0
        self.echoed = 0
        self.failures: list[Exception] = []
        self.all_echoed = threading.Event()

    def more(self) -> None:
        if self.started < CONNECTIONS:
            self.started += 1
            self.connect(self.target)

    def onopen(self, client: wspy.AsyncConnection) -> None:
        client.send(f'client {self.started}')
        self.more()

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        self.echoed += 1
        if self.echoed == CONNECTIONS:
            self.all_echoed.set()

    def onconnecterror(self, connecting: wspy.Connecting, error: Exception) -> None:
        self.failures.append(error)
        self.all_echoed.set()


def test_ten_thousand_connections_from_one_thread() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = CONNECTIONS + 500
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f'this test needs {needed} file descriptors; the hard limit is {hard}')
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    port = free_port()
    # The server in a process of its own, so that the client side is all this process does.
    server = subprocess.Popen(
        [sys.executable, '-c', 'import sys, wspy\n'
         'class Echo(wspy.AsyncServer):\n'
         '    def onmessage(self, client, message): client.send(message)\n'
         'server = Echo(("127.0.0.1", int(sys.argv[1])), backlog_size=1024, ping_interval=None)\n'
         'print("ready", flush=True)\n'
         'server.run()\n', str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == 'ready\n'
        crowd = Crowd(f'ws://127.0.0.1:{port}/')
        thread = crowd.start()
        for _ in range(IN_FLIGHT):
            crowd.call_soon_threadsafe(crowd.more)
        assert crowd.all_echoed.wait(120), f'{crowd.echoed} of {CONNECTIONS} echoed'
        assert crowd.failures == []
        assert crowd.echoed == CONNECTIONS
        assert len(crowd.clients) == CONNECTIONS  # all open at once
        assert thread.is_alive() and threading.active_count() < 20
        crowd.shutdown()
        assert not crowd.clients
    finally:
        server.terminate()
        server.wait(30)


def test_shutdown_of_a_client_never_run_returns() -> None:
    client = AsyncClient()
    client.shutdown()  # nothing runs its loop: nothing to wait for
    with pytest.raises(wspy.InvalidState):
        client.connect('ws://127.0.0.1:1/')


def test_broadcast_from_the_client_side_is_masked(serve: Any, recorder: Any) -> None:
    server = serve()
    client = recorder()
    for _ in range(2):
        client.connect(url(server))
    client.wait_for('open', 2)
    client.broadcast('to every server')
    messages = client.wait_for('message', 2)  # echoed: the server took the frames
    assert [e[1] for e in messages] == ['to every server'] * 2
    assert not [e for e in server.events if e[0] == 'error']
