"""`websocket`: a `socket.socket` that speaks frames after an HTTP upgrade."""

from __future__ import annotations

import _socket
import contextlib
import logging
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from wspy.auth import Authenticator
from wspy.protocol.auth import basic_authorization
from wspy.errors import (HandshakeError, HandshakeTimeout, InvalidState, SocketClosed, SSLError,
                         WriteTimeout)
from wspy.protocol.extension import Extension, Hook
from wspy.protocol.forwarded import TrustedProxies
from wspy.protocol.frame import (DEFAULT_MAX_SIZE, MESSAGE_LIMIT, Frame, FrameParser,
                                 MessageLimit)
from wspy.protocol.handshake import (MAX_HEAD_SIZE, MAX_HEADERS, MAX_LINE_LENGTH, HeaderItems,
                                     HeadReader, Request, Response, check_header_items,
                                     first_supported, format_host)
from wspy.protocol.opening import ClientHandshake
from wspy.protocol.server_opening import ServerOpening, rejection
from wspy.protocol.tls import CHUNK_SIZE, TLS, PlainHTTPOnTLSPort
from wspy.tls import client_context, server_context

logger = logging.getLogger('wspy')
_T = TypeVar('_T')

#: Default time allowed for a whole opening handshake, in seconds.
HANDSHAKE_TIMEOUT = 10.0
#: Default time a write may wait for the peer to take any byte, in seconds.
WRITE_TIMEOUT = 30.0
# Sends that never block: a blocking socket stays blocking for the thread reading it.
# A plain int: or-ing the enum member costs 2 us a send (a third of a small message's).
_DONTWAIT = int(getattr(socket, 'MSG_DONTWAIT', 0))
_TCP_CORK: int | None = getattr(socket, 'TCP_CORK', None)
_RECV_SIZE = 1 << 17
_TLS_RECV_SIZE = 1 << 18
#: How long, and how much, a rejected client's further input is read and dropped.
LINGER_TIME = 1.0
LINGER_BYTES = 1 << 20


_per_thread = threading.local()
# The keyword options of a websocket, in the order __init__ sets them.
_OPTIONS = ('location', 'host', 'origin', 'protocols', 'extensions', 'headers', 'select_protocol',
            'process_request', 'auth', 'trusted_origins', 'locations', 'trusted_proxies',
            'max_frame_size', 'handshake_timeout', 'write_timeout', 'max_line_length',
            'max_headers', 'max_head_size')
# What socket.socket's `family` and `type` properties wrap in enums.
_plain_family = _socket.socket.family.__get__
_plain_type = _socket.socket.type.__get__


def _receive_buffer() -> bytearray:
    """This thread's buffer for blocking reads: what is read is parsed before the next read,
    so the sockets a thread reads share one buffer (an idle connection holds none)."""
    buffer: bytearray | None = getattr(_per_thread, 'buffer', None)
    if buffer is None:
        buffer = _per_thread.buffer = bytearray(_RECV_SIZE)
    return buffer


_TCP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


def send_without_delay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP socket (TCP_NODELAY).

    wspy writes each message (or a loop turn's messages) at once. With Nagle on,
    a small write that follows one not yet acknowledged would wait for the
    peer's delayed acknowledgement, up to 40 ms on Linux, whenever the peer is
    only reading: a burst of small messages would stall.
    """
    try:
        family, kind = _plain_family(sock), _plain_type(sock)
    except TypeError:  # gevent's patched socket.socket: no _socket.socket underneath
        family, kind = sock.family, sock.type
    if family in _TCP_FAMILIES and kind == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # macOS, BSDs: EINVAL once the peer has reset; the next I/O tells
            pass


def _standard_socket_class() -> type[socket.socket]:
    """`socket.socket` as the standard library defines it, a `_socket.socket`.

    gevent's monkey-patching replaces `socket.socket` with a class of its own
    that wraps one (and `websocket` calls `_socket.socket`'s methods on
    itself): the original is then taken from gevent. Any other patching is
    left as found (and `wspy.wsgi` refuses to serve WebSockets under it).
    """
    if issubclass(socket.socket, _socket.socket):
        return socket.socket
    monkey = sys.modules.get('gevent.monkey')
    original = None if monkey is None else monkey.get_original('socket', 'socket')
    if isinstance(original, type) and issubclass(original, _socket.socket):
        return cast('type[socket.socket]', original)
    return socket.socket


if TYPE_CHECKING:
    _StandardSocket = socket.socket
else:
    _StandardSocket = _standard_socket_class()


class websocket(_StandardSocket):  # noqa: N801 - the original wspy's name
    """A socket that performs the WebSocket handshake and sends and receives frames.

    `accept()` returns a `websocket` whose server handshake is done;
    `connect(address)` performs the client handshake. After that,
    `send(*frames)` and `recv() -> Frame` exchange frames. Keyword options
    configure the handshake (`location`, `host`, `origin`, `protocols`,
    `headers`, `trusted_origins`, `locations`, `auth`, `trusted_proxies`:
    the reverse proxies whose `X-Forwarded-For` gives
    `request.client_address`) and the limits (`max_frame_size`,
    `handshake_timeout`, `write_timeout`, `max_line_length`, `max_headers`,
    `max_head_size`); accepted sockets inherit them. A write that the peer
    takes no byte of for `write_timeout` seconds (None: no limit) raises
    `WriteTimeout`. `max_frame_size` defaults to `MESSAGE_LIMIT`: the
    `max_message_size` of the `Connection` made over the socket (1 MiB for
    raw frames). `enable_ssl()` before the handshake makes it speak TLS
    (wss).

    `auth` on a server (a listening or accepted socket) is a `BasicAuth` or
    `DigestAuth` that requests must pass. On a client it is the
    `(user, password)` to log in with: they go with the upgrade request as
    Basic credentials, and only over TLS that checks the server's
    certificate (`InvalidState` otherwise: never in plain text). Anything
    else is a `TypeError` when the socket is made or starts listening.

    Args:
        family: as `socket.socket`'s (AF_INET by default).
        type: as `socket.socket`'s (SOCK_STREAM by default).
        proto: as `socket.socket`'s.
        fileno: as `socket.socket`'s: a socket made from a file descriptor.
        location: the request target of a client's upgrade request.
        host: the Host header of a client's request (by default the
            connected address); less its port, the name TLS checks the
            server's certificate against and sends as SNI.
        origin: the Origin header of a client's request (none by default).
        protocols: subprotocols: offered by a client; supported by a
            server, in its order of preference.
        extensions: extensions (`DeflateMessage()`, `DeflateFrame()`, your
            own): offered by a client, accepted by a server.
        headers: extra headers of a client's request, or of a server's 101
            response: a mapping or (name, value) pairs.
        select_protocol: a server's choice of subprotocol,
            `select_protocol(offered, supported)`: by default the first of
            `protocols` the client offered.
        process_request: a server's look at each request first; a
            `Response` it returns is the answer instead of the upgrade.
        auth: a server's `BasicAuth` or `DigestAuth`; a client's (user,
            password).
        trusted_origins: a server's accepted Origin values (None in it
            admits requests without one); others get 403. None: any.
        locations: a server's paths; others get 404. None: any.
        trusted_proxies: a server's reverse proxies (addresses, networks,
            'unix') whose `X-Forwarded-For` gives `request.client_address`.
        max_frame_size: the largest frame accepted, in bytes (1009); by
            default the `max_message_size` of the `Connection` over the
            socket (1 MiB for raw frames); None: no limit.
        handshake_timeout: seconds for the whole opening handshake, however
            slowly the peer sends it (a server answers 408); None: no limit.
        write_timeout: seconds a write may wait for the peer to take any
            byte (`WriteTimeout`); None: no limit.
        max_line_length: the longest HTTP line of the handshake (431).
        max_headers: the most header lines of the handshake (431).
        max_head_size: the largest HTTP head of the handshake (431).

    Raises:
        TypeError: an `auth` of the wrong kind for the side, or both
            `auth=(user, password)` and an Authorization header.
        ValueError: a header with a CR, LF or NUL, or a bad
            `trusted_proxies` entry.
    """

    # Slots, and a `__dict__` for anything else: a server holds one of these per client.
    # As instance attributes these 31 would take 1.3 KiB more on CPython 3.11 to 3.13,
    # which keep an instance's attributes compact only up to 29 of them.
    __slots__ = ('__dict__', *_OPTIONS, 'server_side', 'request', 'response_headers',
                 'protocol', 'hooks', 'parser', 'ssl_context', '_tls_server_side',
                 '_tls_hostname', 'tls', '_peer', '_read_deadline', '_write_deadline')

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None, *, location: str = '/', host: str | None = None,
                 origin: str | None = None, protocols: Iterable[str] = (),
                 extensions: Iterable[Extension] = (), headers: HeaderItems = (),
                 select_protocol: Callable[[list[str], list[str]], str | None] = first_supported,
                 process_request: Callable[[Request], Response | None] | None = None,
                 auth: Authenticator | tuple[str, str] | None = None,
                 trusted_origins: Iterable[str | None] | None = None,
                 locations: Iterable[str] | None = None,
                 trusted_proxies: Iterable[str] | TrustedProxies | None = None,
                 max_frame_size: int | MessageLimit | None = MESSAGE_LIMIT,
                 handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
                 write_timeout: float | None = WRITE_TIMEOUT,
                 max_line_length: int = MAX_LINE_LENGTH, max_headers: int = MAX_HEADERS,
                 max_head_size: int = MAX_HEAD_SIZE) -> None:
        super().__init__(family, type, proto, fileno)
        if fileno is None:
            send_without_delay(self)
        self.location = location
        self.host = host
        self.origin = origin
        self.protocols = list(protocols)
        self.extensions = list(extensions)
        self.headers = check_header_items(headers)
        self.select_protocol = select_protocol
        self.process_request = process_request
        self.auth = _checked_auth(auth, self.headers)
        if isinstance(auth, tuple) and fileno is not None and self._listening():
            raise TypeError(_SERVER_AUTH)
        self.trusted_origins = None if trusted_origins is None else list(trusted_origins)
        self.locations = None if locations is None else list(locations)
        self.trusted_proxies = (trusted_proxies if trusted_proxies is None
                                or isinstance(trusted_proxies, TrustedProxies)
                                else TrustedProxies(trusted_proxies))
        self.max_frame_size = max_frame_size
        self.handshake_timeout = handshake_timeout
        self.write_timeout = write_timeout
        self.max_line_length = max_line_length
        self.max_headers = max_headers
        self.max_head_size = max_head_size
        self._init_state()

    def _init_state(self) -> None:
        """The state of a socket before its handshake."""
        #: True after a server handshake, False after a client handshake.
        self.server_side: bool | None = None
        #: The client's upgrade request (server side).
        self.request: Request | None = None
        #: The status and headers of the server's 101 response (client side).
        self.response_headers: list[tuple[str, str]] = []
        #: The negotiated subprotocol, if any.
        self.protocol: str | None = None
        #: The negotiated extensions' hooks for this connection, in order.
        self.hooks: list[Hook] = []
        self.parser: FrameParser | None = None
        #: The `SSLContext` given to `enable_ssl()`, if any.
        self.ssl_context: ssl.SSLContext | None = None
        self._tls_server_side = False
        self._tls_hostname: str | None = None
        #: The TLS session once TLS is on (see `ssl_object` for certificates).
        self.tls: TLS | None = None
        self._peer: Any = None  # the peer's address, once known
        # The time.monotonic() by which a read must end (see `recv`), if any.
        self._read_deadline: float | None = None
        # The time.monotonic() by which a write must end (a close, a handshake), if any.
        self._write_deadline: float | None = None

    def _listening(self) -> bool:
        """Whether this socket (made from a file descriptor) listens already."""
        accepting = getattr(socket, 'SO_ACCEPTCONN', None)
        try:
            return accepting is not None and bool(self.getsockopt(socket.SOL_SOCKET, accepting))
        except OSError:
            return False

    def listen(self, *backlog: int) -> None:
        """Listen for connections, as `socket.listen`; the sockets it accepts are servers."""
        if isinstance(self.auth, tuple):
            raise TypeError(_SERVER_AUTH)
        super().listen(*backlog)

    def options(self) -> dict[str, Any]:
        """The keyword options this socket was made with, for a socket like it."""
        return {name: getattr(self, name) for name in _OPTIONS}

    # -- handshakes ---------------------------------------------------------

    def accept(self, handshake: bool = True) -> tuple[websocket, Any]:
        """Accept a connection and, unless `handshake` is False, do the server handshake.

        The client's upgrade request is read (within `handshake_timeout`)
        and checked, then answered 101 with its `Sec-WebSocket-Accept`, made
        as RFC 6455 4.2.2 says: "by concatenating /key/ [...] with the string
        "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", taking the SHA-1 hash of this
        concatenated value" and base64-encoding it. The new socket has this
        one's options, and TLS after `enable_ssl()`.

        Args:
            handshake: False to leave the handshake for later
                (`server_handshake()`, or `respond()` with a head read
                already).

        Returns:
            (the accepted `websocket`, the client's address), as
            `socket.accept` gives them.

        Raises:
            HandshakeError: the request is refused: it has been answered with
                its HTTP error (400, 401, 403, 404, 408, 426, 431, ...) and
                the new socket closed.
            TypeError: a listening socket given a client's `auth`.
        """
        if isinstance(self.auth, tuple):
            raise TypeError(_SERVER_AUTH)
        fd, address = self._accept()  # type: ignore[attr-defined]
        sock = self._accepted(fd)
        send_without_delay(sock)
        # What accept() tells, no getpeername() needed; a Unix socket's client has no
        # name of its own (''): it is named after the server's path.
        sock._peer = address or self.unix_name()
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        if self.ssl_context is not None:
            sock.enable_ssl(self.ssl_context, server_side=True)
        if handshake:
            try:
                sock.server_handshake()
            except BaseException:
                sock.close()
                raise
        return sock, address

    def _accepted(self, fd: int) -> websocket:
        """A socket for the connection `fd` accepted on this one, with this one's options."""
        cls = type(self)
        family, kind = _plain_family(self), _plain_type(self)  # ints: no enum lookups
        if cls.__init__ is not websocket.__init__:  # a subclass's own __init__ must run
            return cls(family, kind, self.proto, fileno=fd, **self.options())
        # The options were checked when this socket was made: copy them, not check again.
        sock = cls.__new__(cls)
        _StandardSocket.__init__(sock, family, kind, self.proto, fd)
        for name in _OPTIONS:
            value = getattr(self, name)
            setattr(sock, name, list(value) if type(value) is list else value)
        sock._init_state()
        return sock

    def server_opening(self) -> ServerOpening:
        """This accepted socket's opening handshake as data: a `ServerOpening` following its
        options, to feed with what the client sends."""
        return ServerOpening(self, self.peer_address())

    def server_handshake(self) -> Request:
        """Read the client's upgrade request and answer it (101 or an HTTP error).

        Returns:
            The request, once answered 101.

        Raises:
            HandshakeError: the request was refused and answered with its HTTP
                error (`HandshakeTimeout` after `handshake_timeout`).
        """
        opening = self.server_opening()
        with _Deadline(self, self.handshake_timeout) as deadline:
            try:
                while not opening.feed(deadline.recv(4096, 'the upgrade request')):
                    pass
            except HandshakeError as error:  # timed out or closed: answered all the same
                opening.reject(error)
            else:
                deadline.refresh()
            return self._carry_out(opening)

    def respond(self, head: bytes, rest: bytes = b'') -> Request:
        """Answer an upgrade request's head read already: 101, or the HTTP error raised.

        `rest` is what arrived after the head. A rejected request gets its
        error response (see `reject`) and the `HandshakeError` is raised.
        """
        opening = self.server_opening()
        opening.decide(head, rest)
        return self._carry_out(opening)

    def _carry_out(self, opening: ServerOpening) -> Request:
        """Send what `opening` decided: the 101, then frames; or its rejection, then raise."""
        self.request = opening.request
        if opening.error is not None:
            self._send_rejection(opening.response)
            raise opening.error
        self.sendall(opening.response)
        self.finish_handshake(opening)
        assert opening.request is not None
        return opening.request

    def reject(self, error: HandshakeError) -> None:
        """Answer a request not upgraded with its HTTP response, then linger briefly.

        Never raises `OSError`: a peer that does not read loses the answer.
        """
        self._send_rejection(self.rejection(error))

    def _send_rejection(self, answer: bytes) -> None:
        """Send a rejection's `answer` (within a second), then linger (see `reject`)."""
        self._write_deadline = time.monotonic() + 1.0
        try:
            self.sendall(answer)
        except (OSError, WriteTimeout):
            return
        finally:
            self._write_deadline = None
        self.linger(LINGER_TIME, max_bytes=LINGER_BYTES)

    def answer(self, head: bytes) -> bytes:
        """Check an upgrade request's head; the 101 response to send.

        Sets `request`, `protocol` and `hooks`. Raises `HandshakeError` (with
        the HTTP status) for a request to reject. Does no I/O, so an event
        loop can use it too (`server_opening` does the whole opening so).
        """
        opening = self.server_opening()
        try:
            response = opening.accept(head)
        finally:
            self.request = opening.request
        self.protocol, self.hooks = opening.protocol, opening.hooks
        return response

    def rejection(self, error: HandshakeError) -> bytes:
        """The HTTP response for a request not upgraded: an error (logged here) or an answer."""
        return rejection(error, self.peer_address())

    def linger(self, timeout: float, *, shutdown: bool = True,
               max_bytes: int | None = None) -> None:
        """Close gracefully: shut down our side, then read and drop input until end of file.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy what was sent last (a close frame, an HTTP error)
        before the peer reads it. Gives up after `timeout` seconds or
        `max_bytes`; never raises `OSError`. The socket stays open.
        """
        deadline = time.monotonic() + timeout
        drained = 0
        try:
            if shutdown:
                self.shutdown_write()
            while max_bytes is None or drained < max_bytes:
                count = self._drop_input(deadline)
                if not count:
                    return
                drained += count
        except OSError:  # TimeoutError too
            pass

    def _drop_input(self, deadline: float) -> int:
        """Read and drop the raw input that arrives before `deadline` (`TimeoutError` after
        it): how many bytes, 0 at end of file."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError('the linger time has passed')
        self.settimeout(remaining)
        return len(super().recv(65536))

    def connect(self, address: Any) -> None:
        """Connect to `address` and do the client handshake (TLS first, after `enable_ssl`).

        `handshake_timeout` bounds the whole: TCP connect, TLS and handshake.
        The server's answer is checked as RFC 6455 4.1 asks (its status, its
        `Upgrade` and `Connection`, its `Sec-WebSocket-Accept`, the
        subprotocol and extensions it chose). `wspy.connect()` does more:
        redirects, authentication, proxies.

        Raises:
            InvalidStatus: the server answered other than 101.
            HandshakeError: the answer does not match the request
                (`InvalidHeader`, `NegotiationError`), `HandshakeTimeout`,
                or `SSLError` when TLS failed.
            InvalidState: a client `auth` without TLS that checks the server.
            OSError: the connection failed.
        """
        deadline = _Deadline(self, self.handshake_timeout)
        with deadline:
            super().connect(address)
        if self.ssl_context is not None and self.tls is None:
            self._start_tls()
        self._client_handshake(None, deadline)

    def client_handshake(self, secure: bool | None = None) -> None:
        """Send the upgrade request on a connected socket and check the response.

        After `enable_ssl()`, the TLS handshake comes first. `secure` (whether
        the URL is wss://, for the Host header's default port) defaults to
        whether TLS is on. `handshake_timeout` bounds the whole.
        """
        self._client_handshake(secure, _Deadline(self, self.handshake_timeout))

    def _client_handshake(self, secure: bool | None, deadline: _Deadline) -> None:
        """The client handshake, within `deadline`."""
        handshake = self.upgrade_request(secure)
        with deadline:
            tls = self.tls
            if tls is not None:
                while not self._tls_step(tls.handshake):
                    tls.feed(deadline.recv(_TLS_RECV_SIZE, 'the TLS handshake', raw=True))
            deadline.refresh()
            self.sendall(handshake.request)
            try:
                while not handshake.feed(deadline.recv(4096, 'the handshake response',
                                                       eof=True)):
                    pass
            except HandshakeTimeout as error:
                raise handshake.timed_out() from error
        self.finish_handshake(handshake)

    def upgrade_request(self, secure: bool | None = None) -> ClientHandshake:
        """The client's side of the handshake on this connected socket, as data: its
        upgrade request (with its options and `auth`), to check the answer with.

        `secure` (whether the URL is wss://, for the Host header's default
        port when `host` is not given) defaults to whether TLS is on.
        """
        if secure is None:
            secure = self.tls is not None
        host = self.host
        if host is None:
            peer = self.getpeername()
            # A Unix socket has no host name to give: name this machine.
            host = (format_host(peer[0], peer[1], secure) if isinstance(peer, tuple)
                    else 'localhost')
        return ClientHandshake(host, self.location, origin=self.origin, protocols=self.protocols,
                               extensions=self.extensions,
                               headers=self.headers + self._credentials(),
                               max_line_length=self.max_line_length,
                               max_headers=self.max_headers, max_head_size=self.max_head_size)

    def _credentials(self) -> list[tuple[str, str]]:
        """The Authorization header for a client's `auth`: Basic, over checked TLS only."""
        auth = self.auth
        if auth is None:
            return []
        if not isinstance(auth, tuple):
            raise TypeError('a client takes auth=(user, password); a BasicAuth or DigestAuth '
                            'is for a server')
        if self.tls is None or self.tls.object.context.verify_mode == ssl.CERT_NONE:
            raise InvalidState('auth=(user, password) is sent only over TLS that checks the '
                               "server's certificate (enable_ssl()); to answer a server's "
                               'challenge over ws://, use wspy.connect(url, auth=...)')
        return [('Authorization', basic_authorization(*auth))]

    def unix_name(self) -> str:
        """'unix:' and the path this socket is bound to (an abstract name after '@')."""
        try:
            path = self.getsockname()
        except OSError:
            path = ''
        if isinstance(path, bytes):  # an abstract name on Linux: a NUL, then bytes
            path = path.decode('utf-8', 'backslashreplace')
        if isinstance(path, str) and path.startswith('\0'):
            path = '@' + path[1:]
        return f'unix:{path}'

    def peer_address(self) -> Any:
        """The peer's address, as `accept()` gave it or the socket tells; None if unconnected."""
        if self._peer is None:
            try:
                self._peer = self.getpeername()
            except OSError:
                return None
        return self._peer

    def head_reader(self) -> HeadReader:
        """A reader for an HTTP head within this socket's limits."""
        return HeadReader(self.max_line_length, self.max_headers, self.max_head_size)

    def finish_handshake(self, handshake: ServerOpening | ClientHandshake) -> None:
        """Take what an opening handshake agreed on (the request or the response headers,
        the subprotocol, the extensions), then switch to frames."""
        if isinstance(handshake, ServerOpening):
            self.request = handshake.request
            server_side = True
        else:
            self.response_headers = handshake.response_headers
            server_side = False
        self.protocol = handshake.protocol
        self.hooks = handshake.hooks
        self.opened(server_side, handshake.rest)

    def opened(self, server_side: bool, rest: bytes = b'') -> None:
        """Switch to frames after a handshake; `rest` is what arrived after the HTTP head."""
        self.server_side = server_side
        rsv_allowed = 0
        for hook in self.hooks:
            rsv_allowed |= hook.rsv_bits
        max_frame_size = self.max_frame_size
        if max_frame_size is MESSAGE_LIMIT:
            max_frame_size = DEFAULT_MAX_SIZE  # until a Connection gives its message limit
        self.parser = FrameParser(require_mask=server_side, max_frame_size=max_frame_size,
                                  rsv_allowed=rsv_allowed)
        self.parser.feed(rest)

    def limit_messages(self, max_message_size: int | None) -> None:
        """Take the message limit of the `Connection` over this socket, once open.

        Frames then follow it too, unless `max_frame_size` was given.
        """
        if self.max_frame_size is MESSAGE_LIMIT and self.parser is not None:
            self.parser.max_frame_size = max_message_size

    # -- TLS ----------------------------------------------------------------

    def enable_ssl(self, context: ssl.SSLContext | None = None, *, server_side: bool = False,
                   server_hostname: str | None = None, **ssl_args: Any) -> None:
        """Speak TLS on this socket: call it before `connect()`, `accept()` or the handshake.

        On a listening socket, every accepted socket speaks TLS.

        Args:
            context: the `ssl.SSLContext`; without it, one is made from
                `ssl_args`.
            server_side: whether this is the server's end.
            server_hostname: the name checked against the server's
                certificate and sent as SNI; by default the `host` option's
                or the connected address's.
            **ssl_args: `certfile`, `keyfile`, `password`, `cafile`,
                `cert_reqs`, ... (see `wspy.tls`); a client checks the
                server's certificate and host name against the system CAs by
                default.

        Raises:
            InvalidState: the WebSocket handshake is done already.
            TypeError: both a `context` and `ssl_args`.
        """
        if self.server_side is not None:
            raise InvalidState('enable_ssl() after the WebSocket handshake')
        if context is None:
            context = (server_context if server_side else client_context)(**ssl_args)
        elif ssl_args:
            raise TypeError('give enable_ssl() an SSLContext or ssl_args, not both')
        self.ssl_context = context
        self._tls_server_side = server_side
        self._tls_hostname = server_hostname
        try:
            self.getpeername()
        except OSError:
            return  # TLS starts on connect(), or on each accepted socket
        self._start_tls()

    def tls_handshake_step(self) -> bool:
        """Advance the TLS handshake without waiting for the peer; whether it is complete.

        For an event loop: TLS starts on the first call; what it has to send
        is written as far as the socket takes it (the rest waits in
        `unsent()`). Raises `ssl.SSLError` (or `OSError`) when TLS fails.
        """
        if self.tls is None:
            self._start_tls()
        tls = self.tls
        assert tls is not None
        return self._tls_step(tls.handshake)

    def _start_tls(self) -> None:
        assert self.ssl_context is not None
        hostname = None
        if not self._tls_server_side:
            hostname = self._tls_hostname
            if hostname is None and self.host is not None:
                hostname = urlsplit(f'//{self.host}').hostname  # the Host header, less the port
            if hostname is None:
                hostname = str(self.getpeername()[0])
        self.tls = TLS(self.ssl_context, self._tls_server_side, hostname,
                       lock=threading.Lock(), wire_lock=threading.RLock())

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS connection's `ssl.SSLObject` (`getpeercert()`, `cipher()`, `version()`)."""
        return None if self.tls is None else self.tls.object

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate, as `ssl.SSLSocket.getpeercert` gives it (None without TLS)."""
        return None if self.tls is None else self.tls.object.getpeercert(binary_form)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Receive bytes of the stream into `buffer` (decrypted under TLS); 0 at end of file."""
        tls = self.tls
        if tls is None:
            return super().recv_into(buffer, nbytes, flags)
        with memoryview(buffer) as view, view.cast('B') as flat:
            target = flat[:nbytes] if nbytes else flat
            while True:
                count = self._tls_step(tls.read_into, target)
                if count is not None:
                    return count
                self._apply_read_deadline()
                try:
                    tls.feed(super().recv(_TLS_RECV_SIZE))
                except PlainHTTPOnTLSPort:
                    self.tls = None  # answer in plain text, which the client understands
                    raise

    def recv_bytes(self, size: int = _RECV_SIZE) -> bytes:
        """Receive up to `size` bytes of the stream (decrypted under TLS); b'' at end of file."""
        if self.tls is None:
            return super().recv(size)
        buffer = bytearray(size)
        return bytes(buffer[:self.recv_into(buffer)])

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of `data` (encrypted under TLS)."""
        tls = self.tls
        if tls is None:
            self._write_all([data], flags)
            return
        with memoryview(data) as view, view.cast('B') as flat, tls.wire_lock:
            for start in range(0, len(flat), CHUNK_SIZE):
                self._push(tls.encrypt(flat[start:start + CHUNK_SIZE]))

    def send_bytes(self, data: bytes | memoryview) -> int:
        """Send bytes once, as `socket.send` does; how many were taken.

        Under TLS the bytes taken are encrypted at once; what the socket does
        not take waits in `unsent()`, and nothing more is taken
        (`BlockingIOError`) until `send_unsent()` has written it.
        """
        tls = self.tls
        if tls is None:
            return super().send(data)
        with tls.wire_lock:
            if tls.backlog and not self._push(b''):
                raise BlockingIOError('TLS output still waiting for the socket')
            with memoryview(data) as view:
                piece = view[:CHUNK_SIZE]
                self._push(tls.encrypt(piece))
                return len(piece)

    def unsent(self) -> int:
        """How many encrypted bytes wait for a non-blocking socket to take them."""
        return 0 if self.tls is None else len(self.tls.backlog)

    def send_unsent(self) -> bool:
        """Write what `unsent()` counts, as far as the socket takes it; whether all went."""
        tls = self.tls
        if tls is None or not tls.backlog:
            return True
        with tls.wire_lock:
            return self._push(b'')

    def pending(self) -> bool:
        """Whether received bytes wait inside TLS, readable without the socket being ready."""
        return self.tls is not None and self.tls.pending()

    def shutdown_write(self) -> None:
        """Shut down the sending side; under TLS, send the close_notify alert first."""
        tls = self.tls
        if tls is not None:
            with tls.wire_lock:
                try:
                    self._push(tls.close_notify())
                except OSError:
                    pass
        self.shutdown(socket.SHUT_WR)

    def _tls_step(self, step: Callable[..., _T], *args: Any) -> _T:
        """Run a TLS step, then send what it produced (handshake messages, alerts)."""
        tls = self.tls
        assert tls is not None
        try:
            return step(*args)
        finally:
            if tls.outgoing.pending:
                with tls.wire_lock:
                    try:
                        self._push(tls.take_output())
                    except OSError:
                        pass  # the step's own result or error tells more

    def _push(self, data: bytes) -> bool:
        """Write encrypted bytes after any backlog; whether nothing is left over.

        A blocking socket writes everything; a non-blocking one keeps what
        the socket does not take in the backlog. The caller holds `wire_lock`.
        """
        tls = self.tls
        assert tls is not None
        if tls.backlog:
            data = bytes(tls.backlog) + data
        if self.gettimeout() != 0.0:
            self._write_all([data])
            tls.backlog = memoryview(b'')
            return True
        try:
            sent = super().send(data) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        tls.backlog = memoryview(data)[sent:]
        return not tls.backlog

    # -- frames -------------------------------------------------------------

    def send(self, *frames: Frame) -> None:  # type: ignore[override]
        """Send frames, in order, with as few system calls as possible.

        Frames go as they are: a client masks its own (`masking_key`, see
        `Frame`). Safe for one thread at a time: `Connection` orders the
        sends of several.

        Raises:
            WriteTimeout: the peer took nothing for `write_timeout` seconds.
            OSError: the connection failed.
        """
        if len(frames) == 1:
            self.send_packed(*frames[0].pack_parts())
        else:
            self.sendall(b''.join([frame.pack() for frame in frames]))

    def send_packed(self, data: bytes, payload: bytes = b'') -> None:
        """Send a frame packed already (`data`), or its header (`data`) and then `payload`.

        Header and payload go out in one `sendmsg`: a large payload is not
        copied into one buffer with its header.
        """
        if not payload:
            self.sendall(data)
        elif self.tls is not None:
            self.sendall(data + payload)
        else:
            self._write_all([data, payload])

    def send_buffers(self, buffers: list[Any]) -> None:
        """Send `buffers` in order: one `sendmsg` when the socket takes them all (joined and
        encrypted under TLS); a wait for room is bounded as `send_packed`'s."""
        if self.tls is not None:
            self.sendall(b''.join(buffers))
        else:
            self._write_all(buffers)

    def _write_all(self, buffers: list[Any], flags: int = 0) -> None:
        """Write every byte of `buffers` (one `sendmsg` when the socket takes them all).

        The socket stays blocking for a thread reading it: each send is made
        not to block, and a wait for room is bounded by `write_timeout` (and
        by the socket's own timeout, if it has one). `WriteTimeout` if the
        peer takes nothing for that long.
        """
        if len(buffers) == 1 and type(buffers[0]) is bytes:
            # The common case, the socket takes it all at once: no views made (they cost
            # 1.5 us a send, a third of a 100-byte message's, on a socketpair), and the
            # send inline (a call less: 3.6 us a message against 3.7).
            try:
                sent = _socket.socket.send(self, buffers[0], flags | _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except TimeoutError:
                raise self._timed_out_writing() from None
            if sent == len(buffers[0]):
                return
            buffers = [memoryview(buffers[0])[sent:]]
        views = [memoryview(buffer).cast('B') for buffer in buffers]
        while views:
            sent = moved = self._send_now(views, flags)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]
            if not moved and views:
                self._await_room()

    def _send_now(self, buffers: list[Any], flags: int = 0) -> int:
        """Send what the socket takes of `buffers` without waiting for room: how much."""
        try:
            if len(buffers) == 1:
                return _socket.socket.send(self, buffers[0], flags | _DONTWAIT)
            return self.sendmsg(buffers, (), flags | _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except TimeoutError:
            raise self._timed_out_writing() from None

    def _timed_out_writing(self) -> WriteTimeout:
        """A send on a socket with a timeout waited that long for room: the error to raise."""
        return WriteTimeout(f'the peer took nothing for {self.gettimeout():.3g} s: '
                            'it does not read')

    def _await_room(self) -> None:
        """Wait for room to write, up to `write_timeout` (and the write deadline, if any)."""
        timeout = self.write_timeout
        if self._write_deadline is not None:
            left = max(0.0, self._write_deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        if not self.writable(timeout):
            raise WriteTimeout(f'the peer took nothing for {timeout:.3g} s: it does not read')

    def cork(self, on: bool) -> bool:
        """Hold small writes in the kernel until uncorked, which sends them (TCP_CORK).

        Frames written one after another then leave in full segments, not
        one each: a server answering a read's many messages makes one
        transmission of them. The kernel sends corked bytes after 200 ms at
        most. A TCP socket on Linux only: whether the call took effect.
        """
        if _TCP_CORK is None or self.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        try:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, on)
        except OSError:  # closed meanwhile
            return False
        return True

    def writable(self, timeout: float | None = 0.0) -> bool:
        """Whether the socket can take more bytes now, or within `timeout` seconds (None: ever).

        True too when the socket has failed: the next write tells why.
        """
        poller = select.poll()
        try:
            poller.register(self, select.POLLOUT)
        except ValueError:  # closed: the write tells
            return True
        return bool(poller.poll(None if timeout is None else timeout * 1000))

    def recv_available(self, size: int = _RECV_SIZE) -> bytes | None:
        """Up to `size` bytes of the stream that have arrived (decrypted under TLS), without
        waiting.

        None if none have (or only part of a TLS record), b'' at end of file.
        """
        poller = select.poll()
        try:
            poller.register(self, select.POLLIN)
        except ValueError:  # closed under us
            return b''
        tls = self.tls
        if tls is None:
            if not poller.poll(0):
                return None
            try:
                return _socket.socket.recv(self, size, _DONTWAIT)
            except (BlockingIOError, InterruptedError, TimeoutError):
                return None
        buffer = bytearray(size)
        with memoryview(buffer) as view:
            while True:
                count = self._tls_step(tls.read_into, view)
                if count is not None:
                    return bytes(buffer[:count])
                if not poller.poll(0):
                    return None
                try:
                    data = _socket.socket.recv(self, _TLS_RECV_SIZE, _DONTWAIT)
                except (BlockingIOError, InterruptedError, TimeoutError):
                    return None
                tls.feed(data)

    def recv(self, on_partial: Callable[[FrameParser], None] | None = None,  # type: ignore[override]
             deadline: float | None = None) -> Frame:
        """Receive the next frame, its payload unmasked; control frames too.

        Nothing is answered here (pings, close frames): that is
        `Connection`'s part.

        Args:
            on_partial: called with the parser before each wait for more
                bytes, so that the part of a frame that has arrived can be
                checked.
            deadline: a `time.monotonic()` value: `TimeoutError` once it has
                passed, however the bytes trickle in.

        Raises:
            ProtocolError: the frame breaks RFC 6455 (`PayloadTooBig` over
                `max_frame_size`).
            SocketClosed: the peer disconnected.
            InvalidState: the handshake is not done.
            TimeoutError: the `deadline` has passed.
        """
        parser = self.parser
        if parser is None:
            raise InvalidState('recv() before the handshake')
        frame = parser.next_frame()
        while frame is None:
            if on_partial is not None:
                on_partial(parser)
            self.read_into_parser(deadline)
            frame = parser.next_frame()
        return frame

    def read_into_parser(self, deadline: float | None = None, wait: bool = True) -> bool:
        """Read once, waiting for bytes if none have come, and feed them to `parser`.

        Returns whether the read filled the buffer: more bytes may be
        waiting. Without `wait`, only bytes that have already arrived are
        read, on a plain socket in blocking mode (False, and nothing read,
        if none have, or under TLS, or with a timeout set). `SocketClosed`
        at end of file; with a `deadline` (a `time.monotonic()` value),
        `TimeoutError` once it has passed.
        """
        parser = self.parser
        if parser is None:
            raise InvalidState('recv() before the handshake')
        buffer = _receive_buffer()
        if wait:
            self._read_deadline = deadline
            try:
                self._apply_read_deadline()
                count = self.recv_into(buffer)
            finally:
                self._read_deadline = None
        else:
            if self.tls is not None or self.gettimeout() is not None:
                return False  # a timeout would wait for readability first
            try:
                count = _socket.socket.recv_into(self, buffer, 0, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
        if not count:
            raise SocketClosed('connection closed in the middle of a frame'
                               if parser.buffered else 'connection closed by the peer')
        with memoryview(buffer) as view:
            parser.feed(view[:count])
        return count == len(buffer)

    @contextlib.contextmanager
    def writes_until(self, deadline: float) -> Iterator[None]:
        """Within the block, a write waits for room only until `deadline` (`time.monotonic()`)."""
        self._write_deadline = deadline
        try:
            yield
        finally:
            self._write_deadline = None

    def _apply_read_deadline(self) -> None:
        """Before a wait for input: time out at the read deadline, if one is set."""
        deadline = self._read_deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('the read deadline has passed')
            self.settimeout(remaining)

    def recvn(self, n: int) -> list[Frame]:
        """Receive the next `n` frames."""
        return [self.recv() for _ in range(n)]

    def __repr__(self) -> str:
        side = {None: 'raw', True: 'server', False: 'client'}[self.server_side]
        return f'<wspy.websocket fd={self.fileno()} {side} peer={_peer(self)}>'


def _peer(sock: websocket) -> str:
    address = sock.peer_address()
    return '?' if address is None else str(address)


class _Deadline:
    """One overall timeout for the blocking calls of a handshake on a socket.

    Each wait gets only the time left, and so does each read of the network
    that TLS needs to complete a record: a peer that trickles its bytes
    (TLS records, the HTTP head, a body) cannot stretch the handshake.
    """

    def __init__(self, sock: websocket, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.end = None if timeout is None else time.monotonic() + timeout

    def __enter__(self) -> _Deadline:
        self.saved = self.sock.gettimeout()
        self.sock._read_deadline = self.sock._write_deadline = self.end
        self.refresh()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        self.sock._read_deadline = self.sock._write_deadline = None
        try:
            self.sock.settimeout(self.saved)
        except OSError:
            pass
        if isinstance(exc, (socket.timeout, WriteTimeout)):
            raise HandshakeTimeout(f'handshake not completed within {self.timeout} s') from exc
        if isinstance(exc, ssl.SSLError):
            raise SSLError(f'TLS failed: {exc}') from exc

    def refresh(self) -> None:
        """Give the socket's next blocking call the time left; `HandshakeTimeout` if none is."""
        if self.end is None:
            return
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise HandshakeTimeout(f'handshake not completed within {self.timeout} s')
        saved = self.saved
        self.sock.settimeout(remaining if saved is None else min(saved, remaining))

    def recv(self, size: int, what: str, raw: bool = False, eof: bool = False) -> bytes:
        """Receive up to `size` bytes before the deadline; EOF is a handshake error, or b''
        with `eof`.

        Under TLS the bytes are decrypted (each read of the network that a
        record needs gets only the time left), unless `raw` asks for the
        socket's own.
        """
        self.refresh()
        try:
            data = (_StandardSocket.recv(self.sock, size) if raw
                    else self.sock.recv_bytes(size))
        except TimeoutError:
            raise HandshakeTimeout(f'timed out waiting for {what}') from None
        if not data and not eof:
            raise HandshakeError(f'connection closed while waiting for {what}')
        return data


_SERVER_AUTH = ('a server takes auth=wspy.BasicAuth(...) or wspy.DigestAuth(...) (an '
                'Authenticator); auth=(user, password) is for a client')


def _checked_auth(auth: object, headers: list[tuple[str, str]],
                  ) -> Authenticator | tuple[str, str] | None:
    """`auth` if it is an `Authenticator`, a (user, password) tuple of str, or None."""
    if auth is None or isinstance(auth, Authenticator):
        return auth
    if (isinstance(auth, tuple) and len(auth) == 2
            and all(isinstance(part, str) for part in auth)):
        if any(name.lower() == 'authorization' for name, _ in headers):
            raise TypeError('give a client auth=(user, password) or an Authorization header, '
                            'not both')
        return (auth[0], auth[1])
    # Not the value itself in the message: it may hold a password.
    raise TypeError('auth takes a wspy.BasicAuth or wspy.DigestAuth on a server, or a '
                    f'(user, password) tuple of str on a client, not a {type(auth).__name__}')
