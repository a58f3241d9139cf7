"""wspy.wsgi.HandOff: WebSockets handed from the WSGI server to an event loop in the worker."""

from __future__ import annotations

import os
import resource
import socket
import ssl
import threading
import time
from typing import Any

import pytest

import wspy
from wspy.asyncclient import AsyncClient
from wspy.asyncserver import AsyncConnection
from wspy.wsgi import HandOff, SocketUnavailable

from conftest import eventually
from certs import Certs
from test_wsgi import (EXAMPLES, UPGRADE, call, check_chat, get_page, gunicorn,
                       open_ws, werkzeug_server)
import wsgi_handoff_app


def test_options_are_checked_when_made() -> None:
    with pytest.raises(TypeError, match='max_mesage_size'):
        HandOff(max_mesage_size=1)  # type: ignore[call-arg]


def test_refusals_without_a_server() -> None:
    """A server without its socket: 500 saying so; a request that is no upgrade: 426. No
    loop is started for either."""
    hub = HandOff()
    status, _, body = call(hub, dict(UPGRADE))
    assert status.startswith('500 ') and b'does not give the client socket' in body
    status, headers, _ = call(hub, {**UPGRADE, 'HTTP_UPGRADE': ''})
    assert status.startswith('426 ') and ('Upgrade', 'websocket') in headers
    assert hub._loop is None


def test_a_loop_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop made before a fork is the parent's: the child makes and runs its own."""
    hub = HandOff()
    parent_loop = hub.loop
    try:
        monkeypatch.setattr(os, 'getpid', lambda: -1)
        child_loop = hub.loop
        try:
            assert child_loop is not parent_loop and hub.loop is child_loop
            assert not child_loop.in_loop_thread()  # running, on a thread of its own
        finally:
            hub.shutdown()
        monkeypatch.undo()
        assert hub._stopped.is_set()
    finally:
        parent_loop.stop()


def test_a_socket_handed_over_while_the_loop_stops_gets_a_503() -> None:
    """A request still in `process_request` when the loop stops is answered 503 by the
    server, not left without an answer on a loop that no longer runs."""
    checking, stopped = threading.Event(), threading.Event()

    def slow_check(request: Any) -> None:
        checking.set()
        assert stopped.wait(5)

    hub = HandOff(process_request=slow_check)
    assert hub.loop is not None  # started
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        result: list[Any] = []
        request = threading.Thread(target=lambda: result.append(
            call(hub, {**UPGRADE, 'wspy.socket': server_end})))
        request.start()
        assert checking.wait(5)
        hub.shutdown()
        stopped.set()
        request.join(5)
        status, headers, _ = result[0]
        assert status.startswith('503 ') and ('Retry-After', '1') in headers
        assert not hub._handed and not hub._loop._threadsafe  # nothing stranded


def test_max_connections_answers_503() -> None:
    hub = HandOff(max_connections=1, ping_interval=None)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        hub.accept({**UPGRADE, 'wspy.socket': pairs[0][0]})
        status, headers, _ = call(hub, {**UPGRADE, 'wspy.socket': pairs[1][0]})
        assert status.startswith('503 ') and ('Retry-After', '1') in headers
        pairs[0][1].settimeout(5)
        assert pairs[0][1].recv(4096).startswith(b'HTTP/1.1 101 ')
        assert eventually(lambda: len(hub.clients) == 1)
    finally:
        hub.shutdown()
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_503s_after_shutdown_keep_no_tracebacks() -> None:
    hub = HandOff()
    assert hub.loop is not None  # started
    hub.shutdown()
    errors = []
    for _ in range(3):
        server_end, client_end = socket.socketpair()
        with server_end, client_end:
            try:
                hub.accept({**UPGRADE, 'wspy.socket': server_end})
            except wspy.HandshakeError as error:
                errors.append(error)
    assert [error.status for error in errors] == [503] * 3
    assert len({id(error) for error in errors}) == 3  # each its own, with its own traceback


def test_handoff_on_werkzeug() -> None:
    """The request returns at once; the loop sends the 101, calls onopen, and broadcasts;
    pages go on; the view helper refuses a plain GET with 426."""
    with werkzeug_server(app=wsgi_handoff_app.app) as port:
        alice = open_ws(port, '/hub', protocols=['chat'], extensions=[wspy.DeflateMessage()])
        bob = open_ws(port, '/view')
        try:
            assert alice.recv().payload == 'hello /hub' and bob.recv().payload == 'hello /view'
            assert alice.protocol == 'chat' and alice.sock.hooks
            alice.send('whoami')
            assert alice.recv().payload == f'{os.getpid()} chat'
            bob.send('hi all')
            assert alice.recv().payload == 'hi all' and bob.recv().payload == 'hi all'
            assert get_page(port, '/count') == (200, f'2 {os.getpid()}')
            assert get_page(port, '/hub') == (200, 'page /hub')
            status, text = get_page(port, '/view')
            assert status == 426 and 'WebSocket endpoint' in text
        finally:
            alice.close()
            bob.close()
        assert (alice.close_code, bob.close_code) == (1000, 1000)
        assert eventually(lambda: not wsgi_handoff_app.hub.clients)


def test_tls_is_refused_at_the_first_upgrade(certs: Certs) -> None:
    """A TLS session cannot leave the server's SSLSocket: 500 saying so, at once."""
    with werkzeug_server(certs, app=wsgi_handoff_app.app) as port:
        started = time.monotonic()
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/hub', certs)
        assert refused.value.status == 500 and time.monotonic() - started < 2
        assert b'HandOff cannot take a TLS connection' in refused.value.body
        assert get_page(port, '/hub', certs) == (200, 'page /hub')
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    with context.wrap_socket(socket.socket(), server_side=True,
                             do_handshake_on_connect=False) as sock:
        hub = HandOff()
        with pytest.raises(SocketUnavailable, match='TLS'):
            hub.accept({**UPGRADE, 'wspy.socket': sock})
        assert hub._loop is None


class Crowd(AsyncClient):
    """Many clients of the hub in the test process: what they received, how they closed."""

    def __init__(self, expected: int) -> None:
        super().__init__(ping_interval=None, close_timeout=2)
        self.expected = expected
        self.lock = threading.Lock()
        self.opened = 0
        self.received: dict[str, int] = {}
        self.close_codes: dict[int, int] = {}
        self.failures: list[Exception] = []
        self.all_open = threading.Event()
        self.all_got = threading.Event()
        self.all_closed = threading.Event()

    def onopen(self, client: AsyncConnection) -> None:
        with self.lock:
            self.opened += 1
            if self.opened == self.expected:
                self.all_open.set()

    def onmessage(self, client: AsyncConnection, message: wspy.Message) -> None:
        with self.lock:
            count = self.received[message.payload] = self.received.get(message.payload, 0) + 1
            if message.payload == 'to all' and count == self.expected:
                self.all_got.set()

    def onclose(self, client: AsyncConnection, code: int, reason: str) -> None:
        with self.lock:
            self.close_codes[code] = self.close_codes.get(code, 0) + 1
            if sum(self.close_codes.values()) == self.expected:
                self.all_closed.set()

    def onconnecterror(self, connecting: Any, error: Exception) -> None:
        self.failures.append(error)
        self.all_open.set()


def _enough_descriptors(count: int) -> None:
    """Raise this process's soft limit on descriptors to `count` if it is lower (knowingly:
    the test holds a thousand sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count, hard), hard))


def test_gthread_worker_with_4_threads_holds_1000_websockets() -> None:
    """1,000 open WebSockets in one gthread worker of 4 threads: pages are served meanwhile,
    a broadcast reaches all of them, and the worker's exit closes them with 1001."""
    count = 1000
    _enough_descriptors(2 * count + 200)
    crowd = Crowd(count)
    crowd.start()
    try:
        with gunicorn('gthread', threads=4, app='wsgi_handoff_app:app',
                      args=('--graceful-timeout', '5')) as server:
            url = f'ws://127.0.0.1:{server.port}/hub'
            for _ in range(count):
                crowd.connect(url)
            assert crowd.all_open.wait(20) and not crowd.failures, crowd.failures[:3]
            status, text = get_page(server.port, '/count')
            assert status == 200 and text.split()[0] == str(count)
            assert get_page(server.port, '/page') == (200, 'page /page')
            with open_ws(server.port, '/hub') as sender:
                assert sender.recv().payload == 'hello /hub'
                sender.send('to all')
                assert sender.recv().payload == 'to all'
            assert crowd.all_got.wait(10), crowd.received
            assert get_page(server.port, '/page') == (200, 'page /page')
        assert crowd.all_closed.wait(5)
        assert crowd.close_codes == {1001: count}
    finally:
        crowd.shutdown()


def test_sync_worker_with_timeout_5_keeps_a_websocket_30_seconds() -> None:
    """The worker's timeout does not apply to a WebSocket handed off: the request returned."""
    with gunicorn('sync', app='wsgi_handoff_app:app', args=('--timeout', '5')) as server:
        with open_ws(server.port, '/hub', ping_interval=None) as connection:
            assert connection.recv().payload == 'hello /hub'
            connection.send('whoami')
            worker = connection.recv().payload.split()[0]
            started = time.monotonic()
            for second in (10, 20, 30):
                time.sleep(max(0.0, started + second - time.monotonic()))
                assert get_page(server.port, '/page') == (200, 'page /page')
                connection.send(f'still here at {second} s')
                assert connection.recv().payload == f'still here at {second} s'
            connection.send('whoami')
            assert connection.recv().payload.split()[0] == worker
        assert connection.close_code == 1000
    assert 'WORKER TIMEOUT' not in server.log


def test_flask_handoff_example_on_gunicorn_sync() -> None:
    """The example's chat, one sync worker: no thread held by its WebSockets."""
    with gunicorn('sync', app='flask_handoff:app', chdir=EXAMPLES) as server:
        check_chat(server.port)
