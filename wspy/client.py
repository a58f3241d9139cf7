"""The client: `connect("ws://host:port/path")` returns an open `Connection`."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.auth import authorization, basic_authorization, parse_challenges
from wspy.errors import HandshakeTimeout, InvalidStatus, InvalidURI, ProxyError, RedirectError
from wspy.frame import DEFAULT_MAX_SIZE
from wspy.handshake import check_header_items, format_host, parse_response
from wspy.tls import client_context
from wspy.websocket import HANDSHAKE_TIMEOUT, websocket

#: Default number of redirects `connect` follows.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: The caller's headers that are not sent on to another origin after a redirect.
_CREDENTIAL_HEADERS = frozenset({'authorization', 'proxy-authorization', 'cookie'})


@dataclass(frozen=True)
class URI:
    """A parsed ws:// or wss:// URL."""

    secure: bool
    host: str
    port: int
    resource: str
    user: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        """The Host header for this URL."""
        return format_host(self.host, self.port, self.secure)

    @property
    def origin(self) -> tuple[bool, str, int]:
        """What must match for credentials to go along: scheme, host and port."""
        return self.secure, self.host.lower(), self.port

    @property
    def authority(self) -> str:
        """host:port, with the port always given (for CONNECT)."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'


def parse_uri(url: str) -> URI:
    """Parse a ws:// or wss:// URL; `InvalidURI` if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidURI(f'{url!r}: {error}') from None
    if parts.scheme not in ('ws', 'wss'):
        raise InvalidURI(f'{url!r} is not a ws:// or wss:// URL')
    if not parts.hostname:
        raise InvalidURI(f'{url!r} has no host')
    if parts.fragment:
        raise InvalidURI(f'{url!r}: a WebSocket URL has no fragment')
    secure = parts.scheme == 'wss'
    resource = (parts.path or '/') + (f'?{parts.query}' if parts.query else '')
    user = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return URI(secure, parts.hostname, port or (443 if secure else 80), resource, user, password)


def redirect_target(url: str, location: str) -> str:
    """The ws:// or wss:// URL a redirect's Location points to, relative or absolute."""
    # urljoin only resolves relative references for the schemes it knows.
    base = url.replace('ws', 'http', 1)
    target = urljoin(base, location.strip())
    scheme, sep, rest = target.partition('://')
    mapped = {'http': 'ws', 'https': 'wss', 'ws': 'ws', 'wss': 'wss'}.get(scheme.lower())
    if mapped is None or not sep:
        raise RedirectError(f'cannot follow a redirect to {location!r}')
    return f'{mapped}://{rest}'


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
                source_address: tuple[str, int] | None = None, **options: Any) -> websocket:
    """A connected `websocket` to `uri`'s host, no handshake yet.

    Every address of the host is tried in turn, from `source_address` if
    given. With `proxy` (an http:// URL, credentials allowed), the
    connection is a tunnel through it. With `unix_socket` (a path), the
    connection goes to that Unix domain socket instead of the host.
    `timeout` bounds the whole: every address tried and the proxy's answer.
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
    try:
        parts = urlsplit(proxy)
        proxy_port = parts.port or 80
    except ValueError as error:
        raise InvalidURI(f'proxy {proxy!r}: {error}') from None
    if parts.scheme != 'http' or not parts.hostname:
        raise InvalidURI(f'proxy {proxy!r}: only http:// proxies are supported')
    sock = _connect_tcp((parts.hostname, proxy_port), deadline, source_address,
                        location=uri.resource, **options)
    try:
        _tunnel(sock, uri, parts.hostname, deadline,
                None if parts.username is None
                else (unquote(parts.username), unquote(parts.password or '')))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_tcp(target: tuple[str, int], deadline: float | None,
                 source_address: tuple[str, int] | None = None, **options: Any) -> websocket:
    """A `websocket` connected to the first address of `target` that answers by `deadline`."""
    host, port = target
    errors = []
    for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        sock = websocket(family, kind, proto, **options)
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


def _tunnel(sock: websocket, uri: URI, proxy_host: str, deadline: float | None,
            credentials: tuple[str, str] | None) -> None:
    """Ask the proxy on `sock` to CONNECT to `uri`'s host by `deadline`; `ProxyError` if it
    will not (status 504 if it does not answer in time)."""
    lines = [f'CONNECT {uri.authority} HTTP/1.1', f'Host: {uri.authority}']
    if credentials is not None:
        lines.append(f'Proxy-Authorization: {basic_authorization(*credentials)}')
    reader = sock.head_reader()
    head = None
    try:
        sock.settimeout(_time_left(deadline))
        sock.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode())
        while head is None:
            sock.settimeout(_time_left(deadline))  # a trickling proxy gets no more time
            data = socket.socket.recv(sock, 4096)
            if not data:
                raise ProxyError(f'proxy {proxy_host} closed the connection during CONNECT')
            head = reader.feed(data)
    except (TimeoutError, HandshakeTimeout):
        raise ProxyError(f'proxy {proxy_host} did not answer CONNECT in time', 504) from None
    status, reason, _ = parse_response(head)
    if status == 407:
        raise ProxyError(f'proxy {proxy_host} wants credentials: 407 {reason}'
                         if credentials is None else
                         f'proxy {proxy_host} refused the credentials: 407 {reason}', status)
    if not 200 <= status < 300:
        raise ProxyError(f'proxy {proxy_host} refused CONNECT to {uri.authority}: '
                         f'{status} {reason}', status)
    if reader.rest:
        raise ProxyError(f'proxy {proxy_host} sent data before the tunnel was used')


def _www_authenticate(error: InvalidStatus) -> list[tuple[str, dict[str, str]]]:
    return parse_challenges(value for name, value in error.headers
                            if name.lower() == 'www-authenticate')


def _without_credentials(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` less those that carry credentials (Authorization, Cookie, ...)."""
    return [(name, value) for name, value in headers
            if name.lower() not in _CREDENTIAL_HEADERS]


def _follow(url: str, error: InvalidStatus, redirects: int, max_redirects: int) -> str:
    """Where the redirect `error` leads from `url`; `RedirectError` if it is not followed."""
    assert error.location is not None
    if redirects == max_redirects:
        raise RedirectError(f'redirect to {error.location!r} not followed: '
                            f'max_redirects is {max_redirects}',
                            error.status, error.headers) from error
    target = redirect_target(url, error.location)
    if parse_uri(url).secure and not parse_uri(target).secure:
        raise RedirectError(f'redirect from wss:// to {error.location!r} not followed: '
                            'it would leave TLS', error.status, error.headers) from error
    return target


def connect(url: str, *, max_redirects: int = MAX_REDIRECTS,
            timeout: float | None = HANDSHAKE_TIMEOUT,
            connection_class: type[Connection] = Connection,
            max_message_size: int | None = DEFAULT_MAX_SIZE,
            close_timeout: float = CLOSE_TIMEOUT, ping_interval: float | None = PING_INTERVAL,
            ping_timeout: float | None = PING_TIMEOUT,
            ssl_context: ssl.SSLContext | None = None, ssl_args: dict[str, Any] | None = None,
            server_hostname: str | None = None, auth: tuple[str, str] | None = None,
            proxy: str | bool | None = None, unix_socket: str | None = None,
            source_address: tuple[str, int] | None = None, **options: Any) -> Connection:
    """Open a WebSocket to `url` and return the open connection.

    Redirects (301, 302, 303, 307, 308) are followed up to `max_redirects`
    times, each on a new TCP connection, but never from wss:// to ws://
    (`RedirectError`). `timeout` bounds the whole opening, however slowly
    the peers answer: connecting, the proxy's CONNECT, TLS, the handshake,
    and any redirects and authentication round trips (`HandshakeTimeout`;
    `ProxyError` 504 for a proxy). The connection sends keepalive pings
    every `ping_interval` seconds from a background thread.

    wss:// checks the server's certificate and host name against the
    system's CAs. `ssl_args` changes that (`cafile`, `certfile`, `keyfile`,
    `password` for a client certificate, `verify=False`), or `ssl_context`
    replaces it; `server_hostname` is the name checked and sent as SNI (by
    default the URL's host).

    `auth=(user, password)`, or credentials in the URL, answer a 401 with
    Digest or Basic. After a redirect to another origin (scheme, host or
    port), they are not sent, nor are the Authorization,
    Proxy-Authorization and Cookie of `headers`.
    `proxy` is an http:// proxy URL (with credentials, if it wants them)
    to tunnel through with CONNECT, or True for the `https_proxy` /
    `http_proxy` environment variables. `unix_socket` (a path) connects to
    a server on that Unix domain socket (the URL still gives the Host header
    and the resource); `source_address` is the (host, port) to connect
    from. Other keyword options go to
    `websocket` (`origin`, `protocols`, `headers`, `max_frame_size`, ...).
    """
    deadline = _deadline(timeout)
    if ssl_context is None and ssl_args is not None:
        ssl_context = client_context(**ssl_args)
    host = options.pop('host', None)
    headers = check_header_items(options.pop('headers', ()))
    uri = parse_uri(url)
    first_origin = uri.origin
    redirects = 0
    authorization_header: str | None = None
    auth_attempts = 0
    while True:
        extra = [] if authorization_header is None else [('Authorization', authorization_header)]
        sock = open_socket(uri, _time_left(deadline),
                           None if unix_socket else proxy_for(uri, proxy),
                           unix_socket=unix_socket, source_address=source_address,
                           host=host or uri.host_header,
                           handshake_timeout=timeout, headers=headers + extra, **options)
        try:
            sock.handshake_timeout = _time_left(deadline)  # what is left of `timeout`
            if uri.secure:
                if ssl_context is None:
                    ssl_context = client_context()
                sock.enable_ssl(ssl_context, server_hostname=server_hostname or uri.host)
            sock.client_handshake(uri.secure)
        except InvalidStatus as error:
            sock.close()
            credentials = auth if uri.origin == first_origin else None
            if uri.user is not None:
                credentials = (uri.user, uri.password or '')
            if error.status == 401 and credentials is not None:
                challenges = _www_authenticate(error)
                stale = any(params.get('stale', '').lower() == 'true'
                            for _, params in challenges)
                if auth_attempts == 0 or (stale and auth_attempts < 3):
                    authorization_header = authorization(challenges, *credentials, 'GET',
                                                         uri.resource)
                    if authorization_header is not None:
                        auth_attempts += 1
                        continue
                raise InvalidStatus('server refused the credentials (401)' if auth_attempts
                                    else 'server asks for a scheme wspy does not speak (401)',
                                    error.status, error.headers, error.body) from error
            if error.status not in _REDIRECTS or not error.location:
                raise
            url = _follow(url, error, redirects, max_redirects)
            redirects += 1
            target = parse_uri(url)
            if target.origin != uri.origin:
                headers = _without_credentials(headers)
            uri = target
            host = None
            authorization_header = None
            auth_attempts = 0
            continue
        except BaseException:
            sock.close()
            raise
        return connection_class(sock, max_message_size=max_message_size,
                                close_timeout=close_timeout, ping_interval=ping_interval,
                                ping_timeout=ping_timeout)
