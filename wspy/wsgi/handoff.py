"""WebSockets handed from the WSGI server to an event loop in the worker: `HandOff`."""

from __future__ import annotations

import atexit
import logging
import os
import selectors
import ssl
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wspy.asyncserver import DEFAULT, AsyncConnection, Default, LoopClients
from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT
from wspy.errors import HandshakeError, WriteTimeout
from wspy.loop import READ, Loop
from wspy.options import ConnectionOptions
from wspy.protocol.frame import DEFAULT_MAX_SIZE
from wspy.server import BUSY
from wspy.websocket import websocket
from wspy.wsgi import stopping
from wspy.wsgi.application import _finished
from wspy.wsgi.request import (_NO_SOCKET, Environ, SocketUnavailable, StartResponse,
                               WSGIApplication, WSGIOptions, _check_socket_options,
                               _refuse_unsupported, _split_options, answer, is_upgrade,
                               request_head, server_socket)
from wspy.wsgi.stopping import _shutting_down
from wspy.wsgi.takeover import _cannot_take_over, _check_without_socket, _decide

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger('wspy')


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

    Args:
        fallback: the WSGI application for requests that ask for no
            WebSocket; without it they get 426.
        max_connections: the most WebSockets open (or being handed over) in
            the process (None: no limit).
        max_join_time: seconds `shutdown()` gives the clients' close
            handshakes.
        max_buffer_size: the most bytes queued for a client before it is
            closed with 1008 (as on `AsyncServer`).
        selector: the `selectors` class of the loop (as on `AsyncServer`).
        connection_class: the class of the connections (`AsyncConnection`
            by default).
        **options: the socket's and the connections' (see `WSGIOptions`).

    Raises:
        TypeError: an unknown option, or a client's `auth`.
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
        """Set by `LoopClients`, whose code names the loop `loop`."""
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
            stopping._process.track_hand_off(self)
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
        once the request is accepted the socket is the loop's, which sends
        the 101 and calls `onopen`, and whatever the view then returns goes
        nowhere.

        Raises:
            HandshakeError: the request is refused (give it to `answer()`);
                the socket is left to the server. 503 over `max_connections`
                or while shutting down.
            SocketUnavailable: the server does not give its socket, gives
                a TLS one, or runs the request on a gevent greenlet (500).
            OSError: the client has gone before its socket was handed over.
        """
        _refuse_unsupported(environ, hand_off=True)
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
                        or stopping._process.going_away.is_set()):
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


def _ignore(mask: int) -> None:
    """The handler of a socket registered before its connection takes it."""
