"""gevent: gunicorn's gevent workers and gevent.pywsgi serve WebSockets, one greenlet each.

Under gevent a request runs on a greenlet, and `wspy.wsgi` reads and writes
the socket through the server's own (gevent's) socket object, waiting with
`gevent.select.poll`: a WebSocket that waits yields to the others. Run with
and without gevent's monkey-patching (which replaces `socket.socket`: wspy's
sockets keep the standard library's class), over ws and wss.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import wspy
from wspy.wsgi import WebSocketApplication

from certs import Certs
from conftest import eventually
from test_wsgi import (CLOSE_1000, KEY, ROOT, TEST_DIR, check_echo, check_view, client_context,
                       get_page, gunicorn, open_ws)

MODES = ['patched', 'unpatched']


def check_greenlets(port: int, certs: Certs | None = None, count: int = 20) -> None:
    """`count` WebSockets open at once, each answered, and pages meanwhile."""
    held = [open_ws(port, '/echo', certs) for _ in range(count)]
    try:
        for index, connection in enumerate(held):
            connection.send(f'still here {index}')
        for index, connection in reversed(list(enumerate(held))):
            assert connection.recv().payload == f'still here {index}'
        assert get_page(port, '/page', certs) == (200, 'page /page')
    finally:
        for connection in held:
            connection.close()
    assert all(connection.close_code == 1000 for connection in held)


@pytest.mark.parametrize('worker', ['gevent', 'gevent_pywsgi'])
def test_gunicorn_gevent_workers(worker: str) -> None:
    with gunicorn(worker, app='wsgi_gevent_app:app') as server:
        check_echo(server.port)
        check_view(server.port)
        check_greenlets(server.port)
        check_flood_leaves_the_others_served(server.port)
    assert f'Using worker: {worker}' in server.log


@pytest.mark.parametrize('worker', ['gevent', 'gevent_pywsgi'])
def test_gunicorn_gevent_workers_wss(worker: str, certs: Certs) -> None:
    with gunicorn(worker, certs=certs) as server:
        check_echo(server.port, certs)
        check_view(server.port, certs)
        check_greenlets(server.port, certs, count=5)


# -- gevent.pywsgi ------------------------------------------------------------------------

PYWSGI = """import sys
mode, handler, tls = sys.argv[2:5]
if mode == 'patched':
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, sys.argv[1])
from gevent.pywsgi import WSGIServer, WSGIHandler
import wsgi_gevent_app
if handler == 'wspy':
    from wspy.wsgi.gevent import WSGIHandler
tls_files = {} if tls == '-' else dict(zip(('certfile', 'keyfile'), tls.split(',')))
server = WSGIServer(('127.0.0.1', 0), wsgi_gevent_app.app, log=None, handler_class=WSGIHandler,
                    **tls_files)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def pywsgi(mode: str, handler: str = 'wspy', certs: Certs | None = None) -> Iterator[int]:
    """A gevent.pywsgi server of wsgi_gevent_app in a process; its port. No traceback logged."""
    tls = '-' if certs is None else f'{certs.server_cert},{certs.server_key}'
    process = subprocess.Popen([sys.executable, '-c', PYWSGI, str(TEST_DIR), mode, handler, tls],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert 'Traceback' not in errors, errors


@pytest.mark.parametrize('mode', MODES)
def test_gevent_pywsgi(mode: str) -> None:
    with pywsgi(mode) as port:
        check_echo(port)
        check_view(port)
        check_greenlets(port)
        check_flood_leaves_the_others_served(port)


@pytest.mark.parametrize('mode', MODES)
def test_gevent_pywsgi_wss(mode: str, certs: Certs) -> None:
    with pywsgi(mode, certs=certs) as port:
        check_echo(port, certs)
        check_view(port, certs)
        check_flood_leaves_the_others_served(port, certs)


def check_flood_leaves_the_others_served(port: int, certs: Certs | None = None) -> None:
    """A handler writing to a client that does not read waits on its greenlet only: other
    WebSockets and pages are served meanwhile, and the write ends in `WriteTimeout`."""
    flooded = open_ws(port, '/flood', certs, ping_interval=None)  # never reads
    try:
        assert eventually(lambda: _stalled(flooded), timeout=5)
        started = time.monotonic()
        with open_ws(port, '/echo', certs) as other:
            other.send('meanwhile')
            assert other.recv().payload == 'meanwhile'
        assert get_page(port, '/flood-result', certs) == (200, 'running')
        assert time.monotonic() - started < 1.5  # within the flood's write_timeout (2 s)
        assert eventually(lambda: get_page(port, '/flood-result', certs)[1] != 'running',
                          timeout=10)
        assert get_page(port, '/flood-result', certs) == (200, 'WriteTimeout')
    finally:
        flooded.abort()


def _queued(connection: wspy.Connection) -> int:
    """Bytes arrived on the client's socket and not read."""
    queued = array.array('i', [0])
    fcntl.ioctl(connection.sock.fileno(), termios.FIONREAD, queued)
    return queued[0]


def _stalled(connection: wspy.Connection) -> bool:
    """Whether the server's writes have stopped: the bytes queued no longer grow."""
    before = _queued(connection)
    time.sleep(0.1)
    return before > 0 and _queued(connection) == before


@pytest.mark.parametrize('mode', MODES)
def test_keepalive_on_a_greenlet(mode: str) -> None:
    """The keepalive pings and reads the pong while the handler only sends."""
    with pywsgi(mode) as port, open_ws(port, '/pong') as connection:
        assert connection.recv().payload == 'pong seen: True'


def test_gevent_pywsgi_without_the_handler_says_so() -> None:
    """gevent.pywsgi's own handler does not give the socket: a 500 saying what to use."""
    with pywsgi('unpatched', handler='gevent') as port:
        started = time.monotonic()
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/echo')
        assert refused.value.status == 500 and time.monotonic() - started < 2
        assert b'wspy.wsgi.gevent.WSGIHandler' in refused.value.body
        assert get_page(port, '/page') == (200, 'page /page')


def test_hand_off_on_a_greenlet_says_so() -> None:
    """HandOff hands sockets to a loop on an OS thread: on a greenlet, a 500 saying what to
    use instead; the WebSockets of WebSocketApplication go on."""
    with pywsgi('patched') as port:
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/handoff')
        assert refused.value.status == 500
        assert b'WebSocketApplication' in refused.value.body
        check_echo(port)


def test_another_patching_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket module patched by another library than gevent (websocket then not a
    `_socket.socket`): the upgrade is refused at once, with what to use."""
    import wspy.wsgi.request as request

    monkeypatch.setattr(request, 'websocket', object)
    environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/', 'SERVER_PROTOCOL': 'HTTP/1.1',
               'HTTP_UPGRADE': 'websocket', 'HTTP_CONNECTION': 'Upgrade',
               'HTTP_SEC_WEBSOCKET_KEY': 'dGhlIHNhbXBsZSBub25jZQ==',
               'HTTP_SEC_WEBSOCKET_VERSION': '13'}
    answers: list[str] = []
    body = WebSocketApplication(lambda connection: None)(
        environ, lambda status, headers, exc_info=None: answers.append(status))
    assert answers[0].startswith('500') and b'other than gevent' in b''.join(body)


@pytest.mark.parametrize('mode', MODES)
def test_greenlets_sending_to_a_client_that_does_not_read(mode: str) -> None:
    """Two greenlets send to one client that does not read: the second waits for the first's
    send lock (without gevent's patching too, where wspy's locks are the standard library's)
    while pages are served; the write timeout ends both."""
    with pywsgi(mode) as port:
        stalled = open_ws(port, '/shared?name=stalled', ping_interval=None)  # never reads
        first = open_ws(port, '/shared?name=first')
        second = open_ws(port, '/shared?name=second')
        try:
            first.send('flood stalled')
            assert eventually(lambda: _stalled(stalled), timeout=5)
            second.send('send stalled')
            time.sleep(0.1)  # for its greenlet to reach the send lock the first one holds
            started = time.monotonic()
            assert get_page(port, '/page') == (200, 'page /page')
            assert time.monotonic() - started < 1  # within the write timeout (2 s)
            assert first.recv().payload.startswith('stalled gone')
            assert second.recv().payload.startswith('stalled gone')
        finally:
            for connection in (stalled, first, second):
                connection.abort()


# -- graceful stop ----------------------------------------------------------------------------

@pytest.mark.parametrize('worker', ['gevent', 'gevent_pywsgi'])
def test_gunicorn_gevent_graceful_stop_closes_websockets_with_1001(worker: str,
                                                                    tmp_path: Path) -> None:
    """SIGTERM to the master: the gevent worker closes its WebSockets with 1001 (its signal
    handlers run on gevent's hub, which must not wait), then exits."""
    from test_wsgi_stop import HOOK, closed_with, echoed

    config = tmp_path / 'gunicorn_conf.py'
    config.write_text(HOOK)
    with gunicorn(worker, args=('--config', str(config), '--graceful-timeout', '10')) as server:
        held = [open_ws(server.port, '/echo') for _ in range(3)]
        assert all(echoed(connection, 'before') for connection in held)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert [closed_with(connection) for connection in held] == [1001] * 3
        server.process.wait(5)
        assert time.monotonic() - started < 4
    assert 'Worker exiting' in server.log


ON_THE_HUB = """from gevent import monkey
monkey.patch_all()
import signal
import gevent
from wspy.wsgi import stopping
chained = []
gevent.get_hub().loop.run_callback(stopping._close_then, lambda *args: chained.append(args),
                                   1001, 'bye', signal.SIGTERM, None)
gevent.sleep(0.5)
print(stopping._process.going_away.is_set(), chained == [(signal.SIGTERM, None)])
"""


def test_signal_handler_on_the_hub() -> None:
    """gevent runs a signal handler on its hub, where nothing may wait (with threading
    patched, starting a thread does): close_all_on_signals' handler closes everything and
    chains to the previous one all the same."""
    done = subprocess.run([sys.executable, '-c', ON_THE_HUB], capture_output=True, text=True,
                          timeout=20, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert done.stdout.split() == ['True', 'True'], done.stderr


# -- peers that stop halfway ------------------------------------------------------------------

def raw_upgrade(port: int, path: str, certs: Certs | None = None) -> socket.socket:
    """A socket upgraded to a WebSocket on `path`, the 101 read, nothing more done."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=5)
    context = client_context(certs)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname='127.0.0.1')
    sock.sendall(f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n'
                 f'Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n'
                 'Sec-WebSocket-Version: 13\r\n\r\n'.encode())
    head = b''
    while not head.endswith(b'\r\n\r\n'):  # byte by byte: nothing of what follows is read
        data = sock.recv(1)
        assert data, head
        head += data
    assert head.startswith(b'HTTP/1.1 101 '), head
    return sock


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('scheme', ['ws', 'wss'])
def test_a_peer_that_never_ends_the_tcp_connection(mode: str, scheme: str,
                                                   certs: Certs) -> None:
    """The close handshake done, the server shuts its side down and waits (close_timeout,
    10 s here) for the client's end of file, which never comes: on its greenlet only, the
    pages are served meanwhile."""
    tls = certs if scheme == 'wss' else None
    with pywsgi(mode, certs=tls) as port, raw_upgrade(port, '/echo', tls) as sock:
        sock.sendall(b'\x88\x82\x00\x00\x00\x00\x03\xe8')  # close 1000, masked with zeros
        assert sock.recv(4) == CLOSE_1000
        started = time.monotonic()
        assert get_page(port, '/page', tls) == (200, 'page /page')
        assert time.monotonic() - started < 1


LONG_WAIT = """import gevent
from wspy.wsgi import cooperative
naps = []
sleep = gevent.sleep
def counted(seconds=0, *args):
    naps.append(seconds)
    sleep(seconds, *args)
gevent.sleep = counted
lock, event = cooperative.Lock(), cooperative.Event()
lock.acquire()
gevent.spawn_later(0.5, lock.release)
gevent.spawn_later(0.5, event.set)
waiters = [gevent.spawn(lock.acquire), gevent.spawn(event.wait, 5)]
gevent.joinall(waiters)
print(*[waiter.value for waiter in waiters], len(naps))
"""


def test_a_long_wait_on_a_greenlet_naps_little() -> None:
    """Without gevent's patching, a greenlet waits for a connection's lock or event by
    napping: one held for long (a send to a client that does not read, up to its
    write_timeout) must not wake each waiter a thousand times a second."""
    done = subprocess.run([sys.executable, '-c', LONG_WAIT], capture_output=True, text=True,
                          timeout=20, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    acquired, set_, naps = done.stdout.split()
    assert (acquired, set_) == ('True', 'True'), done.stderr
    assert int(naps) < 60  # two waits of 0.5 s
