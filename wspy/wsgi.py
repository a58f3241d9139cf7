"""WebSockets inside WSGI applications: Flask, Django, any WSGI app, on the same port as pages.

A WSGI server (gunicorn, Werkzeug's development server, wsgiref with this
module's `make_server`) owns the client's socket and gives it in `environ`
(`gunicorn.socket`, `werkzeug.socket`, `wspy.socket`). From inside the
request, `accept(environ)` checks the upgrade request with the checks of
wspy's servers (`ServerOpening`: method, headers, version, key, origins,
locations, subprotocols, extensions such as permessage-deflate, `auth`,
`process_request`), takes the socket over, answers 101 on it and returns a
blocking `Connection` with its options (limits, keepalive, close timeout).
`WebSocketApplication(handler)` is the same as a WSGI application that
calls `handler(connection)`, and answers the requests it does not upgrade.

Once taken over, the socket is the connection's alone: the server's socket
object is left on a dead socket (plain TCP), so whatever the server writes
after the application returns goes nowhere and the connection is never read
for another request; over TLS, whose session lives in the server's
`ssl.SSLSocket`, the connection reads and writes through that object and
shuts the TCP connection down when it closes, which ends the server's use of
it just as well. The WebSocket holds the server's thread (or greenlet) for
as long as it is open: see the README's "WSGI" section for what that means
with each gunicorn worker. `close_all()` closes them with 1001 for a
graceful stop (`close_all_on_signals()` from gunicorn's `post_worker_init`
hook). Under gevent (its monkey-patching, or a request on a greenlet) the
upgrades are refused with a 500 saying why: blocking sockets would hold up
every greenlet.
"""

from __future__ import annotations

import _socket
import atexit
import functools
import logging
import os
import select
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
import weakref
import wsgiref.simple_server
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from wspy.asyncserver import DEFAULT, AsyncConnection, Default, LoopClients
from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.errors import (AbortHandshake, ConnectionClosed, HandshakeError, InvalidRequest,
                         NotUpgrade, WriteTimeout)
from wspy.loop import READ, Loop
from wspy.options import ConnectionOptions, SocketOptions, check_options
from wspy.protocol.frame import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, DEFAULT_MAX_SIZE
from wspy.protocol.handshake import Response, error_response
from wspy.protocol.server_opening import ServerOpening
from wspy.protocol.tls import CHUNK_SIZE
from wspy.server import BUSY
from wspy.websocket import _SERVER_AUTH, _send_without_delay, websocket

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ['WSGIOptions', 'SocketUnavailable', 'accept', 'answer', 'is_upgrade',
           'WebSocketApplication', 'HandOff', 'WSGIRequestHandler', 'WSGIServer', 'make_server',
           'close_all', 'close_all_on_signals']

logger = logging.getLogger('wspy')

#: A WSGI environ.
Environ = dict[str, Any]
#: The keys under which WSGI servers give the client's socket, in the order looked up.
SOCKET_KEYS = ('gunicorn.socket', 'werkzeug.socket', 'wspy.socket')
# Hop-by-hop headers, which a WSGI application must not give its server (PEP 3333); a
# 426's Upgrade is kept (RFC 9110 15.5.22), which gunicorn and Werkzeug pass on.
_HOP_BY_HOP = frozenset(('connection', 'keep-alive', 'proxy-authenticate',
                         'proxy-authorization', 'te', 'trailers', 'transfer-encoding'))
_CONNECTION_OPTIONS = ConnectionOptions.__optional_keys__
_NO_SOCKET = ('this WSGI server does not give the client socket (no '
              f"{', '.join(repr(key) for key in SOCKET_KEYS)} in environ), so it cannot "
              'serve WebSockets: run the application under gunicorn, Werkzeug or '
              'wspy.wsgi.make_server')
_KNOWN_OPTIONS = SocketOptions.__optional_keys__ | _CONNECTION_OPTIONS


class StartResponse(Protocol):
    """The `start_response` callable a WSGI server gives its application."""

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None, /) -> Callable[[bytes], object]:
        """Start the response: its status line and headers."""


#: A WSGI application.
WSGIApplication = Callable[[Environ, StartResponse], Iterable[bytes]]


class WSGIOptions(SocketOptions, ConnectionOptions, total=False):
    """The keyword options of `accept` and `WebSocketApplication` (see `wspy.options`).

    The socket's (what requests are accepted, `write_timeout`,
    `max_frame_size`) and the connection's (`max_message_size`,
    `close_timeout`, `ping_interval`, `ping_timeout`). The HTTP head was read
    by the WSGI server, under its own limits and timeout: `handshake_timeout`
    and the head limits do not apply to it.
    """


class SocketUnavailable(HandshakeError):
    """The WSGI server does not give the client's socket: it cannot serve WebSockets (500)."""

    default_status = 500


# -- the request -----------------------------------------------------------------------

def is_upgrade(environ: Environ) -> bool:
    """Whether the request asks for a WebSocket (`Upgrade: websocket`), valid or not."""
    upgrade = environ.get('HTTP_UPGRADE', '')
    return 'websocket' in (token.strip().lower() for token in upgrade.split(','))


def request_head(environ: Environ) -> bytes:
    """The request's HTTP head as the client sent it, rebuilt from `environ`.

    The request target is the server's raw one when it gives it (`RAW_URI`,
    `REQUEST_URI`), else `SCRIPT_NAME`, `PATH_INFO` and `QUERY_STRING`.
    Headers the server joined (repeated ones) stay joined with commas.
    """
    target = environ.get('RAW_URI') or environ.get('REQUEST_URI')
    if not target:
        path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
        target = quote(path.encode('latin-1'), safe="/;=,:@!$&'()*+~") or '/'
        query = environ.get('QUERY_STRING')
        if query:
            target += '?' + query
    lines = [f"{environ.get('REQUEST_METHOD', 'GET')} {target} "
             f"{environ.get('SERVER_PROTOCOL', 'HTTP/1.1')}"]
    for key, value in environ.items():
        if key.startswith('HTTP_'):
            lines.append(f"{key[5:].replace('_', '-')}: {value}")
    for key, name in (('CONTENT_TYPE', 'Content-Type'), ('CONTENT_LENGTH', 'Content-Length')):
        if environ.get(key):
            lines.append(f'{name}: {environ[key]}')
    try:
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')
    except UnicodeEncodeError as error:  # PEP 3333 strings are Latin-1: a server's mistake
        raise InvalidRequest(f'request head not in Latin-1: {error}') from None


def server_socket(environ: Environ) -> socket.socket | None:
    """The client's socket, as the WSGI server gives it in `environ`; None if it does not."""
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return sock
    return None


def answer(error: HandshakeError) -> tuple[str, list[tuple[str, str]], bytes]:
    """The WSGI answer to a request not upgraded for `error`: status line, headers, body.

    `error.response` for an `AbortHandshake` (an answer of
    `process_request`), a plain-text error otherwise (426 to a request that
    is no upgrade, 401 with its challenge, 403 for an origin, ...).
    Hop-by-hop headers, which WSGI leaves to the server, are left out.
    """
    if isinstance(error, AbortHandshake):
        response: Response = error.response
        body = response.body
        headers = response.headers.items()
        if 'Content-Length' not in response.headers:
            headers.append(('Content-Length', str(len(body))))
    else:
        response = error_response(error.status, str(error), error.headers)
        body, headers = response.body, response.headers.items()
    kept = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
    return f'{response.status} {response.reason}', kept, body


# -- greenlets: gevent --------------------------------------------------------------------

_NO_GREENLETS = ('wspy.wsgi cannot serve WebSockets here: {why}. Its connections are '
                 'blocking sockets and OS threads, and under gevent (gunicorn -k gevent, '
                 'gevent.pywsgi) one blocked greenlet would hold up every request of the '
                 "process: serve WebSockets with gunicorn's gthread or sync worker, Werkzeug "
                 'or wspy.wsgi.make_server')
_greenlets_logged = False


def _greenlet_reason() -> str | None:
    """Why wspy's blocking connections cannot run in this request (gevent), or None."""
    if not issubclass(websocket, _socket.socket) or not issubclass(socket.socket,
                                                                   _socket.socket):
        return 'the socket module is monkey-patched (gevent or eventlet)'
    gevent = sys.modules.get('gevent')
    if gevent is not None and isinstance(gevent.getcurrent(), gevent.Greenlet):
        return 'the request runs on a gevent greenlet'
    return None


def _refuse_greenlets(environ: Environ) -> None:
    """Under gevent, refuse at once: `SocketUnavailable` (500) saying why (426 to a
    request that is no upgrade), logged once per process. Never a hang."""
    global _greenlets_logged
    why = _greenlet_reason()
    if why is None:
        return
    if not is_upgrade(environ):
        raise NotUpgrade('this is a WebSocket endpoint: send an Upgrade: websocket request',
                         headers=[('Upgrade', 'websocket')])
    message = _NO_GREENLETS.format(why=why)
    if not _greenlets_logged:
        _greenlets_logged = True
        logger.error('%s', message)
    raise SocketUnavailable(message)


def _check_socket_options(socket_options: dict[str, Any]) -> None:
    """Make a socket with `socket_options`: a mistaken one fails when the application is
    made, not at the first request (not under gevent's patching, where the upgrades are
    refused anyway)."""
    if issubclass(websocket, _socket.socket):
        websocket(**socket_options).close()


# -- taking the socket over ------------------------------------------------------------

def accept(environ: Environ, *, connection_class: type[Connection] = Connection,
           **options: Unpack[WSGIOptions]) -> Connection:
    """Upgrade the WSGI request of `environ` to a WebSocket: its open `Connection`.

    Call it from a view with Flask's `request.environ` or Django's
    `request.META`, under a server that gives the socket (gunicorn,
    Werkzeug, this module's `make_server`). The request is checked as wspy's
    servers check theirs, following `options` (see `WSGIOptions`); a
    request refused raises its `HandshakeError` (`status`, `headers`: give
    it to `answer()` for the WSGI answer) and leaves the socket to the
    server. Otherwise the 101 is sent and the socket is the connection's
    alone: the view's own response is never written. Close the connection
    before the view returns (`with accept(environ) as connection:`): over
    TLS the server's socket carries it, and the server closes that socket
    once the view has returned. `SocketUnavailable` (500)
    when the server does not give the socket; `OSError` or `WriteTimeout`
    if the client has gone before the 101 is sent.
    """
    socket_options, connection_options = _split_options('accept', options)
    return _accept(environ, connection_class, socket_options, connection_options)


def _split_options(caller: str, options: Mapping[str, Any],
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """`options` checked, as the socket's and the connection's; `TypeError` for a mistake."""
    check_options(caller, options, _KNOWN_OPTIONS)
    if isinstance(options.get('auth'), tuple):
        raise TypeError(_SERVER_AUTH)
    socket_options: dict[str, Any] = {}
    connection_options: dict[str, Any] = {}
    for name, value in options.items():
        (connection_options if name in _CONNECTION_OPTIONS else socket_options)[name] = value
    return socket_options, connection_options


def _accept(environ: Environ, connection_class: type[Connection],
            socket_options: dict[str, Any], connection_options: dict[str, Any]) -> Connection:
    _refuse_greenlets(environ)
    head = request_head(environ)
    server_sock = server_socket(environ)
    if server_sock is None:
        _check_without_socket(environ, head, socket_options)
        raise SocketUnavailable(_NO_SOCKET)
    if _process.going_away.is_set():
        raise _shutting_down()
    sock, opening = _decide(server_sock, head, socket_options)
    try:
        sock.take_over(server_sock)
        sock.sendall(opening.response)
        sock.finish_handshake(opening)
        connection = connection_class(sock, **connection_options)
    except BaseException:
        sock.close()
        raise
    _process.track(connection)
    return connection


def _decide(server_sock: socket.socket, head: bytes,
            socket_options: dict[str, Any]) -> tuple[_Upgraded, ServerOpening]:
    """A duplicate of the server's socket and the decision on the request `head`.

    Raises the request's `HandshakeError` if it is refused, and a 503 if the
    socket cannot be duplicated; either way the socket is still the server's.
    """
    try:
        sock = _Upgraded(fileno=os.dup(server_sock.fileno()), **socket_options)
    except OSError as error:
        raise _cannot_take_over(error) from None
    try:
        opening = sock.server_opening()
        opening.decide(head)
        if opening.error is not None:
            raise opening.error
    except BaseException:
        sock.close()
        raise
    return sock, opening


def _cannot_take_over(error: OSError) -> HandshakeError:
    """The 503 of a request whose socket could not be taken over (out of descriptors, say)."""
    logger.error('could not take the WebSocket over from the WSGI server: %s', error)
    return HandshakeError(f'cannot take the connection over: {error}', 503,
                          headers=[('Retry-After', '1')])


def _check_without_socket(environ: Environ, head: bytes, socket_options: dict[str, Any]) -> None:
    """Raise the `HandshakeError` of a request to refuse, on a server without the socket."""
    with websocket(**socket_options) as settings:
        opening = ServerOpening(settings, environ.get('REMOTE_ADDR'))
        opening.decide(head)
    if opening.error is not None:
        raise opening.error


class _Upgraded(websocket):
    """A WSGI server's client socket taken over: a `websocket` on a duplicate of its descriptor.

    `take_over(server_sock)` makes it the connection's alone. A plain socket
    is then read and written here, and the server's socket object is left on
    a dead socket (its writes fail, it reads end of file). A TLS one keeps
    its session in the server's `ssl.SSLSocket`: the bytes go through that
    object (made non-blocking: every wait is this socket's, bounded as
    `websocket`'s are, and each TLS call holds a lock, so one thread may
    receive while others send), and closing shuts the TCP connection down
    for the server too.
    """

    def _init_state(self) -> None:
        super()._init_state()
        self._tls_socket: ssl.SSLSocket | None = None
        self._tls_lock = threading.Lock()
        self._server_timeout: float | None = None

    def take_over(self, server_sock: socket.socket) -> None:
        """Make the connection this socket's alone (see the class).

        A 503 `HandshakeError` if that fails (out of descriptors, say): the
        socket is then still the server's, which answers it.
        """
        try:
            self._take_over(server_sock)
        except OSError as error:
            raise _cannot_take_over(error) from None

    def _take_over(self, server_sock: socket.socket) -> None:
        _send_without_delay(self)
        if isinstance(server_sock, ssl.SSLSocket):
            self._server_timeout = server_sock.gettimeout()
            server_sock.setblocking(False)
            self._tls_socket = server_sock
            self.settimeout(0.0)
        else:
            self.setblocking(True)
            _detach(server_sock)

    def close(self) -> None:
        """Close; over TLS, also shut the TCP connection down, which ends the server's use."""
        tls_socket, self._tls_socket = self._tls_socket, None
        if tls_socket is not None:
            try:
                self.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                tls_socket.settimeout(self._server_timeout)
            except OSError:
                pass
        super().close()

    # -- TLS through the server's SSLSocket ----------------------------------------------

    def _tls_call(self, call: Callable[[], int], deadline: float | None,
                  wait: bool = True) -> int | None:
        """Run a non-blocking TLS read or write until it is done; its result.

        Waits for the socket as TLS asks, until `deadline` (`TimeoutError`);
        without `wait`, None instead of a wait.
        """
        while True:
            with self._tls_lock:
                try:
                    return call()
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
            if not wait:
                return None
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutError('timed out')
            poller = select.poll()
            poller.register(self, events)
            if not poller.poll(None if timeout is None else timeout * 1000):
                raise TimeoutError('timed out')

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Receive bytes of the stream into `buffer` (decrypted under TLS); 0 at end of file."""
        tls_socket = self._tls_socket
        if tls_socket is None:
            return super().recv_into(buffer, nbytes, flags)
        count = self._tls_call(lambda: _tls_read(tls_socket, buffer, nbytes),
                               self._read_deadline)
        assert count is not None
        return count

    def read_into_parser(self, deadline: float | None = None, wait: bool = True) -> bool:
        """As `websocket.read_into_parser`; under TLS, only a read that may wait."""
        if self._tls_socket is not None and not wait:
            return False
        return super().read_into_parser(deadline, wait)

    def recv_available(self, size: int = 1 << 17) -> bytes | None:
        """As `websocket.recv_available`, through the server's TLS socket under TLS."""
        tls_socket = self._tls_socket
        if tls_socket is None:
            return super().recv_available(size)
        buffer = bytearray(size)
        count = self._tls_call(lambda: _tls_read(tls_socket, buffer, size), None, wait=False)
        return None if count is None else bytes(buffer[:count])

    def pending(self) -> bool:
        """Whether decrypted bytes wait in the TLS session."""
        tls_socket = self._tls_socket
        return tls_socket is not None and tls_socket.pending() > 0

    def _write_all(self, buffers: list[Any], flags: int = 0) -> None:
        tls_socket = self._tls_socket
        if tls_socket is None:
            super()._write_all(buffers, flags)
            return
        data = b''.join(buffers) if len(buffers) > 1 else buffers[0]
        with memoryview(data) as view, view.cast('B') as flat:
            for start in range(0, len(flat), CHUNK_SIZE):
                chunk = flat[start:start + CHUNK_SIZE]
                while chunk:  # a write TLS could not finish is retried with the same bytes
                    sent = self._tls_call(functools.partial(tls_socket.send, chunk),
                                          self._write_deadline_now())
                    chunk = chunk[sent or 0:]

    def _write_deadline_now(self) -> float | None:
        """The time a write must end by: `write_timeout` from now, or the write deadline."""
        deadline = None if self.write_timeout is None else time.monotonic() + self.write_timeout
        if self._write_deadline is not None:
            deadline = (self._write_deadline if deadline is None
                        else min(deadline, self._write_deadline))
        return deadline

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of `data` (encrypted under TLS); `WriteTimeout` if the peer does not read."""
        try:
            super().sendall(data, flags)
        except TimeoutError:
            if self._tls_socket is None:
                raise
            raise WriteTimeout(f'the peer took nothing for {self.write_timeout} s: '
                               'it does not read') from None

    def send_packed(self, data: bytes, payload: bytes = b'') -> None:
        """As `websocket.send_packed`, with a TLS write that waits too long a `WriteTimeout`."""
        if self._tls_socket is None:
            super().send_packed(data, payload)
        else:
            self.sendall(data + payload if payload else data)

    def shutdown_write(self) -> None:
        """Shut down the sending side; under TLS, send the close_notify alert first."""
        tls_socket = self._tls_socket
        if tls_socket is not None:
            with self._tls_lock:
                try:
                    tls_socket.unwrap()
                except (OSError, ValueError):
                    pass  # the alert went; the peer's has not come (non-blocking), or TLS failed
        self.shutdown(socket.SHUT_WR)


def _tls_read(tls_socket: ssl.SSLSocket, buffer: Any, nbytes: int) -> int:
    """Read decrypted bytes from a non-blocking TLS socket; 0 at end of file."""
    try:
        return tls_socket.recv_into(buffer, nbytes)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return 0


def _detach(server_sock: socket.socket) -> None:
    """Leave the server's socket object on a dead socket: the connection is no longer its.

    Its descriptor number now refers to one end of a socket pair whose other
    end is closed: a write fails (EPIPE), a read gives end of file, closing it
    closes only that. The connection lives on in the duplicate descriptor.
    """
    dead, other = socket.socketpair()
    other.close()
    try:
        os.dup2(dead.fileno(), server_sock.fileno())
    finally:
        dead.close()


# -- a WSGI application ----------------------------------------------------------------

Handler = Callable[[Connection], object]


class WebSocketApplication:
    """A WSGI application that serves WebSockets with `handler(connection)`.

    Each upgrade request is checked as wspy's servers check theirs (see
    `WSGIOptions` for `options`), answered 101 on the socket taken over from
    the server (see `accept`), and `handler` is called with the open
    `Connection` (of `connection_class`) on the server's thread. When it
    returns the connection is closed (1000; 1011 if it raised, the error
    logged) and the server writes nothing more on the socket. A request
    refused gets its answer (426 to one that is no upgrade); with
    `fallback`, a WSGI application, the requests that do not ask for a
    WebSocket go to it instead (pages on the same path). `max_connections`
    bounds the WebSockets this application holds open at once in the
    process: one more gets 503 with `Retry-After` (with gunicorn's `gthread`
    worker, fewer than its threads, so that a thread is left for pages and
    refusals).
    """

    def __init__(self, handler: Handler, *, fallback: WSGIApplication | None = None,
                 max_connections: int | None = None,
                 connection_class: type[Connection] = Connection,
                 **options: Unpack[WSGIOptions]) -> None:
        self.handler = handler
        self.fallback = fallback
        self.max_connections = max_connections
        self.connection_class = connection_class
        self._socket_options, self._connection_options = _split_options(type(self).__name__,
                                                                        options)
        _check_socket_options(self._socket_options)
        self._lock = threading.Lock()
        #: How many of this application's WebSockets are open.
        self.open_count = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        upgrade = is_upgrade(environ)
        if not upgrade and self.fallback is not None:
            return self.fallback(environ, start_response)
        if upgrade and not self._reserve():
            return self._refuse(BUSY, start_response)
        try:
            try:
                connection = _accept(environ, self.connection_class, self._socket_options,
                                     self._connection_options)
            except HandshakeError as error:
                return self._refuse(error, start_response)
            except (OSError, WriteTimeout) as error:
                logger.debug('upgrade failed, the client has gone: %s', error)
                return _finished(start_response)
            self._serve(connection)
        finally:
            if upgrade:
                with self._lock:
                    self.open_count -= 1
        return _finished(start_response)

    def _reserve(self) -> bool:
        """Count a WebSocket to come in `open_count`; whether `max_connections` allows it."""
        with self._lock:
            if self.max_connections is not None and self.open_count >= self.max_connections:
                logger.warning('refusing a WebSocket: %d open, max_connections is %d',
                               self.open_count, self.max_connections)
                return False
            self.open_count += 1
            return True

    def _refuse(self, error: HandshakeError,
                start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = answer(error)
        start_response(status, headers)
        return [body]

    def _serve(self, connection: Connection) -> None:
        """Run the handler on `connection`, then close it (1011 if the handler failed)."""
        try:
            self.handler(connection)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception('error in the WebSocket handler for %s', connection)
            connection.close(CLOSE_INTERNAL_ERROR, 'internal error')
        finally:
            connection.close()


def _finished(start_response: StartResponse) -> list[bytes]:
    """What a WSGI application returns for a socket taken over: nothing to write.

    The status tells the server's access log what happened; what the server
    then writes fails on the dead (or shut down) socket, quietly: each
    server takes a broken pipe for a client that has gone.
    """
    start_response('101 Switching Protocols', [])
    return []


# -- wsgiref, with what it lacks -------------------------------------------------------

class _ServerHandler(wsgiref.simple_server.ServerHandler):
    """wsgiref's handler of one response, which lets a 426 name the protocol (`Upgrade`)."""

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """As wsgiref's, but an `Upgrade` header is allowed (RFC 9110 15.5.22)."""
        upgrade = [(name, value) for name, value in headers if name.lower() == 'upgrade']
        others = [(name, value) for name, value in headers if name.lower() != 'upgrade']
        write = super().start_response(status, others, exc_info)
        response_headers: Any = getattr(self, 'headers')  # noqa: B009 - set by start_response
        for name, value in upgrade:
            response_headers.add_header(name, value)
        return write


class WSGIRequestHandler(wsgiref.simple_server.WSGIRequestHandler):
    """wsgiref's request handler, giving the client's socket as `environ['wspy.socket']`."""

    def get_environ(self) -> dict[str, Any]:
        """The request's environ, with the socket."""
        environ = super().get_environ()
        environ['wspy.socket'] = self.connection
        return environ

    def handle(self) -> None:
        """Handle one HTTP request (as wsgiref's, on a thread of `WSGIServer`)."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ''
            self.send_error(414)
            return
        if not self.parse_request():  # an error was answered
            return
        handler = _ServerHandler(self.rfile, self.wfile,  # type: ignore[arg-type]
                                 self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]


class WSGIServer(ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """wsgiref's server, a thread per request: a WebSocket holds one, pages go on meanwhile."""

    daemon_threads = True
    block_on_close = False


def make_server(host: str, port: int, app: WSGIApplication,
                server_class: type[WSGIServer] = WSGIServer,
                handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
                ) -> WSGIServer:
    """A wsgiref server for `app` on `host` and `port` that can serve WebSockets.

    As `wsgiref.simple_server.make_server`, with this module's threaded
    server and handler (which gives the socket to `accept`). `port` 0 picks
    a free port: `server.server_port` tells it. `serve_forever()` serves.
    """
    server = wsgiref.simple_server.make_server(host, port, app, server_class, handler_class)
    assert isinstance(server, server_class)
    return server



# -- hand-off to an event loop ---------------------------------------------------------

class HandOff(LoopClients):
    """WebSockets handed from the WSGI server to an event loop in the worker process.

    A WSGI application (and, from a view, `accept(environ)`) that checks
    and upgrades each WebSocket request as `WebSocketApplication` does, then
    gives the socket to a wspy event loop running on a thread of the
    process, and returns at once: the server's thread (or the whole `sync`
    worker) is free for the next request, and gunicorn's worker timeout does
    not apply to the WebSocket. The connections are `AsyncConnection` objects
    with the callbacks of `AsyncServer`: subclass and override `onopen`,
    `onmessage`, `onclose`, `onerror`, `onping`, `onpong`, `onsent`;
    `clients` holds the open ones, and `broadcast()`, `call_later()`,
    `call_soon_threadsafe()` and `shutdown()` are safe from any thread.
    `client.request` gives the request's path, query and headers.

    The loop and its thread are made at first use in each process, so an
    application imported before gunicorn forks (`--preload`) gets its own
    loop in each worker, and shuts it down at the process's exit (1001 to
    every client, waiting at most `max_join_time`). Plain TCP only: a TLS
    connection's session lives in the server's `ssl.SSLSocket`, which the
    loop cannot drive, so its upgrade is answered 500 (`SocketUnavailable`);
    put TLS in a proxy in front, or use `WebSocketApplication`.

    `fallback` is the WSGI application for requests that ask for no
    WebSocket; without it they get 426. `max_connections` bounds the
    WebSockets open (and being handed over) in this process: one more is
    answered 503 with Retry-After. `max_buffer_size`, `selector` and
    `connection_class` are as on `AsyncServer`; the other keyword options
    are `WSGIOptions`.
    """

    connection_class: type[AsyncConnection] = AsyncConnection
    clients: set[AsyncConnection]
    _shutdown_reason = 'worker shutting down'

    def __init__(self, *, fallback: WSGIApplication | None = None,
                 max_connections: int | None = None, max_join_time: float = 2.0,
                 max_buffer_size: int | Default | None = DEFAULT,
                 selector: type[selectors.BaseSelector] | None = None,
                 connection_class: type[AsyncConnection] | None = None,
                 **options: Unpack[WSGIOptions]) -> None:
        self.fallback = fallback
        self.max_connections = max_connections
        self.max_join_time = max_join_time
        if connection_class is not None:
            self.connection_class = connection_class
        self._socket_options, connection_options = _split_options(type(self).__name__, options)
        _check_socket_options(self._socket_options)
        #: The options of each connection.
        self.connection_options: ConnectionOptions = {
            'max_message_size': DEFAULT_MAX_SIZE, 'close_timeout': CLOSE_TIMEOUT,
            'ping_interval': PING_INTERVAL, 'ping_timeout': PING_TIMEOUT,
            **connection_options}  # type: ignore[typeddict-item]
        self._max_buffer_size = max_buffer_size
        self._selector = selector
        self._start_lock = threading.Lock()
        self._loop: Loop | None = None
        self._pid: int | None = None  # the process whose loop `_loop` is
        self.clients = set()
        self._stopped = threading.Event()
        self._handed: set[websocket] = set()  # handed to the loop, not yet adopted

    # -- the loop of this process --------------------------------------------------------

    @property
    def loop(self) -> Loop:
        """This process's loop, made and started on a thread at first use."""
        loop = self._loop
        if loop is None or self._pid != os.getpid():
            loop = self._start()
        return loop

    @loop.setter
    def loop(self, loop: Loop) -> None:
        self._loop = loop

    def _start(self) -> Loop:
        """Make this process's loop and run it on a daemon thread (once per process)."""
        with self._start_lock:
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            # Anything made before a fork is the parent's: its clients, its loop.
            self._on_loop(Loop(self._selector), self._max_buffer_size)
            self._pid = os.getpid()
            self.clients = set()
            self._stopped = threading.Event()
            self._handed = set()
            loop = self.loop
            running = threading.Event()
            loop.call_soon_threadsafe(running.set)
            threading.Thread(target=self._run, args=(loop, self._stopped),
                             name='wspy-HandOff', daemon=True).start()
            running.wait(5)  # until then, the caller's thread would pass for the loop's
            atexit.register(self._at_exit, self._pid)
            _process.track_hand_off(self)
            return loop

    def _run(self, loop: Loop, stopped: threading.Event) -> None:
        try:
            loop.run()
        finally:
            self._drop_clients()
            with self._start_lock:  # no socket is handed over after this
                stopped.set()
                stranded, self._handed = self._handed, set()
            for sock in stranded:  # handed over as the loop stopped: never adopted
                sock.close()
            loop.close()

    def shutdown(self) -> None:
        """Close every client with 1001 and stop this process's loop, waiting at most
        `max_join_time` for their close handshakes (from another thread than the loop's)."""
        if self._loop is None or self._pid != os.getpid() or self._stopped.is_set():
            return
        loop = self._loop
        loop.call_soon_threadsafe(self._close_clients)
        if not loop.in_loop_thread():
            self._stopped.wait(self.max_join_time + 1)

    def _at_exit(self, pid: int) -> None:
        if pid == os.getpid():
            self.shutdown()

    # -- upgrading -----------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.fallback is not None and not is_upgrade(environ):
            return self.fallback(environ, start_response)
        try:
            self.accept(environ)
        except HandshakeError as error:
            status, headers, body = answer(error)
            start_response(status, headers)
            return [body]
        except (OSError, WriteTimeout) as error:
            logger.debug('upgrade failed, the client has gone: %s', error)
        return _finished(start_response)

    def accept(self, environ: Environ) -> None:
        """Upgrade the WSGI request of `environ` and hand its socket to the loop; at once.

        From a view (Flask's `request.environ`, Django's `request.META`):
        a request refused raises its `HandshakeError` (give it to `answer()`)
        and leaves the socket to the server; otherwise the socket is the
        loop's, which sends the 101 and calls `onopen`, and whatever the
        view then returns goes nowhere. `SocketUnavailable` (500) when the
        server does not give its socket, or gives a TLS one.
        """
        _refuse_greenlets(environ)
        head = request_head(environ)
        server_sock = server_socket(environ)
        if server_sock is None or isinstance(server_sock, ssl.SSLSocket):
            _check_without_socket(environ, head, self._socket_options)
            raise SocketUnavailable(_NO_SOCKET if server_sock is None else _NO_TLS_HAND_OFF)
        try:
            loop = self.loop  # started before the socket is taken: nothing to fail after
        except OSError as error:
            raise _cannot_take_over(error) from None
        sock, opening = _decide(server_sock, head, self._socket_options)
        try:
            with self._start_lock:  # against the loop's end: see `_run`
                if (self._shutting_down or self._stopped.is_set()
                        or _process.going_away.is_set()):
                    raise _shutting_down()
                if (self.max_connections is not None
                        and len(self.clients) + len(self._handed) >= self.max_connections):
                    logger.warning('refusing a WebSocket: max_connections is %d',
                                   self.max_connections)
                    raise HandshakeError(str(BUSY), 503, headers=[('Retry-After', '1')])
                sock.take_over(server_sock)
                sock.setblocking(False)
                sock.finish_handshake(opening)
                self._handed.add(sock)
                loop.call_soon_threadsafe(self._adopt_handed, sock, opening.response)
        except BaseException:
            sock.close()
            raise

    def _adopt_handed(self, sock: websocket, response: bytes) -> None:
        """A socket handed over joins the loop (loop thread): the 101 goes out, then `onopen`."""
        with self._start_lock:
            self._handed.discard(sock)
        if self._shutting_down:
            sock.close()
            return
        try:
            self.loop.register(sock, READ, _ignore)
            client = self._adopt(sock, response)
        except Exception:  # a connection_class of the application's
            logger.exception('could not set up the connection handed over')
            self.loop.unregister(sock)
            sock.close()
            return
        self._opened(client)


_NO_TLS_HAND_OFF = ('HandOff cannot take a TLS connection: its session lives in the WSGI '
                    "server's SSLSocket, which the event loop cannot drive; terminate TLS "
                    'in a proxy in front of the server, or use WebSocketApplication')


def _shutting_down() -> HandshakeError:
    # A new one each time: one instance raised again and again keeps every traceback
    # (and each request's environ) it was raised with.
    return HandshakeError('shutting down: try again later', 503, headers=[('Retry-After', '1')])


def _ignore(mask: int) -> None:
    """The handler of a socket registered before its connection takes it."""


# -- closing every WebSocket of the process (a server's graceful stop) -----------------

class _Process:
    """The WebSockets this process opened: the blocking connections `accept` made (for
    itself, `WebSocketApplication`), the `HandOff`s started. Forgotten in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.hand_offs: weakref.WeakSet[HandOff] = weakref.WeakSet()
        #: Set by `close_all`: upgrades are refused from then on (503).
        self.going_away = threading.Event()

    def track(self, connection: Connection) -> None:
        """Remember an open connection; one opened as `close_all` runs is closed at once."""
        with self.lock:
            going_away = self.going_away.is_set()
            if not going_away:
                self.connections.add(connection)
        if going_away:
            connection.start_close(CLOSE_GOING_AWAY, _GOING_AWAY)

    def track_hand_off(self, hand_off: HandOff) -> None:
        with self.lock:
            self.hand_offs.add(hand_off)

    def close_all(self, code: int, reason: str) -> None:
        """Close every WebSocket (see `close_all`), on the calling thread."""
        with self.lock:
            self.going_away.set()
            connections = list(self.connections)
            hand_offs = list(self.hand_offs)
        deadlines = []
        for connection in connections:
            connection.start_close(code, reason)
            deadlines.append(time.monotonic() + connection.close_timeout)
        for hand_off in hand_offs:
            hand_off.shutdown()
        for connection, deadline in zip(connections, deadlines, strict=True):
            if not connection.wait_closed(max(0.0, deadline - time.monotonic())):
                connection.abort()  # nobody receives its close: the handler's next call fails


_process = _Process()
_GOING_AWAY = 'server shutting down'


def _forget_parent() -> None:
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_forget_parent)


def close_all(code: int = CLOSE_GOING_AWAY, reason: str = _GOING_AWAY,
              wait: float | None = None) -> None:
    """Close every WebSocket this process serves through `wspy.wsgi`, for a graceful stop.

    The blocking connections of `accept` and `WebSocketApplication` get a
    close frame (`code`, 1001 by default): the handler's `recv()` sees the
    close through and raises `ConnectionClosedOK`, the handler returns and
    frees the server's thread. One whose handshake is not over within its
    `close_timeout` (no thread receives it) is dropped, which makes the
    handler's next call fail. The clients of every `HandOff` are closed as
    its `shutdown()` does. From then on the process refuses upgrades (503
    with `Retry-After`). The work runs on a thread of its own: this call
    waits for it at most `wait` seconds (None: until it is done, 0: not at
    all), so that it may run in a signal handler (see
    `close_all_on_signals`) or a server's hook.
    """
    process = _process
    closer = threading.Thread(target=process.close_all, args=(code, reason),
                              name='wspy-close-all', daemon=True)
    closer.start()
    closer.join(wait)


_SignalHandler = Callable[[int, Any], Any] | int | None


def close_all_on_signals(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT,
                                                   signal.SIGQUIT),
                         code: int = CLOSE_GOING_AWAY, reason: str = _GOING_AWAY) -> None:
    """On each of `signals`, `close_all(code, reason)`, then what the signal did before.

    For gunicorn, whose workers stop on SIGTERM (graceful stop, and the old
    workers of a reload on SIGHUP) and SIGINT or SIGQUIT (quick stop): call
    it from the `post_worker_init(worker)` hook of its configuration file,
    once the worker's own handlers are in place, and its WebSockets are
    closed with 1001 when it is told to stop instead of being cut when it
    exits. The previous handler runs right after the closing has started;
    a signal whose action was the default one (to end the process) takes it
    once the closing is over. From the main thread only, as any
    `signal.signal`.
    """
    for signum in signals:
        previous: _SignalHandler = signal.getsignal(signum)
        signal.signal(signum, functools.partial(_close_then, previous, code, reason))
        # A blocking read is interrupted for the handler to run, then resumed (PEP 475): with
        # the restart gunicorn asks for, a sync worker reading its WebSocket never runs it.
        signal.siginterrupt(signum, True)


def _close_then(previous: _SignalHandler, code: int, reason: str,
                signum: int, frame: Any) -> None:
    """A signal handler: start closing everything, then do what the signal did before."""
    if previous == signal.SIG_DFL:  # a second one ends the process at once
        signal.signal(signum, signal.SIG_DFL)
        threading.Thread(target=_close_and_die, args=(signum, code, reason),
                         daemon=True).start()
        return
    close_all(code, reason, wait=0)
    if callable(previous):
        previous(signum, frame)


def _close_and_die(signum: int, code: int, reason: str) -> None:
    """Close everything, then take the default action of `signum` (ending the process)."""
    _process.close_all(code, reason)
    os.kill(os.getpid(), signum)
