"""The client's opening decisions: the URL to try, the headers to send, what to do with
an answer that is not 101 (follow a redirect, answer a 401 challenge, or fail), the
exchange that opens a tunnel through an HTTP proxy, and the handshake of one attempt.

`ClientOpening` holds no socket: `wspy.connect()` and `AsyncClient` each
carry out its attempts on their own transport, and both so follow the same
rules: redirects up to a limit, never from wss:// to ws://, and credentials
(`auth=`, the URL's, and the caller's Authorization, Proxy-Authorization
and Cookie headers) never sent on to another origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from wspy.errors import (HandshakeError, HandshakeTimeout, InvalidStatus, InvalidURI, ProxyError,
                         RedirectError)
from wspy.protocol.auth import authorization, basic_authorization, parse_challenges
from wspy.protocol.extension import Extension, Hook
from wspy.protocol.handshake import (MAX_HEAD_SIZE, MAX_HEADERS, MAX_LINE_LENGTH, HeadReader,
                                     check_response, client_request, format_host, new_key,
                                     parse_response)

#: Default number of redirects followed.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: The caller's headers that are not sent on to another origin after a redirect.
_CREDENTIAL_HEADERS = frozenset({'authorization', 'proxy-authorization', 'cookie'})
# How many answers to one 401 challenge after another: the first, then stale nonces.
_MAX_AUTH_ATTEMPTS = 3
#: The most of an error answer's body kept in its `InvalidStatus`.
MAX_ERROR_BODY = 65536


def without_credentials(url: str) -> str:
    """`url` without the user name and password it may hold, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None and parts.username is None:
            return url
        host = parts.netloc.rpartition('@')[2]
    except ValueError:
        return url.rpartition('@')[2] if '@' in url else url
    return parts._replace(netloc=host).geturl()


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
        raise InvalidURI(f'{without_credentials(url)!r}: {error}') from None
    if parts.scheme not in ('ws', 'wss'):
        raise InvalidURI(f'{without_credentials(url)!r} is not a ws:// or wss:// URL')
    if not parts.hostname:
        raise InvalidURI(f'{without_credentials(url)!r} has no host')
    if parts.fragment:
        raise InvalidURI(f'{without_credentials(url)!r}: a WebSocket URL has no fragment')
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


class ClientOpening:
    """The attempts of a client opening a WebSocket to `url`, decided on data alone.

    `uri`, `host` and `headers` say what to connect to and send now; after
    an answer that is not 101, `refused(error)` moves to the next attempt
    (a redirect to follow, a challenge to answer) or raises what the
    caller should: the `InvalidStatus` itself, or `RedirectError`.

    Args:
        url: the ws:// or wss:// URL to open.
        headers: the caller's extra headers.
        auth: (user, password) to answer a 401 with.
        max_redirects: the most redirects followed.
        host: the caller's Host header, if any, kept for the first origin.

    Raises:
        InvalidURI: `url` is not a ws:// or wss:// URL.
    """

    def __init__(self, url: str, headers: Iterable[tuple[str, str]] = (),
                 auth: tuple[str, str] | None = None, max_redirects: int = MAX_REDIRECTS,
                 host: str | None = None) -> None:
        self.url = url
        self.uri = parse_uri(url)
        self.host = host
        self.max_redirects = max_redirects
        self._auth = auth
        self._first_origin = self.uri.origin
        self._headers = list(headers)
        self._authorization: str | None = None
        self._auth_attempts = 0
        self.redirects = 0

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers for this attempt: the caller's, and an answer to a challenge."""
        if self._authorization is None:
            return self._headers
        return [*self._headers, ('Authorization', self._authorization)]

    @property
    def host_header(self) -> str:
        """The Host header for this attempt."""
        return self.host or self.uri.host_header

    def refused(self, error: InvalidStatus) -> None:
        """The server answered `error` (not 101): move to the next attempt, or raise.

        A 401 is answered once with the credentials for this origin (again
        only for a stale nonce); a redirect with a Location is followed.

        Raises:
            InvalidStatus: `error` itself, or a 401 that cannot be answered
                or refused the credentials.
            RedirectError: a redirect over `max_redirects`, or from wss://
                to ws://, or to a URL that is not ws(s):// or http(s)://.
            InvalidURI: a redirect to a malformed URL.
        """
        credentials = self._credentials()
        if error.status == 401 and credentials is not None:
            self._answer(error, credentials)
        elif error.status in _REDIRECTS and error.location:
            self._follow(error)
        else:
            raise error

    def _credentials(self) -> tuple[str, str] | None:
        """The credentials for this attempt's origin: the URL's, or `auth=` on the first."""
        if self.uri.user is not None:
            return self.uri.user, self.uri.password or ''
        return self._auth if self.uri.origin == self._first_origin else None

    def _answer(self, error: InvalidStatus, credentials: tuple[str, str]) -> None:
        """Answer a 401 challenge (once, then again only for a stale nonce), or raise."""
        challenges = parse_challenges(value for name, value in error.headers
                                      if name.lower() == 'www-authenticate')
        stale = any(params.get('stale', '').lower() == 'true' for _, params in challenges)
        if self._auth_attempts == 0 or (stale and self._auth_attempts < _MAX_AUTH_ATTEMPTS):
            answer = authorization(challenges, *credentials, 'GET', self.uri.resource)
            if answer is not None:
                self._authorization = answer
                self._auth_attempts += 1
                return
        raise InvalidStatus('server refused the credentials (401)' if self._auth_attempts
                            else 'server asks for a scheme wspy does not speak (401)',
                            error.status, error.headers, error.body) from error

    def _follow(self, error: InvalidStatus) -> None:
        """Go where the redirect `error` leads, or raise `RedirectError`."""
        assert error.location is not None
        if self.redirects == self.max_redirects:
            raise RedirectError(f'redirect to {error.location!r} not followed: '
                                f'max_redirects is {self.max_redirects}',
                                error.status, error.headers) from error
        url = redirect_target(self.url, error.location)
        target = parse_uri(url)
        if self.uri.secure and not target.secure:
            raise RedirectError(f'redirect from wss:// to {error.location!r} not followed: '
                                'it would leave TLS', error.status, error.headers) from error
        if target.origin != self.uri.origin:
            self._headers = [(name, value) for name, value in self._headers
                             if name.lower() not in _CREDENTIAL_HEADERS]
        self.url, self.uri = url, target
        self.redirects += 1
        self.host = None
        self._authorization = None
        self._auth_attempts = 0


class Tunnel:
    """The CONNECT exchange that opens a tunnel to `uri` through the http:// `proxy`.

    `host` and `port` are the proxy's, to connect to; `request` the bytes
    to send it; `feed()` takes what it answers, until the tunnel is open
    (True) or refused (`ProxyError`).

    Args:
        uri: the WebSocket URL the tunnel leads to.
        proxy: the http:// proxy URL, with credentials (sent as Basic
            `Proxy-Authorization`) if it wants them.

    Raises:
        InvalidURI: a proxy URL that is not http://.
    """

    def __init__(self, uri: URI, proxy: str) -> None:
        try:
            parts = urlsplit(proxy)
            self.port = parts.port or 80
        except ValueError as error:
            raise InvalidURI(f'proxy {without_credentials(proxy)!r}: {error}') from None
        if parts.scheme != 'http' or not parts.hostname:
            raise InvalidURI(f'proxy {without_credentials(proxy)!r}: only http:// proxies '
                             'are supported')
        self.host = parts.hostname
        self.authority = uri.authority
        lines = [f'CONNECT {uri.authority} HTTP/1.1', f'Host: {uri.authority}']
        self._credentials = parts.username is not None
        if parts.username is not None:
            credentials = basic_authorization(unquote(parts.username),
                                              unquote(parts.password or ''))
            lines.append(f'Proxy-Authorization: {credentials}')
        self.request = ('\r\n'.join(lines) + '\r\n\r\n').encode()
        self._reader = HeadReader()

    def feed(self, data: bytes) -> bool:
        """Take bytes the proxy sent; whether the tunnel is open. b'' is its end of file.

        Raises:
            ProxyError: the proxy closed the connection, refused the tunnel
                (`status` is its answer: 407 for credentials), or sent data
                before the tunnel was used.
        """
        if not data:
            raise ProxyError(f'proxy {self.host} closed the connection during CONNECT')
        head = self._reader.feed(data)
        if head is None:
            return False
        status, reason, _ = parse_response(head)
        if status == 407:
            raise ProxyError(f'proxy {self.host} refused the credentials: 407 {reason}'
                             if self._credentials else
                             f'proxy {self.host} wants credentials: 407 {reason}', status)
        if not 200 <= status < 300:
            raise ProxyError(f'proxy {self.host} refused CONNECT to {self.authority}: '
                             f'{status} {reason}', status)
        if self._reader.rest:
            raise ProxyError(f'proxy {self.host} sent data before the tunnel was used')
        return True

    def timed_out(self) -> ProxyError:
        """The error for a proxy that did not answer in time (504)."""
        return ProxyError(f'proxy {self.host} did not answer CONNECT in time', 504)


class ClientHandshake:
    """The client's side of one opening handshake: its upgrade request, then the answer.

    `request` is the bytes to send (with a fresh `key`); `feed()` takes
    what the server sends until its 101 is accepted. Then `protocol`,
    `hooks` and `response_headers` tell what it agreed to, and `rest` is
    what came after the head (the first frames). An answer other than 101
    is an `InvalidStatus`, raised once its body (up to `MAX_ERROR_BODY`)
    has come, for `ClientOpening.refused` to decide on.

    Args:
        host: the Host header.
        resource: the request target (path and query).
        origin: the Origin header, if any.
        protocols: the subprotocols offered.
        extensions: the extensions offered.
        headers: extra headers of the request.
        max_line_length: the longest line of the answer's head accepted.
        max_headers: the most header lines of the answer's head accepted.
        max_head_size: the largest head of the answer accepted.
    """

    def __init__(self, host: str, resource: str = '/', *, origin: str | None = None,
                 protocols: Iterable[str] = (), extensions: Iterable[Extension] = (),
                 headers: Iterable[tuple[str, str]] = (),
                 max_line_length: int = MAX_LINE_LENGTH, max_headers: int = MAX_HEADERS,
                 max_head_size: int = MAX_HEAD_SIZE) -> None:
        self.protocols = list(protocols)
        self.extensions = list(extensions)
        self.key = new_key()
        self.request = client_request(host, resource, self.key, origin=origin,
                                      protocols=self.protocols, extensions=self.extensions,
                                      headers=headers)
        self.protocol: str | None = None
        self.hooks: list[Hook] = []
        self.response_headers: list[tuple[str, str]] = []
        self.rest = b''
        self._reader = HeadReader(max_line_length, max_headers, max_head_size)
        self._refusal: InvalidStatus | None = None  # a refusal whose body is arriving
        self._body = bytearray()
        self._body_length = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Take bytes the server sent (b'' at the end of the stream); whether its 101 is
        accepted.

        The answer is checked as RFC 6455 4.1 asks: status 101, `Upgrade:
        websocket`, `Connection: Upgrade`, the `Sec-WebSocket-Accept` of
        the request's key, a subprotocol and extensions among those offered.

        Raises:
            InvalidStatus: an answer other than 101, once its body has come.
            HandshakeError: an answer that is malformed or does not match the
                request (`InvalidHeader`, `NegotiationError`, `SecurityError`
                over the head limits), or the end of the stream before it.
        """
        if self._refusal is not None:
            return self._take_body(data, end=not data)
        if not data:
            raise HandshakeError('connection closed while waiting for the handshake response')
        head = self._reader.feed(data)
        if head is None:
            return False
        status, _, headers = parse_response(head)
        if status != 101:
            self._refusal = InvalidStatus(f'server answered {status} instead of 101', status,
                                          headers.items())
            self._body_length = _body_length(headers.get('Content-Length'))
            return self._take_body(self._reader.rest)
        self.protocol, self.hooks = check_response(status, headers, self.key, self.protocols,
                                                   self.extensions)
        self.response_headers = headers.items()
        self.rest = self._reader.rest
        return True

    def _take_body(self, data: bytes | bytearray | memoryview, end: bool = False) -> bool:
        """Add to the refusal's body; raise the refusal once the body is complete, or at
        the `end` of the stream."""
        body = self._body
        body += data[:self._body_length - len(body)]
        if end or len(body) >= self._body_length:
            refusal = self._refusal_so_far()
            assert refusal is not None
            raise refusal
        return False

    def timed_out(self) -> HandshakeError:
        """The error for an answer not complete in time: the refusal with the part of its
        body that came, or `HandshakeTimeout`."""
        refusal = self._refusal_so_far()
        if refusal is None:
            return HandshakeTimeout('timed out waiting for the handshake response')
        return refusal

    def _refusal_so_far(self) -> InvalidStatus | None:
        """The `InvalidStatus` of a refusal, with the body received; None before one."""
        refusal = self._refusal
        if refusal is not None:
            refusal.body = bytes(self._body)
        return refusal


def _body_length(value: str | None) -> int:
    """How much of an error answer's body to wait for, from its Content-Length."""
    try:
        return max(0, min(int(value or 0), MAX_ERROR_BODY))
    except ValueError:
        return 0
