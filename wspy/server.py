"""Servers with callbacks: `BaseServer` (what all share) and `Server` (a pool of threads)."""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import select
import selectors
import socket
import ssl
import stat
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.errors import HandshakeError, HandshakeTimeout, SSLError, WriteTimeout
from wspy.protocol.frame import CLOSE_GOING_AWAY, DEFAULT_MAX_SIZE
from wspy.protocol.handshake import HeadReader, Request, Response
from wspy.protocol.message import Message
from wspy.threadpool import ThreadPool
from wspy.tls import server_context
from wspy.websocket import LINGER_TIME, websocket

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
    `Server`, `AsyncConnection` on `AsyncServer` and `AsyncClient`.
    """

    def onopen(self, client: _Client) -> None:
        """Called when a client's connection is open."""
        logger.debug('%s: open', client)

    def onmessage(self, client: _Client, message: Message) -> None:
        """Called with each message a client sends."""

    def onping(self, client: _Client, payload: bytes) -> None:
        """Called when a client's ping arrives (the pong is sent automatically)."""

    def onpong(self, client: _Client, payload: bytes) -> None:
        """Called when a client's pong arrives."""

    def onclose(self, client: _Client, code: int, reason: str) -> None:
        """Called once when a client's connection has closed."""
        logger.debug('%s: closed %d %s', client, code, reason)

    def onerror(self, client: _Client, error: Exception) -> None:
        """Called with a client's protocol error, lost connection or callback exception."""
        Connection.onerror(client, error)


class ServerConnection(Connection):
    """A connection on a server (or an `AsyncClient`): forwards its callbacks to it."""

    __slots__ = ('server',)

    def __init__(self, server: Callbacks[Self], sock: websocket,
                 **options: Unpack[ConnectionOptions]) -> None:
        self.server = server
        super().__init__(sock, **options)

    def _receive_for_keepalive(self) -> bool:
        return False  # the server reads its clients as soon as bytes arrive

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

    `address` is bound at once (an IPv6 address binds IPv6, a string a Unix
    socket), so `address` tells the port when binding port 0. For wss://,
    give `ssl_args` (`certfile`, `keyfile`, `password`; `cafile` to require
    client certificates) or an `ssl.SSLContext` as `ssl_context`.
    `max_connections` bounds the connections served at once (others are
    answered 503). A Unix socket path left by a server that is gone is
    replaced, and the path is removed when the server stops. `reuse_port`
    sets SO_REUSEPORT (several processes listening on one port);
    `listener` is a listening socket to serve instead of binding `address`
    (one inherited from a parent process). `trusted_proxies` (addresses,
    networks, 'unix') are the reverse proxies whose `X-Forwarded-For` gives
    `client.client_address`. `loglevel` sets the level of the 'wspy'
    logger and, when logging is not configured, shows it on stderr (see
    `use_loglevel`). Keyword options go to the connections
    (`max_message_size`, `close_timeout`, `ping_interval`, `ping_timeout`)
    and to `websocket` (handshake options and limits): `wspy.options`
    documents them all (`ServerOptions`).

    Generic in the class of its connections (`connection_class`), which its
    callbacks take.
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

    def start(self) -> threading.Thread:
        """Run the server in a background thread, which is returned."""
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
        for plain browser GETs. Returning None goes on with the WebSocket
        handshake; a plain GET without an upgrade then gets 426. Runs on the
        server's thread for that client (on `AsyncServer`, the loop: keep it
        quick). `request.path`, `request.query_params` and
        `request.headers` tell what was asked.
        """
        return None


class _HeadWait:
    """A client whose upgrade request is still arriving, read by `Server.run()`'s thread."""

    __slots__ = ('address', 'reader')

    def __init__(self, sock: websocket, address: Any) -> None:
        self.address = address
        self.reader: HeadReader = sock.head_reader()


class Server(BaseServer[ServerConnection]):
    """A WebSocket server whose clients are served by a pool of threads.

    Subclass it and override the callbacks, which take the client (a
    `ServerConnection`) first. A client holds a thread only while it has
    something to do (its handshake, the frames that arrived and the
    callbacks they call); idle clients wait in one selector, so thousands of
    them hold no thread. One client's callbacks run one at a time, in
    order; other clients' run meanwhile, and a callback may block (the pool
    starts another thread). Sending is blocking and safe from any thread.
    `run()` serves until `shutdown()`, which may be called from any thread
    or a signal handler: clients get a 1001 close and up to
    `max_join_time` seconds for their close handshakes (a second
    `shutdown()`, or a second Ctrl-C, drops them at once). Upgrade requests
    (and the TLS handshakes before them) are read without a thread, so
    silent or trickling clients hold none; each is answered (408) and
    closed after `handshake_timeout`.
    """

    connection_class: type[ServerConnection] = ServerConnection

    def __init__(self, address: Address, loglevel: int | None = None,
                 ssl_args: ServerSSLArgs | None = None, max_join_time: float = 2.0,
                 backlog_size: int = BACKLOG, **options: Unpack[ServerOptions]) -> None:
        super().__init__(address, loglevel, ssl_args, max_join_time, backlog_size, **options)
        self._lock = threading.Lock()
        self._handshaking: set[websocket] = set()
        self._pool = ThreadPool(f'wspy-{type(self).__name__}')
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        # Clients whose pool thread is done with them, to watch again (see _woken).
        self._parked: deque[ServerConnection] = deque()
        self._woken_up = False  # a wake-up byte is on its way: no need for another
        self._stopping = False
        self._run_thread: int | None = None
        self._selector: selectors.BaseSelector | None = None
        self._refused: dict[websocket, float] = {}  # answered 503, draining until this time
        # Clients whose upgrade request is still arriving, and their deadlines in a heap
        # of (deadline, sequence, socket): entries of clients gone since stay until due.
        self._heads: dict[websocket, _HeadWait] = {}
        self._head_deadlines: list[tuple[float, int, websocket]] = []
        self._sequence = itertools.count()
        self._forced = False  # a second shutdown(): drop every client at once
        #: Seconds a pool thread waits for more from a client that went quiet before it
        #: hands the client back to the selector (0: at once).
        self.hold_time = HOLD_TIME

    def run(self) -> None:
        """Accept and serve clients until `shutdown()` (or Ctrl-C), then close them all."""
        self._run_thread = threading.get_ident()
        self._running = True
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, self._accept_all)
        selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        logger.info('serving on %s', self.address)
        try:
            try:
                while not self._stopping:
                    self._select(None)
            except KeyboardInterrupt:
                logger.info('interrupted, shutting down')
            try:
                self._close_all()
            except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
                logger.info('interrupted again, dropping every client')
                self._drop_all()
        finally:
            for sock in list(self._refused):
                self._forget_refused(sock)
            for sock in list(self._heads):
                self._drop_head(sock)
            selector.close()
            self._pool.close()
            self._release()
            self._running = False
            self._stopped.set()
            logger.info('server stopped')

    def _select(self, timeout: float | None) -> None:
        """Wait for sockets (at most `timeout`) and handle those ready."""
        assert self._selector is not None
        if self._refused:
            until = max(0.0, min(self._refused.values()) - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        if self._head_deadlines:
            until = max(0.0, self._head_deadlines[0][0] - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, ServerConnection):
                self._dispatch(key.data)
            else:
                key.data(key.fileobj)
        now = time.monotonic()
        if self._refused:
            for sock, until in list(self._refused.items()):
                if until <= now:
                    self._forget_refused(sock)
        deadlines = self._head_deadlines
        while deadlines and deadlines[0][0] <= now:
            sock = heapq.heappop(deadlines)[2]
            if sock in self._heads:  # else answered or gone already
                self._reject_head(sock, HandshakeTimeout(
                    f'handshake not completed within {sock.handshake_timeout} s'))

    # -- accepting --------------------------------------------------------------------

    def _accept_all(self, listener: websocket) -> None:
        while True:
            try:
                sock, address = self.sock.accept(handshake=False)
            except BlockingIOError:
                return
            except OSError as error:
                # Out of file descriptors, for one: keep serving the others.
                logger.error('accept failed: %s', error)
                time.sleep(0.01)
                return
            sock.setblocking(False)
            with self._lock:
                serving = len(self.clients) + len(self._handshaking) + len(self._heads)
            if self._busy(serving):
                self._refuse(sock, BUSY)
                continue
            self._heads[sock] = _HeadWait(sock, address)
            timeout = sock.handshake_timeout
            if timeout is not None:
                heapq.heappush(self._head_deadlines,
                               (time.monotonic() + timeout, next(self._sequence), sock))
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ, self._read_head)

    def _read_head(self, sock: websocket) -> None:
        """Read what has come of a client's upgrade request (and TLS handshake), no waiting.

        Once the head is complete, a pool thread answers it (`_handshake`).
        """
        wait = self._heads[sock]
        head = None
        try:
            while head is None:
                data = sock.recv_bytes(65536)
                if not data:
                    logger.debug('%s closed during its handshake', wait.address)
                    self._drop_head(sock)
                    return
                head = wait.reader.feed(data)
                if head is None and not sock.pending():
                    break
        except (BlockingIOError, InterruptedError):
            pass  # all read; TLS may have answered a handshake message
        except HandshakeError as error:  # bad HTTP, or plain HTTP to a TLS port
            self._reject_head(sock, error)
            return
        except OSError as error:
            logger.log(logging.INFO if isinstance(error, ssl.SSLError) else logging.DEBUG,
                       'handshake with %s failed: %s', wait.address, error)
            self._drop_head(sock)
            return
        if head is not None:
            self._forget_head(sock)
            sock.setblocking(True)
            with self._lock:
                self._handshaking.add(sock)
            self._pool.submit(self._handshake, sock, wait.address, head, wait.reader.rest)
            return
        self._watch_head(sock)

    def _watch_head(self, sock: websocket) -> None:
        """Watch a client's socket for its request, and for room while TLS output waits."""
        try:
            unsent = not sock.send_unsent()
        except OSError:
            unsent = False  # the next read tells
        assert self._selector is not None
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if unsent else 0)
        if self._selector.get_key(sock).events != events:
            self._selector.modify(sock, events, self._read_head)

    def _forget_head(self, sock: websocket) -> None:
        """Stop watching a client whose upgrade request was being read."""
        del self._heads[sock]
        assert self._selector is not None
        self._selector.unregister(sock)

    def _drop_head(self, sock: websocket) -> None:
        """Forget a client whose upgrade request was being read, and close its socket."""
        self._forget_head(sock)
        sock.close()

    def _reject_head(self, sock: websocket, error: HandshakeError) -> None:
        self._forget_head(sock)
        logger.info('rejected handshake from %s: %s', sock.peer_address(), error)
        self._refuse(sock, error)

    def _refuse(self, sock: websocket, error: HandshakeError) -> None:
        """Answer an HTTP error without a thread; keep reading until the client closes
        (or LINGER_TIME).

        A client whose TLS handshake is not done could not read it: it is just
        disconnected.
        """
        if sock.tls is not None and sock.tls.object.version() is None:
            sock.close()
            return
        try:
            sock.send_bytes(sock.rejection(error))
            sock.send_unsent()
            sock.shutdown_write()
        except OSError:
            sock.close()
            return
        assert self._selector is not None
        self._refused[sock] = time.monotonic() + LINGER_TIME
        self._selector.register(sock, selectors.EVENT_READ, self._drain_refused)

    def _drain_refused(self, sock: websocket) -> None:
        try:
            if socket.socket.recv(sock, 65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._forget_refused(sock)

    def _forget_refused(self, sock: websocket) -> None:
        del self._refused[sock]
        assert self._selector is not None
        self._selector.unregister(sock)
        sock.close()

    # -- serving, on the pool's threads -------------------------------------------------

    def _handshake(self, sock: websocket, address: Any, head: bytes, rest: bytes) -> None:
        """Answer a client's upgrade request (on a pool thread), then serve the client."""
        try:
            sock.respond(head, rest)
        except (HandshakeError, OSError, WriteTimeout) as error:
            logger.log(logging.INFO if isinstance(error, SSLError) else logging.DEBUG,
                       'handshake with %s failed: %s', address, error)
            with self._lock:
                self._handshaking.discard(sock)
            sock.close()
            return
        try:
            client = self.connection_class(self, sock, **self.connection_options)
        except Exception:  # a connection_class of the application's
            logger.exception('could not set up the connection from %s', address)
            client = None
        with self._lock:
            self._handshaking.discard(sock)
            if client is not None:
                self.clients.add(client)
            stopping = self._stopping
        if client is None:
            sock.close()
            return
        if stopping:
            client.start_close(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
        client._callback(client.onopen)
        # While the server watches or reads the client, it holds the receive lock:
        # close() from another thread then leaves the reading to the server.
        client._recv_lock.acquire()
        self._serve(client, readable=False)  # frames that came with the request

    def _serve(self, client: ServerConnection, readable: bool = True) -> None:
        """Apply what arrives for `client` while it is busy; then watch it again (or forget it).

        A client that sends again within `hold_time` keeps its thread: a
        conversation of quick exchanges does not go through the selector
        (and to another thread) for each message.
        """
        try:
            is_open = client._receive_ready(readable)
            while is_open and self.hold_time and _readable_within(client.sock, self.hold_time):
                is_open = client._receive_ready()
        except Exception:
            logger.exception('unexpected error serving %s', client)
            client.abort()
            client._finish()
            is_open = False
        if is_open:
            self._parked.append(client)
            if not self._woken_up:
                self._woken_up = True
                self._wake()
            return
        with self._lock:
            self.clients.discard(client)
        client._recv_lock.release()

    # -- watching idle clients, on the run() thread ------------------------------------

    def _dispatch(self, client: ServerConnection) -> None:
        assert self._selector is not None
        self._selector.unregister(client.sock)
        self._pool.submit(self._serve, client)

    def _woken(self, wake: socket.socket) -> None:
        try:
            while wake.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # After the bytes are read, before the parked are taken: a client parked
        # from now on is either taken below or sends a new byte.
        self._woken_up = False
        assert self._selector is not None
        while self._parked:
            client = self._parked.popleft()
            try:
                self._selector.register(client.sock, selectors.EVENT_READ, client)
            except (ValueError, OSError) as error:  # its socket failed under it meanwhile
                logger.debug('%s: cannot watch it: %s', client, error)
                self._pool.submit(self._serve, client)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b'\0')
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already

    # -- stopping ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting, close every client with 1001 and wait for `run()` to end.

        From a signal handler or a callback on the server's own threads it
        only asks `run()` to stop, and returns at once. Called again while
        the clients' close handshakes are under way, it drops them at once.
        """
        if self._stopping:
            self._forced = True
        self._stopping = True
        self._wake()
        if self._running and self._run_thread != threading.get_ident() and \
                not self._pool.owns_current_thread():
            self._stopped.wait()

    def _close_all(self) -> None:
        """1001 to every client; serve their close handshakes for up to `max_join_time`."""
        assert self._selector is not None
        self._selector.unregister(self.sock)
        self._close_listener()
        for sock in list(self._heads):
            self._drop_head(sock)
        with self._lock:
            handshaking = list(self._handshaking)
        for sock in handshaking:
            # Only the reading side: a stalled handshake wakes up and fails,
            # while one that just succeeded can still send its close frame.
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self._serve_until_gone(time.monotonic() + self.max_join_time, closing=True)
        self._drop_all()

    def _drop_all(self) -> None:
        """Drop the clients still there, and give the pool a second to finish them."""
        with self._lock:
            late = list(self.clients)
        for client in late:
            logger.info('%s: no close handshake within max_join_time, dropping', client)
            client.abort()  # its socket turns readable: the pool finishes it
        self._serve_until_gone(time.monotonic() + 1.0)

    def _serve_until_gone(self, deadline: float, closing: bool = False) -> None:
        """Serve until every client has gone, or `deadline` (or, `closing`, a forced stop).

        With `closing`, 1001 goes to every client that has not had it yet:
        a close frame is written only when that cannot block (a client that
        does not read, or one a pool thread is writing to, is tried again).
        """
        while not (closing and self._forced):
            with self._lock:
                clients = list(self.clients) if closing else ()
                gone = not self.clients and not self._handshaking
            for client in clients:
                if client.close_sent is None:
                    client._send_close(CLOSE_GOING_AWAY, SHUTDOWN_REASON, wait=False)
            remaining = deadline - time.monotonic()
            if gone or remaining <= 0:
                return
            self._select(min(remaining, 0.05))

    def _release(self) -> None:
        self._close_listener()
        self._wake_r.close()
        self._wake_w.close()
