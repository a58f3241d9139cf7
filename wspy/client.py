"""The client: `connect("ws://host:port/path")` returns an open `Connection`."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from wspy.connection import CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Connection
from wspy.errors import InvalidStatus, InvalidURI, RedirectError
from wspy.frame import DEFAULT_MAX_SIZE
from wspy.handshake import format_host
from wspy.tls import client_context
from wspy.websocket import HANDSHAKE_TIMEOUT, websocket

#: Default number of redirects `connect` follows.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class URI:
    """A parsed ws:// or wss:// URL."""

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        """The Host header for this URL."""
        return format_host(self.host, self.port, self.secure)


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
    return URI(secure, parts.hostname, port or (443 if secure else 80), resource)


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


def open_socket(uri: URI, timeout: float | None = HANDSHAKE_TIMEOUT,
                **options: Any) -> websocket:
    """A TCP-connected `websocket` to `uri`'s host (every address tried), no handshake yet."""
    errors = []
    for family, kind, proto, _, address in socket.getaddrinfo(
            uri.host, uri.port, type=socket.SOCK_STREAM):
        sock = websocket(family, kind, proto, location=uri.resource, **options)
        try:
            sock.settimeout(timeout)
            socket.socket.connect(sock, address)
            sock.settimeout(None)
            return sock
        except OSError as error:
            errors.append(error)
            sock.close()
    raise errors[0] if len(errors) == 1 else OSError(f'cannot connect to {uri.host}:{uri.port}: '
                                                     + '; '.join(map(str, errors)))


def connect(url: str, *, max_redirects: int = MAX_REDIRECTS,
            timeout: float | None = HANDSHAKE_TIMEOUT,
            connection_class: type[Connection] = Connection,
            max_message_size: int | None = DEFAULT_MAX_SIZE,
            close_timeout: float = CLOSE_TIMEOUT, ping_interval: float | None = PING_INTERVAL,
            ping_timeout: float | None = PING_TIMEOUT,
            ssl_context: ssl.SSLContext | None = None, ssl_args: dict[str, Any] | None = None,
            server_hostname: str | None = None, **options: Any) -> Connection:
    """Open a WebSocket to `url` and return the open connection.

    Redirects (301, 302, 303, 307, 308) are followed up to `max_redirects`
    times, each on a new TCP connection. `timeout` bounds connecting and
    the handshake. The connection sends keepalive pings every
    `ping_interval` seconds from a background thread.

    wss:// checks the server's certificate and host name against the
    system's CAs. `ssl_args` changes that (`cafile`, `certfile`, `keyfile`,
    `password` for a client certificate, `verify=False`), or `ssl_context`
    replaces it; `server_hostname` is the name checked and sent as SNI (by
    default the URL's host). Other keyword options go to `websocket`
    (`origin`, `protocols`, `headers`, `max_frame_size`, ...).
    """
    if ssl_context is None and ssl_args is not None:
        ssl_context = client_context(**ssl_args)
    redirects = 0
    host = options.pop('host', None)
    while True:
        uri = parse_uri(url)
        sock = open_socket(uri, timeout, host=host or uri.host_header,
                           handshake_timeout=timeout, **options)
        try:
            if uri.secure:
                if ssl_context is None:
                    ssl_context = client_context()
                sock.enable_ssl(ssl_context, server_hostname=server_hostname or uri.host)
            sock.client_handshake(uri.secure)
        except InvalidStatus as error:
            sock.close()
            if error.status not in _REDIRECTS or not error.location:
                raise
            if redirects == max_redirects:
                raise RedirectError(f'redirect to {error.location!r} not followed: '
                                    f'max_redirects is {max_redirects}',
                                    error.status, error.headers) from error
            redirects += 1
            url = redirect_target(url, error.location)
            host = None
            continue
        except BaseException:
            sock.close()
            raise
        return connection_class(sock, max_message_size=max_message_size,
                                close_timeout=close_timeout, ping_interval=ping_interval,
                                ping_timeout=ping_timeout)
