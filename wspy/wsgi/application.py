"""Blocking WebSockets on the WSGI server's thread: `accept` and `WebSocketApplication`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wspy.connection import Connection
from wspy.errors import ConnectionClosed, HandshakeError, WriteTimeout
from wspy.protocol.frame import CLOSE_INTERNAL_ERROR
from wspy.server import BUSY
from wspy.wsgi import stopping
from wspy.wsgi.cooperative import cooperate, on_greenlet
from wspy.wsgi.request import (_NO_SOCKET, Environ, SocketUnavailable, StartResponse,
                               WSGIApplication, WSGIOptions, _check_socket_options,
                               _refuse_unsupported, _split_options, answer, is_upgrade,
                               request_head, server_socket)
from wspy.wsgi.stopping import _shutting_down
from wspy.wsgi.takeover import _check_without_socket, _decide

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger('wspy')


def accept(environ: Environ, *, connection_class: type[Connection] = Connection,
           **options: Unpack[WSGIOptions]) -> Connection:
    """Upgrade the WSGI request of `environ` to a WebSocket: its open `Connection`.

    Call it from a view with Flask's `request.environ` or Django's
    `request.META`, under a server that gives the socket (gunicorn,
    Werkzeug, gevent's `pywsgi` with `wspy.wsgi.gevent.WSGIHandler`, this
    package's `make_server`). The request is checked as wspy's
    servers check theirs; once it is accepted the 101 is sent and the
    socket is the connection's alone: the view's own response is never
    written. Close the connection before the view returns (`with
    accept(environ) as connection:`): over TLS the server's socket carries
    it, and the server closes that socket once the view has returned.

    Args:
        environ: the request's WSGI environ.
        connection_class: the class of the connection returned.
        **options: the socket's and the connection's (see `WSGIOptions`).

    Returns:
        The open connection (of `connection_class`), on the server's thread.

    Raises:
        HandshakeError: the request is refused (`status`, `headers`: give
            it to `answer()` for the WSGI answer); the socket is left to the
            server. 503 once `close_all()` has run, and when every thread
            of a `wspy.wsgi.gunicorn.GThreadWorker` holds a WebSocket.
        SocketUnavailable: the server does not give the socket (500), or
            the socket module is patched by another library than gevent.
        OSError: the client has gone before the 101 is sent
            (`WriteTimeout` too).
        TypeError: an unknown option, or a client's `auth`.
    """
    socket_options, connection_options = _split_options('accept', options)
    return _accept(environ, connection_class, socket_options, connection_options)


def _accept(environ: Environ, connection_class: type[Connection],
            socket_options: dict[str, Any], connection_options: dict[str, Any]) -> Connection:
    _refuse_unsupported(environ)
    head = request_head(environ)
    server_sock = server_socket(environ)
    if server_sock is None:
        _check_without_socket(environ, head, socket_options)
        raise SocketUnavailable(_NO_SOCKET)
    if stopping._process.going_away.is_set():
        raise _shutting_down()
    sock, opening = _decide(server_sock, head, socket_options)
    if not stopping._process.reserve():
        sock.close()
        logger.warning('refusing a WebSocket: every thread of the worker holds one')
        raise HandshakeError('server busy: every thread holds a WebSocket, try again later',
                             503, headers=[('Retry-After', '1')])
    try:
        sock.take_over(server_sock)
        sock.sendall(opening.response)
        sock.finish_handshake(opening)
        connection = connection_class(sock, **connection_options)
    except BaseException:
        sock.close()
        stopping._process.release()
        raise
    if on_greenlet():
        cooperate(connection)
    stopping._process.track(connection)
    return connection


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

    Args:
        handler: called with each open connection; the connection is
            closed when it returns.
        fallback: the WSGI application for requests that ask for no
            WebSocket; without it they get 426.
        max_connections: the most WebSockets open at once in the process
            (None: no limit).
        connection_class: the class of the connections.
        **options: the socket's and the connections' (see `WSGIOptions`).

    Raises:
        TypeError: an unknown option, or a client's `auth`, when the
            application is made (not at the first request).
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
