"""wspy.wsgi: WebSockets inside WSGI applications, on wsgiref, Werkzeug and gunicorn for real."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import werkzeug.serving
from gunicorn import config as gunicorn_config

import wspy
from wspy.wsgi import (SocketUnavailable, WebSocketApplication, accept, answer, is_upgrade,
                       make_server, request_head, takeover)

from certs import Certs
from conftest import eventually, free_port

TEST_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TEST_DIR))
import wsgi_app  # noqa: E402

ROOT = TEST_DIR.parent
KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
UPGRADE = {'HTTP_UPGRADE': 'websocket', 'HTTP_CONNECTION': 'Upgrade', 'HTTP_HOST': 'example.com',
           'HTTP_SEC_WEBSOCKET_KEY': KEY, 'HTTP_SEC_WEBSOCKET_VERSION': '13',
           'REQUEST_METHOD': 'GET', 'PATH_INFO': '/chat', 'SERVER_PROTOCOL': 'HTTP/1.1'}


# -- servers ------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(server: Any) -> Iterator[None]:
    """Run a socketserver-style server (`serve_forever`, `shutdown`) in a thread."""
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def wsgiref_server(app: Any = wsgi_app.app) -> Iterator[int]:
    server = make_server('127.0.0.1', 0, app)
    with serving(server):
        yield server.server_port


@contextlib.contextmanager
def werkzeug_server(certs: Certs | None = None, app: Any = wsgi_app.app) -> Iterator[int]:
    context = None
    if certs is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.server_cert, certs.server_key)
    server = werkzeug.serving.make_server('127.0.0.1', 0, app, threaded=True,
                                        ssl_context=context)
    with serving(server):
        yield server.server_port


def _quiet_flags() -> list[str]:
    """gunicorn's flags for a test: no control socket in the home directory (gunicorn 25+)."""
    names = {setting.name for setting in gunicorn_config.KNOWN_SETTINGS}
    return ['--no-control-socket'] if 'control_socket_disable' in names else []


class Gunicorn:
    """A gunicorn process serving wsgi_app.py; its log collected, for asserts."""

    def __init__(self, worker: str, threads: int = 1, certs: Certs | None = None,
                 env: dict[str, str] | None = None, app: str = 'wsgi_app:app',
                 chdir: Path = TEST_DIR, args: tuple[str, ...] = ()) -> None:
        command = [sys.executable, '-m', 'gunicorn', '--bind', '127.0.0.1:0', '--workers', '1',
                   '--worker-class', worker, '--threads', str(threads), '--chdir', str(chdir),
                   '--graceful-timeout', '1', '--log-level', 'debug', *_quiet_flags(), *args,
                   app]
        if certs is not None:
            command[3:3] = ['--certfile', str(certs.server_cert),
                            '--keyfile', str(certs.server_key)]
        environment = {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{chdir}',
                       **(env or {})}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                        env=environment)
        self.lines: list[str] = []
        self._booted: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read_log, daemon=True).start()
        try:
            self.port = self._booted.get(timeout=20)
        except queue.Empty:
            self.stop()
            raise AssertionError('gunicorn did not start:\n' + self.log) from None

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        port = None
        for line in self.process.stderr:
            self.lines.append(line)
            if 'Listening at: ' in line:
                port = int(line.split('Listening at: ')[1].split()[0].rsplit(':', 1)[1])
            elif 'Booting worker' in line and port is not None:
                self._booted.put(port)

    @property
    def log(self) -> str:
        return ''.join(self.lines)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def gunicorn(worker: str, threads: int = 1, certs: Certs | None = None,
             env: dict[str, str] | None = None, **options: Any) -> Iterator[Gunicorn]:
    server = Gunicorn(worker, threads, certs, env, **options)
    try:
        yield server
    finally:
        server.stop()
    assert 'Traceback' not in server.log, server.log


# -- clients ------------------------------------------------------------------------------

def client_context(certs: Certs | None) -> ssl.SSLContext | None:
    return None if certs is None else ssl.create_default_context(cafile=str(certs.ca))


def open_ws(port: int, path: str, certs: Certs | None = None, **options: Any) -> wspy.Connection:
    scheme = 'ws' if certs is None else 'wss'
    return wspy.connect(f'{scheme}://127.0.0.1:{port}{path}', timeout=5,
                        ssl_context=client_context(certs), **options)


def get_page(port: int, path: str, certs: Certs | None = None) -> tuple[int, str]:
    scheme = 'http' if certs is None else 'https'
    try:
        with urllib.request.urlopen(f'{scheme}://127.0.0.1:{port}{path}', timeout=5,
                                    context=client_context(certs)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def check_echo(port: int, certs: Certs | None = None) -> None:
    """The echo endpoint over ws (or wss): subprotocol, deflate, large messages, the page."""
    connection = open_ws(port, '/echo?x=1', certs, protocols=['chat'],
                         extensions=[wspy.DeflateMessage()])
    with connection:
        assert connection.protocol == 'chat'
        assert connection.sock.hooks, 'permessage-deflate not negotiated'
        connection.send('whoami')
        assert connection.recv().payload == '/echo chat'
        big = os.urandom(300_000)  # more than a TLS write of the server takes at once
        connection.send(big)
        assert connection.recv().payload == big
        connection.send('é' * 70_000)
        assert connection.recv().payload == 'é' * 70_000
    assert connection.close_code == 1000
    assert get_page(port, '/echo', certs) == (200, 'page /echo')
    assert get_page(port, '/other', certs) == (200, 'page /other')


def check_view(port: int, certs: Certs | None = None) -> None:
    """The view calling accept(): its WebSocket, then nothing of its own response."""
    with open_ws(port, '/view', certs) as connection:
        assert connection.recv().payload == 'view says hi'
        connection.send('back')
        assert connection.recv().payload == 'back'
        with pytest.raises(wspy.ConnectionClosedOK):
            connection.recv()
    assert connection.close_code == 1000


def raw_close_exchange(port: int) -> bytes:
    """Upgrade /echo on a plain socket, send a close frame: every byte received after the 101.

    Nothing but the server's close frame may follow: no HTTP response of the
    WSGI server's once the application has returned.
    """
    with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
        sock.sendall(f'GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n'
                     f'Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n'
                     'Sec-WebSocket-Version: 13\r\n\r\n'.encode())
        received = b''
        while b'\r\n\r\n' not in received:
            data = sock.recv(4096)
            assert data, received
            received += data
        head, _, rest = received.partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 101 '), head
        sock.sendall(b'\x88\x82\x00\x00\x00\x00\x03\xe8')  # close 1000, masked with zeros
        while True:
            data = sock.recv(4096)
            if not data:
                return rest
            rest += data


CLOSE_1000 = b'\x88\x02\x03\xe8'


# -- the request, without a server -------------------------------------------------------

def test_request_head_from_environ() -> None:
    head = request_head({**UPGRADE, 'PATH_INFO': '/a b/\xe9', 'QUERY_STRING': 'q=1',
                         'SCRIPT_NAME': '/app', 'CONTENT_TYPE': 'text/plain'})
    lines = head.decode('latin-1').split('\r\n')
    assert lines[0] == 'GET /app/a%20b/%E9?q=1 HTTP/1.1'
    assert 'SEC-WEBSOCKET-KEY: ' + KEY in lines and 'Content-Type: text/plain' in lines
    assert head.endswith(b'\r\n\r\n')
    raw = request_head({**UPGRADE, 'RAW_URI': '/chat?room=%2F1', 'PATH_INFO': '/chat'})
    assert raw.startswith(b'GET /chat?room=%2F1 HTTP/1.1\r\n')


def test_request_head_not_latin1() -> None:
    with pytest.raises(wspy.InvalidRequest):
        request_head({**UPGRADE, 'HTTP_X': '\u20ac'})


def test_is_upgrade() -> None:
    assert is_upgrade(UPGRADE)
    assert is_upgrade({'HTTP_UPGRADE': 'h2c, WebSocket'})
    assert not is_upgrade({'HTTP_UPGRADE': 'h2c'}) and not is_upgrade({})


def test_answer_leaves_hop_by_hop_headers_to_the_server() -> None:
    status, headers, body = answer(wspy.NotUpgrade('not an upgrade',
                                                   headers=[('Upgrade', 'websocket')]))
    assert status == '426 Upgrade Required' and body == b'not an upgrade\n'
    assert ('Upgrade', 'websocket') in headers
    assert all(name.lower() != 'connection' for name, _ in headers)
    assert ('Content-Length', str(len(body))) in headers
    custom = wspy.Response(302, [('Location', '/login'), ('Connection', 'close')], b'go')
    status, headers, body = answer(wspy.AbortHandshake(custom))
    assert status == '302 Found' and body == b'go'
    assert headers == [('Location', '/login'), ('Content-Length', '2')]


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call a WSGI application directly: its status, headers and body."""
    started: list[Any] = []
    body = b''.join(app(environ, lambda status, headers, exc_info=None: started.extend(
        [status, headers])))
    return started[0], started[1], body


def test_server_without_socket_is_told_at_the_first_upgrade() -> None:
    app = WebSocketApplication(lambda connection: None)
    status, _, body = call(app, dict(UPGRADE))
    assert status.startswith('500 ')
    assert b'does not give the client socket' in body and b'gunicorn' in body
    with pytest.raises(SocketUnavailable):
        accept(dict(UPGRADE))
    # A request that is no upgrade is answered as it would be anywhere.
    status, headers, _ = call(app, {**UPGRADE, 'HTTP_UPGRADE': ''})
    assert status.startswith('426 ') and ('Upgrade', 'websocket') in headers
    # And one the options refuse, too.
    picky = WebSocketApplication(lambda connection: None, trusted_origins=['https://a.example'])
    assert call(picky, {**UPGRADE, 'HTTP_ORIGIN': 'https://b.example'})[0].startswith('403 ')
    assert app.open_count == 0


def test_the_server_socket_is_left_dead_after_the_upgrade() -> None:
    """Once taken over, the server's socket object writes nowhere and reads end of file;
    the connection goes on on its own descriptor."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        connection = accept({**UPGRADE, 'wspy.socket': server_end}, ping_interval=None)
        client_end.settimeout(5)
        assert client_end.recv(4096).startswith(b'HTTP/1.1 101 Switching Protocols\r\n')
        with pytest.raises(BrokenPipeError):
            server_end.sendall(b'HTTP/1.1 200 OK\r\n\r\n')
        assert server_end.recv(10) == b''
        client_end.sendall(b'\x81\x82\x00\x00\x00\x00hi')  # a masked text frame
        assert connection.recv().payload == 'hi'
        connection.abort()
        connection.close()
        assert client_end.recv(10) == b''  # the client sees the end: nothing else holds it


def test_a_tcp_socket_taken_over_sends_without_delay() -> None:
    """Nagle's algorithm goes off on the socket taken over, as on wspy's own servers'."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        client_end = socket.create_connection(listener.getsockname())
        server_end, _ = listener.accept()
    with server_end, client_end:
        assert not server_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        connection = accept({**UPGRADE, 'wspy.socket': server_end}, ping_interval=None)
        assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        connection.abort()
        connection.close()


def test_a_socket_that_cannot_be_taken_over_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of descriptors while taking the socket over: the server still owns it and
    answers 503 with Retry-After, not a bare 101 (nor "the client has gone")."""
    def out_of_descriptors(sock: socket.socket) -> None:
        raise OSError(errno.EMFILE, 'Too many open files')

    monkeypatch.setattr(takeover, '_detach', out_of_descriptors)
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        app = WebSocketApplication(lambda connection: None)
        status, headers, body = call(app, {**UPGRADE, 'wspy.socket': server_end})
        assert status.startswith('503 ') and ('Retry-After', '1') in headers
        assert b'Too many open files' in body
        client_end.setblocking(False)
        with pytest.raises(BlockingIOError):
            client_end.recv(10)  # nothing written behind the server's back
    assert app.open_count == 0


def test_refused_options_leave_no_descriptor() -> None:
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        before = len(os.listdir('/proc/self/fd'))
        for _ in range(3):
            with pytest.raises(ValueError):
                accept({**UPGRADE, 'wspy.socket': server_end}, headers=[('X', 'a\r\nb')])
        assert len(os.listdir('/proc/self/fd')) == before
        # Nor does a refused request take the socket: the server still answers on it.
        with pytest.raises(wspy.InvalidOrigin):
            accept({**UPGRADE, 'wspy.socket': server_end}, trusted_origins=['https://a.example'])
        server_end.sendall(b'still the server\'s')
        assert client_end.recv(100) == b'still the server\'s'


def test_options_are_checked_when_the_application_is_made() -> None:
    with pytest.raises(TypeError, match='max_mesage_size'):
        WebSocketApplication(lambda connection: None, max_mesage_size=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match='auth'):
        WebSocketApplication(lambda connection: None, auth=('user', 'secret'))
    with pytest.raises(TypeError, match='max_mesage_size'):
        accept(dict(UPGRADE), max_mesage_size=1)  # type: ignore[call-arg]


# -- wsgiref, with wspy's server and handler -------------------------------------------------

def test_wsgiref_echo_and_pages() -> None:
    with wsgiref_server() as port:
        check_echo(port)
        check_view(port)


def test_plain_wsgiref_says_it_cannot_serve_websockets() -> None:
    """wsgiref's own server gives no socket: the upgrade gets a 500 that says so, at once."""
    import wsgiref.simple_server

    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = wsgiref.simple_server.make_server('127.0.0.1', 0, wsgi_app.app,
                                               handler_class=Quiet)
    with serving(server):
        started = time.monotonic()
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(server.server_port, '/echo')
        assert refused.value.status == 500 and time.monotonic() - started < 2
        assert get_page(server.server_port, '/echo') == (200, 'page /echo')


def test_wsgiref_writes_nothing_after_the_application() -> None:
    with wsgiref_server() as port:
        assert raw_close_exchange(port) == CLOSE_1000


def test_wsgiref_refusals() -> None:
    with wsgiref_server() as port:
        status, text = get_page(port, '/view')
        assert status == 426 and 'WebSocket endpoint' in text
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/view', headers=[('Sec-WebSocket-Version', '8')])
        assert refused.value.status == 426  # two versions, joined by the server: '13, 8'
        # The server is still there for the next one.
        check_view(port)


def test_wsgiref_auth_and_origins() -> None:
    def hello(connection: wspy.Connection) -> None:
        connection.send(f'hello {connection.user}')

    app = WebSocketApplication(hello, auth=wspy.BasicAuth({'ann': 'secret'}),
                               trusted_origins=['http://good.example'])
    with wsgiref_server(app) as port:
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/', origin='http://good.example')
        assert refused.value.status == 401
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/', origin='http://bad.example', auth=('ann', 'secret'))
        assert refused.value.status == 403
        with open_ws(port, '/', origin='http://good.example', auth=('ann', 'secret')) as conn:
            assert conn.recv().payload == 'hello ann'


def test_wsgiref_limits_and_handler_errors() -> None:
    seen: list[Any] = []

    def keep(connection: wspy.Connection) -> None:
        seen.append((connection.max_message_size, connection.close_timeout,
                     connection.ping_interval))
        connection.recv()

    app = WebSocketApplication(keep, max_message_size=100, close_timeout=2, ping_interval=None)
    with wsgiref_server(app) as port:
        with open_ws(port, '/') as connection:
            connection.send('x' * 101)
            with pytest.raises(wspy.ConnectionClosedError):
                connection.recv()
        assert connection.close_code == 1009
        assert seen == [(100, 2, None)]
    with wsgiref_server() as port:
        with open_ws(port, '/fail') as connection:
            connection.send('boom')
            with pytest.raises(wspy.ConnectionClosedError):
                connection.recv()
        assert connection.close_code == 1011


def test_max_connections_answers_503_and_pages_go_on() -> None:
    release = threading.Event()

    def hold(connection: wspy.Connection) -> None:
        connection.send('held')
        release.wait(5)

    app = WebSocketApplication(hold, max_connections=2, fallback=wsgi_app.page)
    with wsgiref_server(app) as port:
        held = [open_ws(port, '/') for _ in range(2)]
        for connection in held:
            assert connection.recv().payload == 'held'
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(port, '/')
        assert refused.value.status == 503
        assert get_page(port, '/') == (200, 'page /')
        release.set()
        for connection in held:
            connection.close()
        assert app.open_count == 0 or eventually(lambda: app.open_count == 0)
        with open_ws(port, '/') as connection:
            assert connection.recv().payload == 'held'


# -- Werkzeug's development server ------------------------------------------------------------

def test_werkzeug_ws() -> None:
    with werkzeug_server() as port:
        check_echo(port)
        check_view(port)
        assert raw_close_exchange(port) == CLOSE_1000


def test_werkzeug_wss(certs: Certs) -> None:
    with werkzeug_server(certs) as port:
        check_echo(port, certs)
        check_view(port, certs)


# -- gunicorn ---------------------------------------------------------------------------------

@pytest.mark.parametrize('worker', ['sync', 'gthread'])
def test_gunicorn_ws(worker: str) -> None:
    with gunicorn(worker, threads=1 if worker == 'sync' else 2) as server:
        check_echo(server.port)
        check_view(server.port)
        assert raw_close_exchange(server.port) == CLOSE_1000
    assert f'Using worker: {worker}' in server.log


@pytest.mark.parametrize('worker', ['sync', 'gthread'])
def test_gunicorn_wss(worker: str, certs: Certs) -> None:
    with gunicorn(worker, threads=1 if worker == 'sync' else 2, certs=certs) as server:
        check_echo(server.port, certs)
        check_view(server.port, certs)


def test_gunicorn_handler_error_is_a_1011() -> None:
    with gunicorn('gthread', threads=2) as server:
        with open_ws(server.port, '/fail') as connection:
            connection.send('boom')
            with pytest.raises(wspy.ConnectionClosedError):
                connection.recv()
        assert connection.close_code == 1011
        assert eventually(lambda: 'the handler failed' in server.log)
        server.lines.clear()  # the traceback logged is the one expected


def test_gunicorn_gthread_holds_one_websocket_a_thread() -> None:
    """N threads hold N - 1 WebSockets with max_connections=N - 1; one more gets 503 at once,
    and the thread left serves pages meanwhile."""
    threads = 3
    with gunicorn('gthread', threads=threads,
                  env={'WSPY_MAX_CONNECTIONS': str(threads - 1)}) as server:
        held = [open_ws(server.port, '/echo') for _ in range(threads - 1)]
        for index, connection in enumerate(held):
            connection.send(f'still here {index}')
        for index, connection in enumerate(held):
            assert connection.recv().payload == f'still here {index}'
        started = time.monotonic()
        with pytest.raises(wspy.InvalidStatus) as refused:
            open_ws(server.port, '/echo')
        assert refused.value.status == 503 and time.monotonic() - started < 2
        assert get_page(server.port, '/page') == (200, 'page /page')
        for connection in held:
            connection.close()
        with open_ws(server.port, '/echo') as connection:
            connection.send('again')
            assert connection.recv().payload == 'again'


def test_wspy_gthread_worker_holds_a_websocket_on_every_thread() -> None:
    """wspy's gthread worker with N threads holds N WebSockets (views' and applications'); the
    next is answered 503 at once, pages go on, and a WebSocket closed makes room."""
    threads = 3
    with gunicorn('wspy.wsgi.gunicorn.GThreadWorker', threads=threads) as server:
        held = [open_ws(server.port, '/echo') for _ in range(threads - 1)]
        view = open_ws(server.port, '/view')
        assert view.recv().payload == 'view says hi'
        for index, connection in enumerate(held):
            connection.send(f'still here {index}')
            assert connection.recv().payload == f'still here {index}'
        for path in ('/echo', '/view'):
            started = time.monotonic()
            with pytest.raises(wspy.InvalidStatus) as refused:
                open_ws(server.port, path)
            assert refused.value.status == 503 and time.monotonic() - started < 2
            assert ('Retry-After', '1') in refused.value.headers
            assert b'every thread holds a WebSocket' in refused.value.body
        assert get_page(server.port, '/page') == (200, 'page /page')
        status, text = get_page(server.port, '/view')  # no upgrade: the view's 426, not a 503
        assert status == 426 and 'WebSocket endpoint' in text
        held[0].close()
        with open_ws(server.port, '/echo') as connection:
            connection.send('again')
            assert connection.recv().payload == 'again'
        view.send('back')
        assert view.recv().payload == 'back'
        for connection in held:
            connection.close()


# -- examples/flask_chat.py ---------------------------------------------------------------------

EXAMPLES = ROOT / 'examples'


def check_chat(port: int) -> None:
    """Two people chat; the page is served on the same port."""
    status, page = get_page(port, '/')
    assert status == 200 and 'new WebSocket' in page
    assert get_page(port, '/chat')[0] == 400  # Werkzeug's router: a WebSocket route
    alice = open_ws(port, '/chat?name=alice', extensions=[wspy.DeflateMessage()])
    assert alice.recv().payload == '* alice joined'
    bob = open_ws(port, '/chat?name=bob')
    assert alice.recv().payload == '* bob joined' and bob.recv().payload == '* bob joined'
    bob.send('hi alice')
    assert alice.recv().payload == 'bob: hi alice' and bob.recv().payload == 'bob: hi alice'
    bob.close()
    assert alice.recv().payload == '* bob left'
    alice.close()
    assert (alice.close_code, bob.close_code) == (1000, 1000)


def run_example(script: str, check: Callable[[int], None]) -> None:
    """Run an example's own server (`python examples/SCRIPT PORT`) and `check(port)` it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(EXAMPLES / script), str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'PYTHONPATH': str(ROOT),
                                    'PYTHONUNBUFFERED': '1'})
    try:
        assert process.stdout is not None
        assert f'127.0.0.1:{port}' in process.stdout.readline()
        assert eventually(lambda: _accepts(port))
        check(port)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert 'Traceback' not in errors, errors


def test_flask_chat_example_on_werkzeug() -> None:
    run_example('flask_chat.py', check_chat)


@pytest.mark.parametrize('worker', ['gthread', 'gevent'])
def test_flask_chat_example_on_gunicorn(worker: str) -> None:
    with gunicorn(worker, threads=4, app='flask_chat:app', chdir=EXAMPLES) as server:
        check_chat(server.port)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_write_to_a_client_that_does_not_read_times_out(secure: bool, certs: Certs) -> None:
    """A write the client takes nothing of is bounded by write_timeout, under TLS too (where
    the bytes go through the server's SSLSocket)."""
    failures: queue.Queue[BaseException] = queue.Queue()

    def flood(connection: wspy.Connection) -> None:
        try:
            while True:
                connection.send(b'x' * (256 << 10))
        except BaseException as error:
            failures.put(error)
            raise

    app = WebSocketApplication(flood, write_timeout=0.3, close_timeout=0.5, ping_interval=None)
    with werkzeug_server(certs if secure else None, app) as port:
        connection = open_ws(port, '/', certs if secure else None, ping_interval=None)
        try:
            failure = failures.get(timeout=10)
        finally:
            connection.abort()
    assert isinstance(failure, wspy.WriteTimeout), failure


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_keepalive_of_a_handler_that_only_sends(secure: bool, certs: Certs) -> None:
    """The keepalive reads the pongs while the handler does not receive (through the server's
    SSLSocket under TLS)."""
    def wait_for_pong(connection: wspy.Connection) -> None:
        seen = eventually(lambda: connection.latency is not None, timeout=5)
        connection.send(f'pong seen: {seen}')
        connection.recv()

    app = WebSocketApplication(wait_for_pong, ping_interval=0.05, ping_timeout=2)
    with werkzeug_server(certs if secure else None, app) as port, \
            open_ws(port, '/', certs if secure else None) as connection:
        assert connection.recv().payload == 'pong seen: True'


# -- examples/django_echo.py ---------------------------------------------------------------

def check_django(port: int) -> None:
    status, page = get_page(port, '/')
    assert status == 200 and 'new WebSocket' in page
    status, text = get_page(port, '/echo')
    assert status == 426 and 'WebSocket endpoint' in text
    with open_ws(port, '/echo', extensions=[wspy.DeflateMessage()]) as connection:
        assert connection.sock.hooks, 'permessage-deflate not negotiated'
        connection.send('hello django')
        assert connection.recv().payload == 'hello django'
    assert connection.close_code == 1000


def test_django_example_on_wsgiref() -> None:
    run_example('django_echo.py', check_django)


@pytest.mark.parametrize('worker', ['gthread', 'gevent'])
def test_django_example_on_gunicorn(worker: str) -> None:
    with gunicorn(worker, threads=2, app='django_echo:application', chdir=EXAMPLES) as server:
        check_django(server.port)
