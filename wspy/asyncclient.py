"""`AsyncClient`: client connections on the event loop, with the servers' callbacks.

Thousands of connections from one thread: the TCP connect, TLS and the
upgrade run without blocking, on the same `Loop` (and the same
`AsyncConnection`) as `AsyncServer`, which can share its loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from wspy.client import proxy_for
from wspy.asyncserver import DEFAULT, AsyncConnection, Default, LoopClients
from wspy.channel import Channel
from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT
from wspy.errors import (HandshakeError, HandshakeTimeout, InvalidState, InvalidStatus,
                         InvalidURI, SocketClosed, SSLError, WebSocketError)
from wspy.protocol.frame import DEFAULT_MAX_SIZE
from wspy.protocol.handshake import check_header_items
from wspy.loop import READ, WRITE, Loop, Timer
from wspy.options import ASYNC_CLIENT_OPTIONS, check_options
from wspy.protocol.opening import (MAX_REDIRECTS, URI, ClientHandshake, ClientOpening, Tunnel,
                                   without_credentials)
from wspy.tls import client_context
from wspy.websocket import HANDSHAKE_TIMEOUT, websocket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wspy.options import AsyncClientOptions, ClientSSLArgs, ConnectionOptions

logger = logging.getLogger('wspy')

_Address = tuple[int, int, int, Any]  # family, type, proto, socket address
_CONNECT_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY}
# Host names are resolved here, off the loop (numeric addresses need no thread).
_resolver: ThreadPoolExecutor | None = None
_resolver_lock = threading.Lock()


def _resolve(host: str, port: int) -> Future[list[Any]]:
    global _resolver
    with _resolver_lock:
        if _resolver is None:
            _resolver = ThreadPoolExecutor(4, thread_name_prefix='wspy-resolver')
    return _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)


class Connecting:
    """A connection that `AsyncClient.connect()` is opening.

    `connection` is the `AsyncConnection` once open (before `onopen`);
    `error` is what made it fail (given to `onconnecterror`). Applications
    may add attributes of their own to find it again. `AsyncClient.connect()`
    makes it: its arguments are internal.
    """

    def __init__(self, client: AsyncClient, url: str, opening: ClientOpening,
                 options: AsyncClientOptions, server_hostname: str | None = None,
                 source_address: tuple[str, int] | None = None,
                 proxy: str | bool | None = None) -> None:
        self.client = client
        #: The URL asked for.
        self.url = url
        #: Where the opening stands: the URL tried now (after redirects), its headers.
        self.opening = opening
        #: The open connection, once the handshake is done.
        self.connection: AsyncConnection | None = None
        #: The reason the connection could not be opened.
        self.error: Exception | None = None
        self._options = options
        self._server_hostname = server_hostname
        self._unix_socket: str | None = None
        self._proxy = proxy
        self._tunnel: Tunnel | None = None  # this attempt's, through a proxy
        self.source_address = source_address
        self._addresses: list[_Address] = []
        self._errors: list[OSError] = []
        self._handshake: _ClientHandshake | None = None
        self._timer: Timer | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the connection is open or has failed."""
        return self._done

    @property
    def uri(self) -> URI:
        """The URL tried now, parsed."""
        return self.opening.uri

    def _start(self, unix_socket: str | None, timeout: float | None) -> None:
        """Resolve, then connect (loop thread); `timeout` bounds every attempt together."""
        if timeout is not None:
            self._timer = self.client.loop.call_later(timeout, self._timed_out, timeout)
        self._unix_socket = unix_socket
        self._attempt()

    def _timed_out(self, timeout: float) -> None:
        handshake = self._handshake
        if handshake is not None and handshake.tunnel is not None:
            self._fail(handshake.tunnel.timed_out())
        else:
            self._fail(HandshakeTimeout(f'{without_credentials(self.url)}: not open within '
                                        f'{timeout} s'))

    def _attempt(self) -> None:
        """Connect to the URL the opening tries now, with its headers."""
        loop = self.client.loop
        self._errors = []
        if self._unix_socket is not None:
            self._connect_to([(socket.AF_UNIX, socket.SOCK_STREAM, 0, '', self._unix_socket)])
            return
        proxy = proxy_for(self.uri, self._proxy)
        try:
            self._tunnel = None if proxy is None else Tunnel(self.uri, proxy)
        except InvalidURI as error:
            self._fail(error)
            return
        host, port = self._target()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            future = _resolve(host, port)
            future.add_done_callback(
                lambda done: loop.call_soon_threadsafe(self._resolved, done))
            return
        self._connect_to(infos)

    def _resolved(self, future: Future[list[Any]]) -> None:
        if self._done:
            return
        try:
            infos = future.result()
        except OSError as error:
            self._fail(OSError(f'cannot resolve {self._target()[0]}: {error}'))
            return
        self._connect_to(infos)

    def _connect_to(self, infos: list[Any]) -> None:
        """Try each address that `getaddrinfo` gave, in turn."""
        self._addresses = [(family, kind, proto, address)
                           for family, kind, proto, _, address in infos]
        self._next_address()

    def _next_address(self) -> None:
        """Try the next address of the host; fail when none is left."""
        while self._addresses and not self._done:
            family, kind, proto, address = self._addresses.pop(0)
            opening = self.opening
            options: AsyncClientOptions = {**self._options, 'host': opening.host_header,
                                           'headers': opening.headers}
            try:
                sock = websocket(family, kind, proto, location=opening.uri.resource, **options)
            except OSError as error:  # out of file descriptors, for one
                self._errors.append(error)
                continue
            try:
                if opening.uri.secure:
                    sock.enable_ssl(self.client._tls_context(),
                                    server_hostname=self._server_hostname or opening.uri.host)
                self._handshake = _ClientHandshake(self, sock, address, self._tunnel)
                return
            except OSError as error:
                sock.close()
                self._errors.append(error)
        if not self._done:
            errors = self._errors
            self._fail(errors[0] if len(errors) == 1 else OSError(
                f'cannot connect to {self.uri.authority}: ' + '; '.join(map(str, errors))))

    def _address_failed(self, error: OSError) -> None:
        """The TCP connection to one address failed: go on with the next."""
        self._errors.append(error)
        self._handshake = None
        self._next_address()

    def _opened(self, handshake: _ClientHandshake) -> None:
        self._done = True
        self._stop_timer()
        self._handshake = None
        self.client._open(self, handshake)

    def _target(self) -> tuple[str, int]:
        """The host and port this attempt connects to: the URL's, or its proxy's."""
        if self._tunnel is None:
            return self.uri.host, self.uri.port
        return self._tunnel.host, self._tunnel.port

    def _refused(self, error: InvalidStatus) -> None:
        """The server answered but not 101: a redirect or challenge starts a new attempt."""
        if self._handshake is not None:
            self._handshake._drop()
            self._handshake = None
        try:
            self.opening.refused(error)
        except WebSocketError as final:  # the answer itself, or a redirect not followed
            self._fail(final)
            return
        self._attempt()

    def _fail(self, error: Exception) -> None:
        if self._done:
            return
        self._done = True
        self._stop_timer()
        if self._handshake is not None:
            self._handshake._drop()
            self._handshake = None
        if isinstance(error, ssl.SSLError):
            wrapped = SSLError(f'TLS failed: {error}')
            wrapped.__cause__ = error
            error = wrapped
        self.error = error
        self.client._connect_failed(self)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _abandon(self) -> None:
        """Give up quietly (the client shuts down)."""
        if self._handshake is not None:
            self._handshake._drop()
        self._done = True
        self._stop_timer()

    def __repr__(self) -> str:
        state = ('open' if self.connection is not None else 'failed' if self.error is not None
                 else 'connecting')
        return f'<wspy.Connecting {without_credentials(self.url)} {state}>'


class _ClientHandshake(Channel):
    """One attempt: TCP connect, a proxy's tunnel, TLS, the upgrade request and its answer,
    without blocking."""

    __slots__ = (*Channel.SLOTS, 'connecting', 'sock', '_send_lock', 'handshake',
                 '_tls_handshaking', 'tunnel')

    def __init__(self, connecting: Connecting, sock: websocket, address: Any,
                 tunnel: Tunnel | None = None) -> None:
        loop = connecting.client.loop
        self._channel_init(loop, sock)
        self.connecting = connecting
        self.sock = sock
        self._send_lock = contextlib.nullcontext()  # written on the loop thread only
        #: The upgrade request and the answer to it, once the request is sent.
        self.handshake: ClientHandshake | None = None
        self._tls_handshaking = False
        #: The tunnel through a proxy while it is being opened.
        self.tunnel = tunnel
        sock.setblocking(False)
        source = connecting.source_address
        if source is not None and sock.family != socket.AF_UNIX:
            sock.bind(source)
        error = sock.connect_ex(address)
        if error == 0:
            loop.register(sock, READ, self._on_readable)
            self._connected()
        elif error in _CONNECT_IN_PROGRESS and sock.family != socket.AF_UNIX:
            loop.register(sock, WRITE, self._on_connect_event)
        else:
            raise OSError(error, f'cannot connect to {address}: {os.strerror(error)}')

    def _on_connect_event(self, mask: int) -> None:
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._drop()
            self.connecting._address_failed(OSError(error, os.strerror(error)))
            return
        self._events = READ
        self.loop.modify(self.sock, READ, self._on_readable)
        self._connected()

    def _connected(self) -> None:
        if self.tunnel is not None:
            self._queue(self.tunnel.request)
        else:
            self._start_websocket()

    def _start_websocket(self) -> None:
        """Connected to the server (directly, or through the tunnel): TLS, then the request."""
        sock = self.sock
        if sock.ssl_context is not None:
            self._tls_handshaking = True
            self._advance_tls()
        else:
            self._send_request()

    def _advance_tls(self) -> None:
        try:
            done = self.sock.tls_handshake_step()
        except (ssl.SSLError, OSError) as error:
            self._lost(error)
            return
        if self.sock.unsent():
            self._watch(READ | WRITE)
        if done:
            self._tls_handshaking = False
            self._send_request()
            if self.sock.pending():
                self.loop.call_soon(self._resume_reading)

    def _send_request(self) -> None:
        self.handshake = self.sock.upgrade_request()
        self._queue(self.handshake.request)

    def _on_readable(self, mask: int = READ) -> None:
        if not self._tls_handshaking:
            super()._on_readable()
            return
        tls = self.sock.tls
        assert tls is not None
        try:
            data = socket.socket.recv(self.sock, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lost(error)
            return
        if not data:
            self._lost(SocketClosed('connection closed during the TLS handshake'))
            return
        tls.feed(data)
        self._advance_tls()

    def _received(self, count: int) -> None:
        if self.tunnel is not None:
            try:
                opened = self.tunnel.feed(bytes(self.loop.view[:count]))
            except HandshakeError as error:
                self._lost(error)
                return
            if opened:
                self.tunnel = None
                self._start_websocket()
            return
        self._answered(self.loop.view[:count])

    def _answered(self, data: memoryview | bytes) -> None:
        """Feed the server's answer to the handshake: open, refused, or failed."""
        handshake = self.handshake
        assert handshake is not None
        try:
            if not handshake.feed(data):
                return
        except InvalidStatus as error:
            self.connecting._refused(error)
            return
        except HandshakeError as error:
            self._lost(error)
            return
        self.sock.finish_handshake(handshake)
        self.connecting._opened(self)

    def _got(self, count: int) -> None:
        if self.handshake is None:
            super()._got(count)
        else:  # the end of the stream: the handshake tells what it means now
            self._answered(b'')

    def _reading(self) -> bool:
        return not self._dropped and not self.connecting.done

    def _lost(self, error: Exception) -> None:
        self.connecting._fail(error)


class AsyncClient(LoopClients):
    """Client connections on an event loop, with the callbacks of the servers.

    `connect(url)` returns at once (a `Connecting`); the connection then
    opens without blocking, and `onopen(client)`, `onmessage(client,
    message)`, `onclose(client, code, reason)`, `onerror`, `onping`,
    `onpong` and `onsent` are called as on `AsyncServer`; a connection
    that cannot be opened goes to `onconnecterror(connecting, error)`.
    Give `loop=server.loop` to run on an `AsyncServer`'s loop; otherwise
    the client has a loop of its own, run by `run()` or `start()`.

    Keyword options: the connections' (`max_message_size`,
    `close_timeout`, `ping_interval`, `ping_timeout`, `max_buffer_size`),
    TLS (`ssl_context` or `ssl_args`, as `wspy.connect`), and those of
    `websocket` (`wspy.options.AsyncClientOptions`: `origin`, `protocols`,
    `extensions`, `headers`, `max_frame_size`, `handshake_timeout`, ...),
    which `connect()` may also take for one connection; any other is a
    `TypeError` at once. Redirects are followed up to
    `max_redirects` times and 401 challenges answered with `auth=(user,
    password)` (or the URL's credentials), under the rules of
    `wspy.connect`: never from wss:// to ws://, and no credentials to
    another origin. `proxy` tunnels through an http:// proxy with CONNECT,
    as `wspy.connect` does.

    Args:
        loop: the `wspy.loop.Loop` to run on (`server.loop` to share an
            `AsyncServer`'s); None makes one of the client's own.
        max_message_size: each connection's (see `Connection`).
        close_timeout: each connection's (see `Connection`).
        ping_interval: each connection's keepalive (see `Connection`).
        ping_timeout: each connection's keepalive (see `Connection`).
        max_buffer_size: the most bytes queued for a connection before it
            is closed with 1008 for not reading (as on `AsyncServer`).
        ssl_context: the `ssl.SSLContext` for wss://; by default the
            system's CAs, with host name checks.
        ssl_args: changes to the default context (as `wspy.connect`'s).
        max_join_time: seconds `shutdown()` gives the connections' close
            handshakes before it drops them.
        auth: (user, password) to answer a 401 with, for every connection.
        max_redirects: the most redirects followed, for each connection.
        proxy: an http:// proxy URL, or True for the environment's.
        **options: the `websocket`'s, for every connection
            (`wspy.options.AsyncClientOptions`).

    Raises:
        TypeError: an unknown keyword option.
    """

    connection_class: type[AsyncConnection] = AsyncConnection
    clients: set[AsyncConnection]
    _shutdown_reason = 'client shutting down'

    def __init__(self, loop: Loop | None = None, *,
                 max_message_size: int | None = DEFAULT_MAX_SIZE,
                 close_timeout: float = CLOSE_TIMEOUT,
                 ping_interval: float | None = PING_INTERVAL,
                 ping_timeout: float | None = PING_TIMEOUT,
                 max_buffer_size: int | Default | None = DEFAULT,
                 ssl_context: ssl.SSLContext | None = None,
                 ssl_args: ClientSSLArgs | None = None, max_join_time: float = 2.0,
                 auth: tuple[str, str] | None = None, max_redirects: int = MAX_REDIRECTS,
                 proxy: str | bool | None = None, **options: Unpack[AsyncClientOptions]) -> None:
        check_options(type(self).__name__, options, ASYNC_CLIENT_OPTIONS)
        #: The options of each connection.
        self.connection_options: ConnectionOptions = {
            'max_message_size': max_message_size, 'close_timeout': close_timeout,
            'ping_interval': ping_interval, 'ping_timeout': ping_timeout}
        self._owns_loop = loop is None
        self._on_loop(Loop() if loop is None else loop, max_buffer_size)
        if ssl_context is None and ssl_args is not None:
            ssl_context = client_context(**ssl_args)
        self.ssl_context = ssl_context
        self.max_join_time = max_join_time
        self.auth = auth
        self.max_redirects = max_redirects
        self.proxy = proxy
        #: The socket options of every connection (`connect()` may add to them).
        self.options = options
        self.clients = set()
        self._connecting: set[Connecting] = set()
        self._stopped = threading.Event()
        self._running = False

    # -- opening --------------------------------------------------------------------

    def connect(self, url: str, *, unix_socket: str | None = None,
                source_address: tuple[str, int] | None = None,
                server_hostname: str | None = None, auth: tuple[str, str] | None = None,
                proxy: str | bool | None = None,
                **options: Unpack[AsyncClientOptions]) -> Connecting:
        """Start opening a connection to a ws:// or wss:// URL; safe from any thread.

        It returns at once; the connection opens on the loop, then
        `onopen(client)` is called, or `onconnecterror(connecting, error)`
        with any failure (`InvalidStatus`, `HandshakeTimeout` after
        `handshake_timeout`, `OSError`, ...).

        Args:
            url: the URL, with credentials if the server asks for them.
            unix_socket: a path: connect to a server on that Unix socket
                instead of the URL's host.
            source_address: the (host, port) to connect from.
            server_hostname: the name checked against a wss:// certificate
                (and sent as SNI); the URL's host by default.
            auth: (user, password) for this connection; the client's by
                default.
            proxy: the http:// proxy (or True for the environment's) for
                this connection; the client's by default.
            **options: the `websocket`'s for this connection, over the
                client's (`wspy.options.AsyncClientOptions`).

        Returns:
            The `Connecting` that follows the opening: its `connection`
            once open, its `error` once failed.

        Raises:
            TypeError: an unknown keyword option.
            InvalidURI: a URL that is not ws:// or wss://.
            InvalidState: the client is shutting down.
        """
        check_options(f'{type(self).__name__}.connect', options, ASYNC_CLIENT_OPTIONS)
        if self._shutting_down:
            raise InvalidState('the client is shutting down')
        socket_options: AsyncClientOptions = {**self.options, **options}
        opening = ClientOpening(url, check_header_items(socket_options.get('headers', ())),
                                auth or self.auth, self.max_redirects,
                                socket_options.get('host'))
        timeout = socket_options.setdefault('handshake_timeout', HANDSHAKE_TIMEOUT)
        if opening.uri.secure:
            self._tls_context()  # here, not on the loop: loading the CAs takes a while
        connecting = Connecting(self, url, opening, socket_options, server_hostname,
                                source_address, self.proxy if proxy is None else proxy)
        self.loop.call_soon_threadsafe(self._start, connecting, unix_socket, timeout)
        return connecting

    def _tls_context(self) -> ssl.SSLContext:
        """The context for wss:// connections: the one given, or the system's CAs (made once)."""
        if self.ssl_context is None:
            self.ssl_context = client_context()
        return self.ssl_context

    def _start(self, connecting: Connecting, unix_socket: str | None,
               timeout: float | None) -> None:
        if self._shutting_down:
            return
        self._connecting.add(connecting)
        connecting._start(unix_socket, timeout)

    def _open(self, connecting: Connecting, handshake: _ClientHandshake) -> None:
        """The handshake is done: the connection joins `clients` (loop thread)."""
        self._connecting.discard(connecting)
        client = connecting.connection = self._adopt(handshake.sock)
        self._opened(client)

    def _connect_failed(self, connecting: Connecting) -> None:
        self._connecting.discard(connecting)
        try:
            self.onconnecterror(connecting, connecting.error)  # type: ignore[arg-type]
        except Exception:
            logger.exception('error in onconnecterror')

    # -- running --------------------------------------------------------------------

    def run(self) -> None:
        """Run the client's own loop until `shutdown()`; any connection left is then dropped.

        Raises:
            InvalidState: the client runs on another's loop (run that).
        """
        if not self._owns_loop:
            raise InvalidState("this client runs on another's loop: run that instead")
        self._running = True
        try:
            self.loop.run()
        finally:
            for connecting in list(self._connecting):
                connecting._abandon()
            self._drop_clients()
            self.loop.close()
            self._running = False
            self._stopped.set()

    def start(self) -> threading.Thread:
        """Run the client's own loop in a background thread, which is returned."""
        self._running = True  # so that a shutdown() right away waits for run() to end
        thread = threading.Thread(target=self.run, name='wspy-AsyncClient', daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        """Close every connection with 1001 and stop connecting; safe from any thread.

        With a loop of its own, the loop stops once every connection has
        closed (at most `max_join_time`), and from another thread this
        waits for that.
        """
        if self._owns_loop and not self._running:
            self._begin_shutdown()  # nothing runs the loop: nothing to wait for
            return
        self.loop.call_soon_threadsafe(self._begin_shutdown)
        self.loop.wake()
        if self._owns_loop and not self.loop.in_loop_thread():
            self._stopped.wait()

    def _begin_shutdown(self) -> None:
        if self._shutting_down:
            return
        for connecting in list(self._connecting):
            connecting._abandon()
        self._connecting.clear()
        self._close_clients()

    # -- callbacks ------------------------------------------------------------------

    def onconnecterror(self, connecting: Connecting, error: Exception) -> None:
        """Called when a connection could not be opened; by default it logs a warning.

        Args:
            connecting: what `connect()` returned: `connecting.url` says which.
            error: why (also `connecting.error`): an `InvalidStatus`,
                `RedirectError`, `HandshakeTimeout`, `SSLError`, `OSError`, ...
        """
        logger.warning('cannot open %s: %s', without_credentials(connecting.url), error)
