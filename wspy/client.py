"""The client: `connect("ws://host:port/path")` returns an open `Connection`."""

from __future__ import annotations

import socket
import ssl
import time
from urllib.request import getproxies, proxy_bypass
from typing import TYPE_CHECKING

from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.errors import HandshakeTimeout, InvalidStatus, WriteTimeout
from wspy.protocol.frame import DEFAULT_MAX_SIZE
from wspy.protocol.handshake import check_header_items
from wspy.options import CLIENT_OPTIONS, check_options
from wspy.protocol.opening import MAX_REDIRECTS, URI, ClientOpening, Tunnel
from wspy.tls import client_context
from wspy.websocket import HANDSHAKE_TIMEOUT, websocket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wspy.options import ClientOptions, ClientSSLArgs


def _deadline(timeout: float | None) -> float | None:
    """The `time.monotonic()` by which something given `timeout` seconds must be done."""
    return None if timeout is None else time.monotonic() + timeout


def _time_left(deadline: float | None) -> float | None:
    """The seconds left until `deadline` (None: no limit); `HandshakeTimeout` if none are."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise HandshakeTimeout('connecting took longer than the timeout')
    return left


def proxy_for(uri: URI, proxy: str | bool | None) -> str | None:
    """The proxy URL to reach `uri` through: `proxy` itself, or with True the environment's.

    True reads `https_proxy` (wss://) or `http_proxy` (ws://) and honours
    `no_proxy`, as urllib does.
    """
    if proxy is None or proxy is False:
        return None
    if proxy is True:
        if proxy_bypass(uri.host):
            return None
        return getproxies().get('https' if uri.secure else 'http')
    return proxy


def open_socket(uri: URI, timeout: float | None = HANDSHAKE_TIMEOUT, proxy: str | None = None,
                *, unix_socket: str | None = None,
                source_address: tuple[str, int] | None = None,
                **options: Unpack[ClientOptions]) -> websocket:
    """A connected `websocket` to `uri`'s host, no handshake yet.

    Every address of the host is tried in turn, from `source_address` if
    given. With `proxy` (an http:// URL, credentials allowed), the
    connection is a tunnel through it. With `unix_socket` (a path), the
    connection goes to that Unix domain socket instead of the host.
    `timeout` bounds the whole: every address tried and the proxy's answer.
    `options` go to the `websocket`, whose `location` is `uri`'s resource.
    """
    deadline = _deadline(timeout)
    if unix_socket is not None:
        sock = websocket(socket.AF_UNIX, socket.SOCK_STREAM, location=uri.resource, **options)
        try:
            sock.settimeout(timeout)
            socket.socket.connect(sock, unix_socket)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock
    if proxy is None:
        return _connect_tcp((uri.host, uri.port), deadline, source_address,
                            location=uri.resource, **options)
    tunnel = Tunnel(uri, proxy)
    sock = _connect_tcp((tunnel.host, tunnel.port), deadline, source_address,
                        location=uri.resource, **options)
    try:
        _open_tunnel(sock, tunnel, deadline)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_tcp(target: tuple[str, int], deadline: float | None,
                 source_address: tuple[str, int] | None = None, *, location: str = '/',
                 **options: Unpack[ClientOptions]) -> websocket:
    """A `websocket` connected to the first address of `target` that answers by `deadline`."""
    host, port = target
    errors = []
    for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        sock = websocket(family, kind, proto, location=location, **options)
        try:
            sock.settimeout(_time_left(deadline))
            if source_address is not None:
                sock.bind(source_address)
            socket.socket.connect(sock, address)
            sock.settimeout(None)
            return sock
        except OSError as error:
            errors.append(error)
            sock.close()
        except BaseException:
            sock.close()
            raise
    raise errors[0] if len(errors) == 1 else OSError(f'cannot connect to {host}:{port}: '
                                                     + '; '.join(map(str, errors)))


def _open_tunnel(sock: websocket, tunnel: Tunnel, deadline: float | None) -> None:
    """Open `tunnel` through the proxy on `sock` by `deadline`; `ProxyError` if it will not
    (status 504 if it does not answer in time)."""
    try:
        sock.settimeout(_time_left(deadline))
        sock.sendall(tunnel.request)
        while True:
            sock.settimeout(_time_left(deadline))  # a trickling proxy gets no more time
            if tunnel.feed(socket.socket.recv(sock, 4096)):
                return
    except (TimeoutError, HandshakeTimeout, WriteTimeout):
        raise tunnel.timed_out() from None


def connect(url: str, *, max_redirects: int = MAX_REDIRECTS,
            timeout: float | None = HANDSHAKE_TIMEOUT,
            connection_class: type[Connection] = Connection,
            max_message_size: int | None = DEFAULT_MAX_SIZE,
            close_timeout: float = CLOSE_TIMEOUT, ping_interval: float | None = PING_INTERVAL,
            ping_timeout: float | None = PING_TIMEOUT,
            ssl_context: ssl.SSLContext | None = None, ssl_args: ClientSSLArgs | None = None,
            server_hostname: str | None = None, auth: tuple[str, str] | None = None,
            proxy: str | bool | None = None, unix_socket: str | None = None,
            source_address: tuple[str, int] | None = None,
            **options: Unpack[ClientOptions]) -> Connection:
    """Open a WebSocket to `url` and return the open connection.

    Every address of the host is tried in turn. Redirects (301, 302, 303,
    307, 308) are followed, each on a new TCP connection, but never from
    wss:// to ws://. A 401 is answered with the credentials given, Digest
    (SHA-256 first) or Basic; after a redirect to another origin (scheme,
    host or port), the credentials are not sent, nor are the
    Authorization, Proxy-Authorization and Cookie of `headers`. wss://
    checks the server's certificate and host name against the system's
    CAs. The connection sends keepalive pings every `ping_interval`
    seconds from a background thread.

    Args:
        url: a ws:// or wss:// URL, with credentials if the server asks for
            them (`ws://user:password@host/path`).
        max_redirects: the most redirects followed.
        timeout: seconds for the whole opening, however slowly the peers
            answer: connecting, the proxy's CONNECT, TLS, the handshake, and
            any redirects and authentication round trips (None: no limit).
        connection_class: the class of the connection returned (a subclass
            of `Connection` with callbacks of its own, say).
        max_message_size: the connection's (see `Connection`).
        close_timeout: the connection's (see `Connection`).
        ping_interval: the connection's keepalive (see `Connection`).
        ping_timeout: the connection's keepalive (see `Connection`).
        ssl_context: the `ssl.SSLContext` for wss://, instead of the
            default one.
        ssl_args: changes to the default context (`cafile`, `certfile`,
            `keyfile`, `password` for a client certificate, `verify=False`):
            `wspy.options.ClientSSLArgs`.
        server_hostname: the name checked against the certificate and sent
            as SNI; by default the URL's host.
        auth: (user, password) to answer a 401 with.
        proxy: an http:// proxy URL (with credentials, if it wants them) to
            tunnel through with CONNECT, or True for the `https_proxy` /
            `http_proxy` environment variables (and `no_proxy`).
        unix_socket: a path: connect to a server on that Unix domain socket
            (the URL still gives the Host header and the resource).
        source_address: the (host, port) to connect from.
        **options: the `websocket`'s (`wspy.options.ClientOptions`:
            `host`, `origin`, `protocols`, `extensions`, `headers`,
            `max_frame_size`, ...).

    Returns:
        The open `Connection` (of `connection_class`); `protocol` tells the
        subprotocol the server chose.

    Raises:
        TypeError: an unknown keyword option.
        InvalidURI: a URL that is not ws:// or wss://.
        InvalidStatus: the server answered other than 101 (`status` says
            what: 401 for credentials it lacks or refused, 403, 404, ...).
        RedirectError: too many redirects, or one from wss:// to ws://.
        HandshakeTimeout: the opening took longer than `timeout`.
        ProxyError: the proxy refused the tunnel (504 when it did not
            answer in time).
        SSLError: TLS failed (the server's certificate, its host name).
        HandshakeError: any other failure of the handshake
            (`InvalidHeader`, `NegotiationError`, ...).
        OSError: the host cannot be resolved or reached.
    """
    check_options('connect', options, CLIENT_OPTIONS)
    deadline = _deadline(timeout)
    if ssl_context is None and ssl_args is not None:
        ssl_context = client_context(**ssl_args)
    opening = ClientOpening(url, check_header_items(options.get('headers', ())), auth,
                            max_redirects, options.get('host'))
    while True:
        uri = opening.uri
        # The Host and headers of this attempt (after redirects, for its origin).
        attempt: ClientOptions = {**options, 'host': opening.host_header,
                                  'headers': opening.headers}
        sock = open_socket(uri, _time_left(deadline),
                           None if unix_socket else proxy_for(uri, proxy),
                           unix_socket=unix_socket, source_address=source_address, **attempt)
        try:
            sock.handshake_timeout = _time_left(deadline)  # what is left of `timeout`
            if uri.secure:
                if ssl_context is None:
                    ssl_context = client_context()
                sock.enable_ssl(ssl_context, server_hostname=server_hostname or uri.host)
            sock.client_handshake(uri.secure)
        except InvalidStatus as error:
            sock.close()
            opening.refused(error)  # the next attempt, or raised
            continue
        except BaseException:
            sock.close()
            raise
        return connection_class(sock, max_message_size=max_message_size,
                                close_timeout=close_timeout, ping_interval=ping_interval,
                                ping_timeout=ping_timeout)
