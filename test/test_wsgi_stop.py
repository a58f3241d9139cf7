"""Graceful stop: wspy.wsgi.close_all closes the blocking WebSockets of a process with 1001,
and close_all_on_signals does it when gunicorn tells a worker to stop or reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import wspy
import wspy.wsgi
from wspy.wsgi import WebSocketApplication, close_all, stopping

from conftest import eventually
from test_wsgi import get_page, gunicorn, open_ws, wsgiref_server
import wsgi_app

HOOK = """import wspy.wsgi

def post_worker_init(worker):
    wspy.wsgi.close_all_on_signals()
"""


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """close_all leaves the process refusing upgrades: each test gets its own state."""
    monkeypatch.setattr(stopping, '_process', stopping._Process())
    yield


def echoed(connection: wspy.Connection, text: str) -> bool:
    connection.send(text)
    return connection.recv().payload == text


def closed_with(connection: wspy.Connection) -> int | None:
    """Receive until the connection closes (within 5 s): the code the server closed with."""
    timer = threading.Timer(5, connection.abort)
    timer.start()
    try:
        with pytest.raises(wspy.ConnectionClosed):
            while True:
                connection.recv()
    finally:
        timer.cancel()
    return connection.close_code


def test_close_all_closes_with_1001_then_refuses_upgrades() -> None:
    """Handlers receiving, or only waiting (their connection dropped after close_timeout),
    and a view's accept(): all closed; the next upgrade gets 503, pages go on."""
    idle = threading.Event()

    def wait_only(connection: wspy.Connection) -> None:
        connection.send('waiting')
        idle.wait(5)  # receives nothing: its close is not seen through here

    app = WebSocketApplication(wsgi_app.echo, fallback=wsgi_app.page)
    waiting = WebSocketApplication(wait_only, close_timeout=0.3)

    def route(environ: dict[str, object], start_response: wspy.wsgi.StartResponse) -> object:
        if environ.get('PATH_INFO') == '/wait':
            return waiting(environ, start_response)
        return app(environ, start_response)

    with wsgiref_server(route) as port:  # type: ignore[arg-type]
        echoes = [open_ws(port, '/') for _ in range(2)]
        assert all(echoed(connection, 'before') for connection in echoes)
        quiet = open_ws(port, '/wait', close_timeout=0.3)
        assert quiet.recv().payload == 'waiting'
        started = time.monotonic()
        close_all(wait=0)  # the clients answer the close frames as they receive them
        assert [closed_with(connection) for connection in echoes] == [1001, 1001]
        assert echoes[0].close_reason == 'server shutting down'
        assert closed_with(quiet) in (1001, 1006)
        assert time.monotonic() - started < 2
        idle.set()
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/')
        assert refused.value.status == 503
        assert get_page(port, '/page') == (200, 'page /page')
        assert eventually(lambda: app.open_count == 0)


def test_close_all_reaches_a_view_using_accept() -> None:
    with wsgiref_server() as port:
        connection = open_ws(port, '/view')
        assert connection.recv().payload == 'view says hi'
        close_all(code=1012, reason='restarting', wait=0)
        assert closed_with(connection) == 1012 and connection.close_reason == 'restarting'


@pytest.mark.parametrize('worker', ['sync', 'gthread'])
def test_gunicorn_graceful_stop_closes_websockets_with_1001(worker: str,
                                                             tmp_path: Path) -> None:
    """SIGTERM to the master: each worker closes its WebSockets with 1001 at once, then
    exits, well within a graceful timeout of 10 s."""
    config = tmp_path / 'gunicorn_conf.py'
    config.write_text(HOOK)
    threads = 1 if worker == 'sync' else 3
    with gunicorn(worker, threads=threads,
                  args=('--config', str(config), '--graceful-timeout', '10')) as server:
        held = [open_ws(server.port, '/echo') for _ in range(threads if threads == 1 else 2)]
        assert all(echoed(connection, 'before') for connection in held)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert [closed_with(connection) for connection in held] == [1001] * len(held)
        server.process.wait(5)
        assert time.monotonic() - started < 4
    assert 'Worker exiting' in server.log


def test_gunicorn_reload_closes_websockets_with_1001(tmp_path: Path) -> None:
    """SIGHUP: the old worker is told to stop and closes its WebSocket with 1001; the new
    worker serves the client when it comes back."""
    config = tmp_path / 'gunicorn_conf.py'
    config.write_text(HOOK)
    with gunicorn('gthread', threads=2,
                  args=('--config', str(config), '--graceful-timeout', '10')) as server:
        connection = open_ws(server.port, '/echo')
        assert echoed(connection, 'before')
        booted = server.log.count('Booting worker')
        server.process.send_signal(signal.SIGHUP)
        assert closed_with(connection) == 1001
        assert eventually(lambda: server.log.count('Booting worker') > booted)
        with open_ws(server.port, '/echo') as again:
            assert echoed(again, 'after')


SERVE = """import signal, sys
sys.path.insert(0, sys.argv[1])
import wsgi_app
import wspy.wsgi
server = wspy.wsgi.make_server('127.0.0.1', 0, wsgi_app.app)
wspy.wsgi.close_all_on_signals([signal.SIGTERM])
print(server.server_port, flush=True)
server.serve_forever()
"""


def test_close_all_on_a_signal_that_ended_the_process() -> None:
    """A signal left to its default action (SIGTERM of a plain process): the WebSockets are
    closed with 1001 first, then the process ends by the signal."""
    test_dir = Path(__file__).resolve().parent
    process = subprocess.Popen([sys.executable, '-c', SERVE, str(test_dir)],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, 'PYTHONPATH': str(test_dir.parent)})
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        connection = open_ws(port, '/echo')
        assert echoed(connection, 'before')
        process.send_signal(signal.SIGTERM)
        assert closed_with(connection) == 1001
        assert process.wait(5) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()


def test_close_all_on_signals_checks_before_installing_anything() -> None:
    """A bad reason, or a signal that does not stop a process, is a ValueError at once and
    installs nothing; a signal the process ignores is left ignored."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError):
        wspy.wsgi.close_all_on_signals(reason='x' * 200)
    with pytest.raises(ValueError, match='SIGWINCH'):
        wspy.wsgi.close_all_on_signals([signal.SIGTERM, signal.SIGWINCH])
    assert signal.getsignal(signal.SIGTERM) is before
    ignored = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        wspy.wsgi.close_all_on_signals([signal.SIGUSR1])
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, ignored)
    with pytest.raises(ValueError):
        close_all(reason='x' * 200)
    assert not stopping._process.going_away.is_set()


def test_close_all_closes_connections_together_not_one_after_another() -> None:
    """Each connection whose handler is stuck sending may take its close_timeout: three of
    them take about one close_timeout, not three."""
    def flood(connection: wspy.Connection) -> None:
        connection.send(b'x' * (64 << 20))  # to a client that reads nothing: stuck

    app = WebSocketApplication(flood, close_timeout=1.0, ping_interval=None)
    with wsgiref_server(app) as port:
        clients = [open_ws(port, '/') for _ in range(3)]
        assert eventually(lambda: len(stopping._process.connections) == 3)
        time.sleep(0.2)  # the handlers are in send()
        started = time.monotonic()
        close_all()
        elapsed = time.monotonic() - started
        for client in clients:
            client.abort()
    assert elapsed < 2.5, f'{elapsed:.1f} s for three connections of close_timeout 1 s'
