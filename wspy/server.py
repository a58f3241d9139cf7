"""Servers with callbacks: `BaseServer` (what all share) and `Server` (a pool of threads)."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import select
import socket
import ssl
import stat
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from wspy.answers import HOLD_DELAY
from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.errors import HandshakeError, SSLError, WriteTimeout
from wspy.handshaking import Handshake
from wspy.loop import READ, Loop, Timer
from wspy.protocol.frame import CLOSE_GOING_AWAY, DEFAULT_MAX_SIZE
from wspy.protocol.handshake import Request, Response
from wspy.protocol.message import Message
from wspy.threadpool import ThreadPool
from wspy.tls import server_context
from wspy.websocket import websocket

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from wspy.options import ConnectionOptions, ServerOptions, ServerSSLArgs, SocketOptions

logger = logging.getLogger('wspy')

SHUTDOWN_REASON = 'server shutting down'
#: Default length of the queue of connections the kernel holds until they are accepted:
#: the most the system allows (a burst of 2,000 connections overflowed 128, and those left
#: out waited for the kernel's retries, seconds later).
BACKLOG = socket.SOMAXCONN
#: Default `Server.hold_time`.
HOLD_TIME = 0.002
#: The answer to a connection over `max_connections`.
BUSY = HandshakeError('server busy: too many connections, try again later', 503,
                      [('Retry-After', '1')])
#: A socket's address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6
#: (or just (host, port) to bind), a path for a Unix socket.
Address = tuple[str, int] | tuple[str, int, int, int] | str
# The connections a server's callbacks take (contravariant: callbacks written for any
# `ServerConnection` serve an `AsyncServer`'s too).
_Client = TypeVar('_Client', bound='ServerConnection', contravariant=True)
# The connections of a server.
_Conn = TypeVar('_Conn', bound='ServerConnection')
# The most connections accepted in one turn of the loop, before the other sockets' turn.
_ACCEPT_BATCH = 64
# Seconds a server stops accepting after accept() failed (out of file descriptors, say).
_ACCEPT_PAUSE = 0.1
# Seconds between tries of a 1001 close frame that could not be written at once.
_CLOSE_RETRY = 0.05
# Seconds a server waits, once it dropped its clients, for its threads to finish them.
_DROP_WAIT = 1.0


def use_loglevel(level: int) -> None:
    """Set the level of the 'wspy' logger, and make its log show if nothing else would.

    When logging is not configured (no handler on the 'wspy' logger nor on
    the root logger), a handler writing to stderr is attached to the 'wspy'
    logger, once; the root logger is left alone.
    """
    logger.setLevel(level)
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
        logger.addHandler(handler)


def address_family(address: Address) -> int:
    """The socket family for an address: a string is a Unix socket path."""
    if isinstance(address, str):
        return socket.AF_UNIX
    return socket.AF_INET6 if ':' in str(address[0]) else socket.AF_INET


def bind_listener(sock: socket.socket, address: Address, reuse_port: bool = False) -> str | None:
    """Bind a socket to listen on: the Unix socket path it made (to remove at the end), if any.

    TCP sockets get SO_REUSEADDR (and SO_REUSEPORT with `reuse_port`); a
    Unix socket path left by a server that is gone is replaced first.
    """
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    elif isinstance(address, str) and address and not address.startswith('\0'):
        remove_stale_unix_socket(address)
        sock.bind(address)
        return address
    sock.bind(address)
    return None


def close_listener(sock: socket.socket, unix_path: str | None) -> None:
    """Close a listening socket and remove the Unix socket path it made, if any."""
    sock.close()
    if unix_path is not None:
        with contextlib.suppress(OSError):
            os.unlink(unix_path)


def remove_stale_unix_socket(path: str) -> None:
    """Remove a Unix socket file at `path` that no server answers on.

    `OSError` (address in use) if a server still listens there; a file that
    is not a socket is left for `bind` to refuse.
    """
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left by a server that is gone
        return
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f'a server is already listening on {path}')


def _readable_within(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` turns readable (or fails) within `timeout` seconds."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class Callbacks(Generic[_Client]):
    """The callbacks of servers and of `AsyncClient`: override these; each takes the client.

    Generic in the connection class the callbacks take: `ServerConnection` on
    `Server`, `AsyncConnection` on `AsyncServer` and `AsyncClient`. An
    exception from a callback goes to `onerror` (logged), never to the
    server: the server goes on.
    """

    #: The event loop whose timers run the keepalive of the connections.
    loop: Loop

    def onopen(self, client: _Client) -> None:
        """Called when a client's connection is open (its handshake done), before its messages.

        Args:
            client: the client's connection; `client.request` is its upgrade
                request (path, query, headers), `client.user` the user it
                logged in as with `auth`.
        """
        logger.debug('%s: open', client)

    def onmessage(self, client: _Client, message: Message) -> None:
        """Called with each message a client sends, in order.

        Args:
            client: the client's connection: `client.send()` answers it.
            message: a `TextMessage` (`message.payload` is a `str`) or a
                `BinaryMessage` (`bytes`); `client.send(message)` echoes it
                as it came.
        """

    def onping(self, client: _Client, payload: bytes) -> None:
        """Called with a client's ping payload when it arrives (the pong is sent automatically)."""

    def onpong(self, client: _Client, payload: bytes) -> None:
        """Called with a client's pong payload when it arrives (the keepalive's, or another)."""

    def onclose(self, client: _Client, code: int, reason: str) -> None:
        """Called once when a client's connection has closed (its socket too).

        Args:
            client: the client's connection, no longer in `clients`.
            code: the client's close code (1005 if its close frame had none),
                the code the server failed the connection with when the client
                did not answer, or 1006 when it dropped without a close frame.
            reason: the close reason that came with it.
        """
        logger.debug('%s: closed %d %s', client, code, reason)

    def onerror(self, client: _Client, error: Exception) -> None:
        """Called with a client's protocol error, lost connection or callback exception.

        By default it logs the error (see `Connection.onerror`); a protocol
        error then closes the connection with its code (`onclose`).
        """
        Connection.onerror(client, error)


class ServerConnection(Connection):
    """A connection on a server (or an `AsyncClient`): forwards its callbacks to it.

    Its keepalive pings are timers on the server's `loop`, never a thread of
    their own (`onerror` for a missed pong is called on the loop's thread).
    """

    __slots__ = ('server', '_keepalive_timer')

    def __init__(self, server: Callbacks[Self], sock: websocket,
                 **options: Unpack[ConnectionOptions]) -> None:
        self.server = server
        self._keepalive_timer: Timer | None = None
        super().__init__(sock, **options)

    # -- keepalive: on the server's loop, no thread of its own ---------------------------
    # (`run_keepalive()` never blocks: a ping that cannot be written at once waits.)

    def _start_keepalive(self, delay: float) -> None:
        self._keepalive_timer = self.server.loop.call_later(delay, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        delay = self.run_keepalive()
        self._keepalive_timer = (None if delay is None
                                 else self.server.loop.call_later(delay, self._keepalive_tick))

    def _stop_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()

    def _receive_for_keepalive(self) -> bool:
        return False  # the server reads its clients as soon as bytes arrive

    def _close_transport(self) -> None:
        self._stop_keepalive()
        super()._close_transport()

    def onopen(self: Self) -> None:
        """Forwarded to the server's `onopen`."""
        self.server.onopen(self)

    def onmessage(self: Self, message: Message) -> None:
        """Forwarded to the server's `onmessage`."""
        self.server.onmessage(self, message)

    def onping(self: Self, payload: bytes) -> None:
        """Forwarded to the server's `onping`."""
        self.server.onping(self, payload)

    def onpong(self: Self, payload: bytes) -> None:
        """Forwarded to the server's `onpong`."""
        self.server.onpong(self, payload)

    def onclose(self: Self, code: int, reason: str) -> None:
        """Forwarded to the server's `onclose`."""
        self.server.onclose(self, code, reason)

    def onerror(self: Self, error: Exception) -> None:
        """Forwarded to the server's `onerror`."""
        self.server.onerror(self, error)


class BaseServer(Callbacks[_Conn]):
    """What every wspy server shares: the listening socket, options and callbacks.

    `address` is bound at once, so the `address` property tells the port
    when binding port 0. A Unix socket path left by a server that is gone
    is replaced, and the path is removed when the server stops. Generic in
    the class of its connections (`connection_class`), which its callbacks
    take. `wspy.options.ServerOptions` documents every keyword option.

    Args:
        address: (host, port) to listen on (`''` for every IPv4 address; an
            IPv6 host binds IPv6), or a string: a Unix socket path.
        loglevel: the level of the 'wspy' logger; when logging is not
            configured, it then shows on stderr (see `use_loglevel`). None
            leaves logging alone.
        ssl_args: for wss://, `certfile`, `keyfile`, `password`, and
            `cafile` to require client certificates
            (`wspy.options.ServerSSLArgs`).
        max_join_time: seconds `shutdown()` gives the clients' close
            handshakes before it drops them.
        backlog_size: the queue of connections the kernel holds until they
            are accepted (by default the most the system allows).
        max_message_size: each connection's (see `Connection`).
        close_timeout: each connection's (see `Connection`).
        ping_interval: each connection's keepalive (see `Connection`).
        ping_timeout: each connection's keepalive (see `Connection`).
        family: the socket family; by default from `address`.
        ssl_context: an `ssl.SSLContext` for wss://, instead of `ssl_args`.
        max_connections: the most connections served at once, handshakes
            included; one more is answered 503 with `Retry-After` (None: no
            limit).
        reuse_port: set SO_REUSEPORT: several processes listen on one port.
        listener: a listening socket to serve instead of binding `address`
            (one inherited from a parent process).
        **options: the `websocket`'s, for every client: handshake options
            (`protocols`, `extensions`, `auth`, `trusted_origins`,
            `locations`, `trusted_proxies`, whose `X-Forwarded-For` gives
            `client.client_address`, ...) and limits (`handshake_timeout`,
            `max_frame_size`, `write_timeout`, ...).

    Raises:
        TypeError: both `ssl_args` and `ssl_context`, or an unknown option.
        OSError: `address` cannot be bound (in use, say).
    """

    #: The class of the server's connections, made for each client after its handshake.
    connection_class: type[_Conn]

    def __init__(self, address: Address, loglevel: int | None = None,
                 ssl_args: ServerSSLArgs | None = None, max_join_time: float = 2.0,
                 backlog_size: int = BACKLOG, *, max_message_size: int | None = DEFAULT_MAX_SIZE,
                 close_timeout: float = CLOSE_TIMEOUT,
                 ping_interval: float | None = PING_INTERVAL,
                 ping_timeout: float | None = PING_TIMEOUT, family: int | None = None,
                 ssl_context: ssl.SSLContext | None = None, max_connections: int | None = None,
                 reuse_port: bool = False, listener: socket.socket | None = None,
                 **options: Unpack[SocketOptions]) -> None:
        if ssl_args is not None:
            if ssl_context is not None:
                raise TypeError('give a server ssl_args or an ssl_context, not both')
            ssl_context = server_context(**ssl_args)
        #: The server's `SSLContext` when it serves wss://.
        self.ssl_context = ssl_context
        if loglevel is not None:
            use_loglevel(loglevel)
        self.max_join_time = max_join_time
        #: The most connections (open or in their handshake) served at once; more get 503.
        self.max_connections = max_connections
        #: The options of each connection.
        self.connection_options: ConnectionOptions = {
            'max_message_size': max_message_size, 'close_timeout': close_timeout,
            'ping_interval': ping_interval, 'ping_timeout': ping_timeout}
        if family is None:
            family = address_family(address)
        options.setdefault('process_request', self.process_request)
        # The path of the Unix socket this server made, removed when it stops.
        self._unix_path: str | None = None
        if listener is not None:  # a listening socket shared with other processes
            self.sock = websocket(listener.family, listener.type, listener.proto,
                                  fileno=os.dup(listener.fileno()), **options)
        else:
            self.sock = websocket(family, socket.SOCK_STREAM, **options)
        try:
            if listener is None:
                self._unix_path = bind_listener(self.sock, address, reuse_port)
                self.sock.listen(backlog_size)
            self.sock.setblocking(False)
            if ssl_context is not None:
                self.sock.enable_ssl(ssl_context, server_side=True)
        except BaseException:
            self._close_listener()
            raise
        #: The open client connections.
        self.clients: set[_Conn] = set()
        self._running = False
        self._stopped = threading.Event()

    def _close_listener(self) -> None:
        """Close the listening socket; remove the Unix socket path this server made."""
        path, self._unix_path = self._unix_path, None
        close_listener(self.sock, path)

    @property
    def address(self) -> Address | bytes:
        """The address the server listens on (bytes for an abstract Unix socket)."""
        address: Address | bytes = self.sock.getsockname()
        return address

    def run(self) -> None:
        """Serve until `shutdown()` (or Ctrl-C), then close every client."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop serving: close every client with 1001, then release every socket."""
        raise NotImplementedError

    def _release(self) -> None:
        """Close what the server holds when it never ran."""
        self._close_listener()

    def _busy(self, serving: int) -> bool:
        """Whether a new connection would go over `max_connections` (logged when so)."""
        if self.max_connections is None or serving < self.max_connections:
            return False
        logger.warning('refusing a connection: %d connections, max_connections is %d', serving,
                       self.max_connections)
        return True

    # -- accepting, on the loop ---------------------------------------------------------

    def _accept_ready(self, mask: int) -> None:
        """Accept the connections waiting (a batch a turn); each starts its handshake.

        One over `max_connections` is answered 503 (a TLS one, which could
        not read it yet, is disconnected).
        """
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = self.sock.accept(handshake=False)
            except BlockingIOError:
                return
            except OSError as error:
                # Out of file descriptors, for one: pause rather than spin on the listener.
                logger.error('accept failed: %s', error)
                self.loop.unregister(self.sock)
                self.loop.call_later(_ACCEPT_PAUSE, self._resume_accepting)
                return
            sock.setblocking(False)
            busy = self._busy(self._serving())
            if busy and sock.tls is not None:
                sock.close()
                continue
            handshake = self._start_handshake(sock, address)
            if busy:
                handshake.reject(BUSY)
            handshake.start()

    def _resume_accepting(self) -> None:
        if self.sock.fileno() != -1:  # else the server has stopped meanwhile
            self.loop.register(self.sock, READ, self._accept_ready)

    def _serving(self) -> int:
        """How many connections the server has, open or in their handshake."""
        raise NotImplementedError

    def _start_handshake(self, sock: websocket, address: Any) -> Handshake:
        """A socket just accepted: its opening handshake starts on the loop."""
        raise NotImplementedError

    def start(self) -> threading.Thread:
        """Run the server (`run()`) in a background daemon thread, which is returned.

        `shutdown()` stops it, from any thread.
        """
        self._running = True  # so that a shutdown() right away waits for run() to end
        thread = threading.Thread(target=self.run, name=f'wspy-{type(self).__name__}',
                                  daemon=True)
        thread.start()
        return thread

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._running:
            self.shutdown()
        else:
            self._release()

    # -- callbacks: override these --------------------------------------------------

    def process_request(self, request: Request) -> Response | None:
        """See each request before the upgrade; return a `Response` to answer it instead.

        For health checks, redirects, refusing by cookie or token, or a page
        for plain browser GETs. Runs on the server's thread for that client
        (on `AsyncServer`, the loop: keep it quick), after `auth` has let
        the request in. An exception it raises is answered 500 (logged);
        raising a `HandshakeError` answers with its status.

        Args:
            request: the upgrade request: `request.path`,
                `request.query_params` and `request.headers` tell what was
                asked.

        Returns:
            A `Response` to send instead of the upgrade, or None to go on
            with the WebSocket handshake (a plain GET without an upgrade
            then gets 426).
        """
        return None


class _Opening(Handshake):
    """A client's opening handshake on a `Server`: its request head is read on the loop,
    then answered on a pool thread (`process_request` and `auth` may take their time)."""

    __slots__ = ('server', 'reader')

    # The socket goes to a pool thread as soon as the request is read: if it came with
    # the connection, it is never registered on the loop (two system calls less).
    read_at_once = True

    def __init__(self, server: Server, sock: websocket, address: Any) -> None:
        self.server = server
        #: The request's head reader: `reader.rest` is what arrived after the head.
        self.reader = sock.head_reader()
        super().__init__(server.loop, sock, address)

    def _received(self, count: int) -> None:
        try:
            head = self.reader.feed(self.loop.view[:count])
        except HandshakeError as error:
            self.reject(error)
            return
        if head is not None:
            self.server._answer_on_pool(self, head)

    def _on_dropped(self) -> None:
        super()._on_dropped()
        self.server._handshakes.discard(self)


class Server(BaseServer[ServerConnection]):
    """A WebSocket server whose clients are served by a pool of threads.

    Subclass it and override the callbacks, which take the client (a
    `ServerConnection`) first. A client holds a thread only while it has
    something to do (the answer to its upgrade request, the frames that
    arrived and the callbacks they call); everything else happens on one
    event loop, `server.loop` (a `wspy.loop.Loop`): accepting, reading
    upgrade requests (and the TLS handshakes before them) without blocking,
    so silent or trickling clients hold no thread (each is answered 408 and
    closed after `handshake_timeout`), watching idle clients (thousands of
    them hold no thread) and their keepalive pings. One client's callbacks
    run one at a time, in order; other clients' run meanwhile, and a
    callback may block (the pool starts another thread). Sending is
    blocking and safe from any thread. `run()` serves until `shutdown()`,
    which may be called from any thread or a signal handler: clients get a
    1001 close and up to `max_join_time` seconds for their close handshakes
    (a second `shutdown()`, or a second Ctrl-C, drops them at once). The
    arguments are `BaseServer`'s.
    """

    connection_class: type[ServerConnection] = ServerConnection

    def __init__(self, address: Address, loglevel: int | None = None,
                 ssl_args: ServerSSLArgs | None = None, max_join_time: float = 2.0,
                 backlog_size: int = BACKLOG, **options: Unpack[ServerOptions]) -> None:
        super().__init__(address, loglevel, ssl_args, max_join_time, backlog_size, **options)
        #: The event loop of the server's thread: accepting, handshakes, idle clients, timers.
        self.loop = Loop()
        self._pool = ThreadPool(f'wspy-{type(self).__name__}')
        # Clients whose upgrade request is arriving, or who are refused and lingering
        # (loop thread only).
        self._handshakes: set[_Opening] = set()
        # Under the lock: the sockets whose request a pool thread answers, and (with
        # `clients`) whether shutdown has begun.
        self._lock = threading.Lock()
        self._handshaking: set[websocket] = set()
        self._shutting_down = False
        self._dropping = False  # drop every client at once (a second shutdown)
        # Clients that have not had their 1001 yet, while shutting down (loop thread).
        self._unclosed: list[ServerConnection] = []
        self._join_deadline = 0.0
        self._run_thread: int | None = None
        #: Seconds a pool thread waits for more from a client that went quiet before it
        #: hands the client back to the loop (0: at once).
        self.hold_time = HOLD_TIME
        # Clients whose pool thread holds back the answers to a read's messages
        # (`wspy.answers`): the loop has a pool thread write those held too long.
        self._holding: set[Connection] = set()

    def run(self) -> None:
        """Accept and serve clients until `shutdown()` (or Ctrl-C), then close them all."""
        self._run_thread = threading.get_ident()
        self._running = True
        self.loop.register(self.sock, READ, self._accept_ready)
        self.loop.call_later(HOLD_DELAY, self._write_held_answers)
        logger.info('serving on %s', self.address)
        try:
            while True:
                try:
                    self.loop.run()
                    break
                except KeyboardInterrupt:
                    if self._shutting_down:  # a second Ctrl-C: no more waiting
                        logger.info('interrupted again, dropping every client')
                        self._drop_all()
                    else:
                        logger.info('interrupted, shutting down')
                        self._begin_shutdown()
        finally:
            for handshake in list(self._handshakes):
                handshake.drop()
            self._pool.close()
            self._release()
            self._running = False
            self._stopped.set()
            logger.info('server stopped')

    # -- handshakes: read on the loop, answered on the pool ------------------------------

    def _serving(self) -> int:
        with self._lock:
            return len(self.clients) + len(self._handshaking) + len(self._handshakes)

    def _start_handshake(self, sock: websocket, address: Any) -> Handshake:
        handshake = _Opening(self, sock, address)
        self._handshakes.add(handshake)
        return handshake

    def _answer_on_pool(self, handshake: _Opening, head: bytes) -> None:
        """A client's request has arrived (loop thread): a pool thread answers it."""
        self._handshakes.discard(handshake)
        sock = handshake.release()
        if handshake.registered:
            self.loop.unregister(sock)
        with self._lock:
            self._handshaking.add(sock)
        self._pool.submit(self._handshake, sock, handshake.address, head, handshake.reader.rest)

    def _handshake(self, sock: websocket, address: Any, head: bytes, rest: bytes) -> None:
        """Answer a client's upgrade request (on a pool thread), then serve the client."""
        try:
            sock.setblocking(True)  # here rather than on the loop: a system call less there
            sock.respond(head, rest)
        except (HandshakeError, OSError, WriteTimeout) as error:
            logger.log(logging.INFO if isinstance(error, SSLError) else logging.DEBUG,
                       'handshake with %s failed: %s', address, error)
            self._handshake_over(sock, None)
            return
        try:
            client = self.connection_class(self, sock, **self.connection_options)
        except Exception:  # a connection_class of the application's
            logger.exception('could not set up the connection from %s', address)
            self._handshake_over(sock, None)
            return
        if self._handshake_over(sock, client):
            client.start_close(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
        client._callback(client.onopen)
        # While the server watches or reads the client, it holds the receive lock:
        # close() from another thread then leaves the reading to the server.
        client._recv_lock.acquire()
        self._serve(client, readable=False)  # frames that came with the request

    def _handshake_over(self, sock: websocket, client: ServerConnection | None) -> bool:
        """The socket's handshake is answered: `client` is open, or (None) the socket is
        closed. Whether the server is shutting down."""
        with self._lock:
            self._handshaking.discard(sock)
            if client is not None:
                self.clients.add(client)
            shutting_down = self._shutting_down
        if client is None:
            sock.close()
            if shutting_down:
                self.loop.call_soon_threadsafe(self._stop_if_all_gone)
        return shutting_down

    # -- serving, on the pool's threads -------------------------------------------------

    def _serve(self, client: ServerConnection, readable: bool = True) -> None:
        """Apply what arrives for `client` while it is busy; then watch it again (or forget it).

        A client that sends again within `hold_time` keeps its thread: a
        conversation of quick exchanges does not go through the loop (and to
        another thread) for each message.
        """
        try:
            is_open = client._receive_ready(readable, self._holding)
            while is_open and self.hold_time and _readable_within(client.sock, self.hold_time):
                is_open = client._receive_ready(True, self._holding)
        except Exception:
            logger.exception('unexpected error serving %s', client)
            client.abort()
            client._finish()
            is_open = False
        if is_open:
            self.loop.call_soon_threadsafe(self._watch, client)
            return
        with self._lock:
            self.clients.discard(client)
            shutting_down = self._shutting_down
        client._recv_lock.release()
        if shutting_down:
            self.loop.call_soon_threadsafe(self._stop_if_all_gone)

    def _write_held_answers(self) -> None:
        """Have a pool thread write the answers that a callback which blocks holds back
        (loop thread, every HOLD_DELAY: the loop itself never waits for a write)."""
        now = time.monotonic()
        for client in list(self._holding):
            if client._held_too_long(now):
                self._pool.submit(client._write_held_now, False)
        self.loop.call_later(HOLD_DELAY, self._write_held_answers)

    # -- watching idle clients, on the loop ---------------------------------------------

    def _watch(self, client: ServerConnection) -> None:
        """Wait on the loop for the client to send; then a pool thread serves it."""
        try:
            self.loop.register(client.sock, READ, functools.partial(self._readable, client))
        except (ValueError, OSError) as error:  # its socket failed under it meanwhile
            logger.debug('%s: cannot watch it: %s', client, error)
            self._pool.submit(self._serve, client)

    def _readable(self, client: ServerConnection, mask: int) -> None:
        self.loop.unregister(client.sock)
        self._pool.submit(self._serve, client)

    # -- stopping ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting, close every client with 1001 and wait for `run()` to end.

        From a signal handler or a callback on the server's own threads it
        only asks `run()` to stop, and returns at once. Called again while
        the clients' close handshakes are under way, it drops them at once.
        """
        self.loop.call_soon_threadsafe(self._begin_shutdown)
        self.loop.wake()  # from a signal handler, the loop may be inside select()
        if self._running and self._run_thread != threading.get_ident() and \
                not self._pool.owns_current_thread():
            self._stopped.wait()

    def _begin_shutdown(self) -> None:
        """1001 to every client; the loop stops once all have gone, or at `max_join_time`."""
        if self._shutting_down:  # asked twice: drop the clients still closing
            self._drop_all()
            return
        with self._lock:
            self._shutting_down = True
            self._unclosed = list(self.clients)
            handshaking = list(self._handshaking)
        self.loop.unregister(self.sock)
        self._close_listener()
        for handshake in list(self._handshakes):
            handshake.drop()
        for sock in handshaking:
            # Only the reading side: a stalled handshake wakes up and fails,
            # while one that just succeeded can still send its close frame.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        self._join_deadline = time.monotonic() + self.max_join_time
        self._close_clients()

    def _close_clients(self) -> None:
        """Send 1001 to the clients that have not had it, where that cannot block; again
        soon for those where it could (a client that does not read, or one a pool
        thread is writing to)."""
        if self._dropping or self._stop_if_all_gone():
            return
        self._unclosed = [client for client in self._unclosed if client.close_sent is None
                          and not client._send_close(CLOSE_GOING_AWAY, SHUTDOWN_REASON,
                                                     wait=False)]
        if time.monotonic() >= self._join_deadline:
            self._drop_all()
        else:
            self.loop.call_later(_CLOSE_RETRY, self._close_clients)

    def _drop_all(self) -> None:
        """Drop the clients still there; the loop stops once the pool has finished them,
        or in a second."""
        if self._dropping:
            return
        self._dropping = True
        with self._lock:
            late = list(self.clients)
        for client in late:
            logger.info('%s: no close handshake within max_join_time, dropping', client)
            client.abort()  # its socket turns readable: the pool finishes it
        self.loop.call_later(_DROP_WAIT, self.loop.stop)
        self._stop_if_all_gone()

    def _stop_if_all_gone(self) -> bool:
        """Stop the loop if no client is left; whether it was stopped."""
        with self._lock:
            gone = not self.clients and not self._handshaking
        if gone:
            self.loop.stop()
        return gone

    def _release(self) -> None:
        self._close_listener()
        self.loop.close()
