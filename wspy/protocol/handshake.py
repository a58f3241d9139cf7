"""The opening handshake (RFC 6455 section 4), independent of sockets.

The server side reads an HTTP head within limits (`HeadReader`), parses it
(`parse_request`) and answers it (`accept_request`, `ServerHandshake`); the client side
builds a request (`client_request`) and checks the answer
(`check_response`). The socket layer only moves the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from wspy.errors import (HandshakeError, InvalidHeader, InvalidLocation, InvalidMethod,
                         InvalidOrigin, InvalidRequest, InvalidResponse, InvalidStatus, NotUpgrade,
                         SecurityError, UnsupportedVersion)
from wspy.protocol.extension import Extension, Hook, accept_response, negotiate, offer_header

GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
WS_VERSION = '13'

#: Default limits on an HTTP head: one line, the number of header lines, the whole head.
MAX_LINE_LENGTH = 8192
MAX_HEADERS = 128
MAX_HEAD_SIZE = 65536

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb'[\t\x20-\x7e\x80-\xff]*')
_SAFE_VALUE = re.compile(r'[^\r\n\x00]*')
# Header lines decoded as Latin-1, each ending with CRLF (values stripped afterwards).
_HEADER_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)\r\n")
_HEADER_BLOCK = re.compile(f'(?:{_HEADER_LINE.pattern})*')
_HTTP_VERSION = re.compile(r'HTTP/1\.\d')
# A Sec-WebSocket-Key: 16 bytes in base64 are 22 characters and two of padding.
_KEY = re.compile(r'[A-Za-z0-9+/]{22}==')

HeaderItems = Mapping[str, str] | Iterable[tuple[str, str]]
_REASONS = {status.value: status.phrase for status in HTTPStatus}


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key.

    RFC 6455 4.2.2: "The value of this header field is constructed by
    concatenating /key/ [...] with the string
    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", taking the SHA-1 hash of this
    concatenated value to obtain a 20-byte value and base64-encoding [...]
    this 20-byte hash."
    """
    digest = hashlib.sha1((key + GUID).encode('ascii')).digest()
    return binascii.b2a_base64(digest, newline=False).decode('ascii')


def new_key() -> str:
    """A random Sec-WebSocket-Key (16 bytes, base64).

    RFC 6455 4.1: "a nonce consisting of a randomly selected 16-byte value
    that has been base64-encoded", and "The nonce MUST be selected randomly
    for each connection."
    """
    return base64.b64encode(os.urandom(16)).decode('ascii')


_NAMES: dict[str, tuple[str, str]] = {}


def _new_names(name: str) -> tuple[str, str]:
    """A header name not seen yet and its lower-cased form, kept for the next requests."""
    names = (name, name.lower())
    if len(_NAMES) < 1024:  # the usual names; not every name a client can make up
        _NAMES[name] = names
    return names


class Headers:
    """HTTP headers: case-insensitive names, order kept, repeats allowed.

    `headers[name]` is `get(name)`, or a `KeyError` for a header that is
    not there; `name in headers` asks whether it is; iterating gives the
    names, in order and repeated, and `len()` counts the headers.

    Args:
        items: the headers to start with: a mapping, or (name, value) pairs.
    """

    __slots__ = ('_fields', '_by_name')

    def __init__(self, items: HeaderItems = ()) -> None:
        # Names and values in turn, no tuple for each header: an idle connection keeps its
        # request, and 5 headers take 200 bytes less so.
        self._fields: list[str] = []
        # Lower-cased name -> its value, or its values when it repeats: a handshake
        # looks up a dozen names, and an idle connection keeps its request.
        self._by_name: dict[str, str | list[str]] = {}
        if items:
            self._extend(items.items() if isinstance(items, Mapping) else items)

    def _extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Append headers: `add` for each, in one call."""
        fields = self._fields
        by_name = self._by_name
        for name, value in items:
            name, key = _NAMES.get(name) or _new_names(name)
            fields += name, value
            values = by_name.get(key)
            if values is None:
                by_name[key] = value
            elif isinstance(values, list):
                values.append(value)
            else:
                by_name[key] = [values, value]

    def add(self, name: str, value: str) -> None:
        """Append a header."""
        self._extend(((name, value),))

    def get(self, name: str, default: str | None = None) -> str | None:
        """All values of `name` joined with ', ' (RFC 9110 5.3), or `default`."""
        values = self._by_name.get(name.lower())
        if values is None:
            return default
        return ', '.join(values) if isinstance(values, list) else values

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order."""
        values = self._by_name.get(name.lower())
        if values is None:
            return []
        return list(values) if isinstance(values, list) else [values]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated elements of `name`, lower-cased, empties dropped."""
        value = self.get(name) or ''
        return [t.strip().lower() for t in value.split(',') if t.strip()]

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, in order."""
        fields = self._fields
        return list(zip(fields[::2], fields[1::2], strict=True))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields[::2])

    def __len__(self) -> int:
        return len(self._fields) // 2

    def __repr__(self) -> str:
        return f'Headers({self.items()!r})'


@dataclass
class Request:
    """An HTTP request head: method, target and headers.

    A server gives a client's upgrade request as `connection.request`, to
    `process_request` and to `auth`.
    """

    #: The method: `'GET'` for an upgrade.
    method: str
    #: The request target as sent: the path and query (see `path`, `query`).
    target: str
    #: The request's headers.
    headers: Headers
    #: The HTTP version: `'HTTP/1.1'` for an upgrade.
    version: str = 'HTTP/1.1'
    #: The user name the request authenticated as, on a server with `auth`.
    user: str | None = None
    #: The client's IP address (on a server): the peer's, or from `X-Forwarded-For`
    #: when the peer is one of the `trusted_proxies`; `''` for a Unix socket peer.
    client_address: str | None = None

    @property
    def path(self) -> str:
        """The path of the request target, without the query."""
        return urlsplit(self.target).path or '/'

    @property
    def query(self) -> str:
        """The query string of the request target, without '?'."""
        return urlsplit(self.target).query

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values."""
        return parse_qs(self.query)


class Response:
    """An HTTP response: status, headers and body.

    What a server's `process_request` returns to answer a request instead
    of upgrading it (a health check, a redirect, a page). The server adds
    `Content-Length` and `Connection: close` when they are missing, and
    closes the connection once it is sent.

    Args:
        status: the HTTP status (200, 302, 403, ...).
        headers: a `Headers`, a mapping or (name, value) pairs.
        body: the body, as bytes.
        reason: the reason phrase; by default the standard one for `status`.

    Raises:
        ValueError: a header with a CR, LF or NUL, or a name that is not a
            token.
    """

    __slots__ = ('status', 'headers', 'body', 'reason')

    def __init__(self, status: int, headers: Headers | HeaderItems = (), body: bytes = b'',
                 reason: str = '') -> None:
        self.status = status
        self.headers = headers if isinstance(headers, Headers) else Headers(
            check_header_items(headers))
        self.body = body
        self.reason = reason or _REASONS.get(status, 'Unknown')

    def __repr__(self) -> str:
        return f'Response({self.status}, {self.headers!r}, {len(self.body)} bytes)'

    def to_bytes(self) -> bytes:
        """The response as bytes on the wire."""
        lines = [f'HTTP/1.1 {self.status} {self.reason}']
        lines.extend(f'{name}: {value}' for name, value in self.headers.items())
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + self.body


class HeadReader:
    """Collects an HTTP head from received bytes, within size limits.

    `feed()` returns the head (up to and including the blank line) once it
    is complete; the bytes after it are kept in `rest`. Going over a limit
    raises `SecurityError` as soon as it happens. Each byte is scanned once,
    so a peer trickling its request costs linear time.
    """

    __slots__ = (
        '_data',
        '_line_start',
        '_lines',
        'max_head_size',
        'max_headers',
        'max_line_length',
        'rest',
    )

    def __init__(self, max_line_length: int = MAX_LINE_LENGTH, max_headers: int = MAX_HEADERS,
                 max_head_size: int = MAX_HEAD_SIZE) -> None:
        self.max_line_length = max_line_length
        self.max_headers = max_headers
        self.max_head_size = max_head_size
        self.rest = b''
        self._data = bytearray()
        self._line_start = 0
        self._lines = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Add received bytes; the complete head, or None for more."""
        data_start = len(self._data)
        self._data += data
        if not data_start and self._data and not self._data[:1].isalpha():
            # Fail at once rather than wait for a blank line that never comes.
            raise HandshakeError('TLS sent to a plain HTTP port' if self._data[0] == 0x16
                                 else 'not HTTP: it starts with a non-letter')
        end = self._data.find(b'\r\n\r\n', max(0, data_start - 3))
        limit = len(self._data) if end < 0 else end + 4
        if limit > self.max_head_size:
            raise SecurityError(f'HTTP head over {self.max_head_size} bytes')
        if limit - self._line_start <= self.max_line_length:
            # No line here can be too long: just count them (a whole request usually).
            newlines = self._data.count(b'\n', data_start, limit)
            if newlines:
                self._lines += newlines
                self._line_start = self._data.rfind(b'\n', data_start, limit) + 1
        else:
            newline = self._data.find(b'\n', data_start, limit)
            while newline >= 0:
                self._check_line(newline - self._line_start)
                self._line_start = newline + 1
                self._lines += 1
                newline = self._data.find(b'\n', newline + 1, limit)
            self._check_line(limit - self._line_start)
        # Finished lines are the start line, the headers and, once complete, the blank line.
        if self._lines - 1 - (end >= 0) > self.max_headers:
            raise SecurityError(f'more than {self.max_headers} headers')
        if end < 0:
            return None
        self.rest = bytes(self._data[limit:])
        return bytes(self._data[:limit])

    def _check_line(self, length: int) -> None:
        if length > self.max_line_length + 1:
            raise SecurityError(f'HTTP line over {self.max_line_length} bytes')


def _parse_header_lines(lines: list[bytes], error: type[HandshakeError]) -> Headers:
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(b':')
        if not colon or not _TOKEN.fullmatch(name):
            raise error(f'malformed header line {line[:80]!r}')
        value = value.strip(b' \t')
        if not _FIELD_VALUE.fullmatch(value):
            raise error(f'invalid characters in header {name.decode()}')
        headers.add(name.decode('ascii'), value.decode('latin-1'))
    return headers


def _parse_head(head: bytes, error: type[HandshakeError]) -> tuple[bytes, Headers]:
    """The first line of a head and its headers."""
    first, _, rest = head.partition(b'\r\n')
    if rest.endswith(b'\r\n\r\n'):
        rest = rest[:-2]  # the blank line that ends the head
    elif rest == b'\r\n':
        rest = b''
    text = rest.decode('latin-1')
    if first and _HEADER_BLOCK.fullmatch(text):  # the usual head: every line at once
        headers = Headers()
        headers._extend([(name, value.strip(' \t')) for name, value in _HEADER_LINE.findall(text)])
        return first, headers
    # Anything else, line by line: empty lines at the end allowed, errors precise.
    lines = head.split(b'\r\n')
    while lines and lines[-1] == b'':
        lines.pop()
    if not lines:
        raise error('empty HTTP head')
    return lines[0], _parse_header_lines(lines[1:], error)


def parse_request(head: bytes) -> Request:
    """Parse a request head; `InvalidRequest` (with the HTTP status) if malformed."""
    line, headers = _parse_head(head, InvalidRequest)
    parts = line.decode('latin-1').split(' ')
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise InvalidRequest(f'malformed request line {line[:80]!r}')
    method, target, version = parts
    if not _HTTP_VERSION.fullmatch(version):
        raise InvalidRequest(f'unsupported HTTP version {version[:20]!r}', 505)
    return Request(method, target, headers, version)


def parse_response(head: bytes) -> tuple[int, str, Headers]:
    """Parse a response head into status, reason and headers."""
    line, headers = _parse_head(head, InvalidResponse)
    match = re.fullmatch(rb'HTTP/1\.\d (\d{3})(?: (.*))?', line)
    if not match:
        raise InvalidResponse(f'malformed status line {line[:80]!r}')
    return int(match.group(1)), (match.group(2) or b'').decode('latin-1'), headers


def check_header_items(items: HeaderItems) -> list[tuple[str, str]]:
    """Validate extra headers given by the application (no CR/LF injection)."""
    pairs = list(items.items() if isinstance(items, Mapping) else items)
    for name, value in pairs:
        if not _TOKEN.fullmatch(name.encode('latin-1', 'replace')) or \
                not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f'invalid header {name!r}: {value!r}')
    return pairs


def _decode_key(key: str | None) -> str:
    if key is None:
        raise InvalidRequest('missing Sec-WebSocket-Key')
    if not _KEY.fullmatch(key):
        raise InvalidRequest('Sec-WebSocket-Key is not 16 bytes in base64')
    return key


ProtocolSelector = Callable[[list[str], list[str]], 'str | None']


def first_supported(offered: list[str], supported: list[str]) -> str | None:
    """The server's first supported subprotocol that the client offered."""
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


class UpgradeSettings(Protocol):
    """What the checks of an upgrade request follow: a `ServerHandshake`, a `websocket`.

    See `ServerHandshake` for what each means.
    """

    @property
    def protocols(self) -> list[str]:
        """Subprotocols the server speaks, in its order of preference."""
    @property
    def trusted_origins(self) -> list[str | None] | None:
        """Origins accepted (None: any; None in the list: requests without one)."""
    @property
    def locations(self) -> list[str] | None:
        """Paths accepted (None: any)."""
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Extra headers of the 101 response."""
    @property
    def select_protocol(self) -> ProtocolSelector:
        """Chooses the subprotocol among those the client offers."""
    @property
    def extensions(self) -> list[Extension]:
        """Extensions the server negotiates, in its order of preference."""


def check_request(request: Request, settings: UpgradeSettings) -> tuple[str, str | None]:
    """Validate an upgrade request; returns its key and the chosen subprotocol."""
    headers = request.headers
    if request.method != 'GET':
        raise InvalidMethod(f'method {request.method} not allowed, only GET',
                            headers=[('Allow', 'GET')])
    if request.version != 'HTTP/1.1':
        raise InvalidRequest(f'{request.version} cannot upgrade, HTTP/1.1 required')
    if 'websocket' not in headers.tokens('Upgrade'):
        raise NotUpgrade('this is a WebSocket endpoint: send an Upgrade: websocket request',
                         headers=[('Upgrade', 'websocket'),
                                  ('Sec-WebSocket-Version', WS_VERSION)])
    if 'upgrade' not in headers.tokens('Connection'):
        raise InvalidRequest('Connection header lacks "upgrade"')
    if len(headers.get_all('Host')) != 1:
        raise InvalidRequest('exactly one Host header required')
    version = headers.get('Sec-WebSocket-Version')
    if version is None:
        raise InvalidRequest('missing Sec-WebSocket-Version')
    if version.strip() != WS_VERSION:
        # RFC 9110 15.5.22: a 426 names the protocol to upgrade to.
        raise UnsupportedVersion(f'WebSocket version {version[:20]!r} not supported',
                                 headers=[('Upgrade', 'websocket'),
                                          ('Sec-WebSocket-Version', WS_VERSION)])
    keys = headers.get_all('Sec-WebSocket-Key')
    if len(keys) > 1:
        raise InvalidRequest('more than one Sec-WebSocket-Key')
    key = _decode_key(keys[0] if keys else None)
    if settings.trusted_origins is not None:
        origin = headers.get('Origin')
        if origin not in settings.trusted_origins:
            raise InvalidOrigin(f'origin {origin!r} not trusted')
    if settings.locations is not None and request.path not in settings.locations:
        raise InvalidLocation(f'no WebSocket endpoint at {request.path[:200]!r}')
    offered = [p.strip() for p in (headers.get('Sec-WebSocket-Protocol') or '').split(',')
               if p.strip()]
    protocol = settings.select_protocol(offered, settings.protocols) if offered else None
    if protocol is not None and protocol not in offered:
        raise InvalidRequest(f'selected subprotocol {protocol!r} was not offered', 500)
    return key, protocol


def accept_request(request: Request, settings: UpgradeSettings,
                   ) -> tuple[Response, str | None, list[Hook]]:
    """The 101 response to a valid request, the chosen subprotocol and extension hooks."""
    key, protocol = check_request(request, settings)
    accepted, hooks = negotiate(request.headers.get('Sec-WebSocket-Extensions'),
                                settings.extensions)
    headers = Headers([('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                       ('Sec-WebSocket-Accept', accept_key(key))])
    if protocol is not None:
        headers.add('Sec-WebSocket-Protocol', protocol)
    if accepted is not None:
        headers.add('Sec-WebSocket-Extensions', accepted)
    for name, value in settings.headers:
        headers.add(name, value)
    return Response(101, headers), protocol, hooks


@dataclass
class ServerHandshake:
    """The server's side of the handshake: checks a request and answers it.

    `protocols` are the subprotocols the server speaks, in its order of
    preference; `select_protocol(offered, supported)` picks one.
    `trusted_origins`, when given, lists the Origin values accepted (None in
    it accepts requests without Origin); `locations`, when given, lists the
    paths served. `headers` are added to every 101 response.
    """

    protocols: list[str] = field(default_factory=list)
    trusted_origins: list[str | None] | None = None
    locations: list[str] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    select_protocol: ProtocolSelector = first_supported
    extensions: list[Extension] = field(default_factory=list)

    def check(self, request: Request) -> tuple[str, str | None]:
        """Validate an upgrade request; returns its key and the chosen subprotocol."""
        return check_request(request, self)

    def accept(self, request: Request) -> tuple[Response, str | None, list[Hook]]:
        """The 101 response to a valid request, the chosen subprotocol and extension hooks."""
        return accept_request(request, self)


def complete_response(response: Response) -> Response:
    """The response with Content-Length and Connection: close, as a closing answer needs."""
    headers = Headers(response.headers.items())
    if 'Content-Length' not in headers:
        headers.add('Content-Length', str(len(response.body)))
    if 'close' not in headers.tokens('Connection'):
        headers.add('Connection', 'close')
    return Response(response.status, headers, response.body, response.reason)


def error_response(status: int, message: str,
                   headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A plain-text HTTP error response that closes the connection.

    It says `Connection: close` and nothing else: a `Connection` among
    `headers` is left out.
    """
    body = (message + '\n').encode('utf-8')
    all_headers = Headers([('Content-Type', 'text/plain; charset=utf-8'),
                           ('Content-Length', str(len(body))), ('Connection', 'close')])
    for name, value in headers:
        if name.lower() != 'connection':
            all_headers.add(name, value)
    return Response(status, all_headers, body)


def format_host(host: str, port: int, secure: bool = False) -> str:
    """The Host header for `host` and `port`: IPv6 in brackets, default port left out."""
    if ':' in host and not host.startswith('['):
        host = f'[{host}]'
    if port == (443 if secure else 80):
        return host
    return f'{host}:{port}'


def client_request(host: str, resource: str, key: str, *, origin: str | None = None,
                   protocols: Iterable[str] = (), extensions: Iterable[Extension] = (),
                   headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The client's upgrade request."""
    lines = [f'GET {resource} HTTP/1.1', f'Host: {host}', 'Upgrade: websocket',
             'Connection: Upgrade', f'Sec-WebSocket-Key: {key}',
             f'Sec-WebSocket-Version: {WS_VERSION}']
    if origin is not None:
        lines.append(f'Origin: {origin}')
    protocols = list(protocols)
    if protocols:
        lines.append('Sec-WebSocket-Protocol: ' + ', '.join(protocols))
    offers = offer_header(list(extensions))
    if offers:
        lines.append(f'Sec-WebSocket-Extensions: {offers}')
    lines.extend(f'{name}: {value}' for name, value in check_header_items(headers))
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def check_response(status: int, headers: Headers, key: str, protocols: Iterable[str] = (),
                   extensions: Iterable[Extension] = ()) -> tuple[str | None, list[Hook]]:
    """Validate the server's 101 response; the subprotocol it chose and extension hooks."""
    if status != 101:
        raise InvalidStatus(f'server answered {status} instead of 101', status, headers.items())
    if 'websocket' not in headers.tokens('Upgrade'):
        raise InvalidHeader('response Upgrade header is not "websocket"')
    if 'upgrade' not in headers.tokens('Connection'):
        raise InvalidHeader('response Connection header lacks "upgrade"')
    if headers.get_all('Sec-WebSocket-Accept') != [accept_key(key)]:
        raise InvalidHeader('wrong Sec-WebSocket-Accept')
    hooks = accept_response(headers.get('Sec-WebSocket-Extensions'), extensions)
    chosen = headers.get_all('Sec-WebSocket-Protocol')
    if not chosen:
        return None, hooks
    if len(chosen) != 1 or chosen[0] not in list(protocols):
        raise InvalidHeader(f'server chose subprotocol {", ".join(chosen)!r}, not offered')
    return chosen[0], hooks
