"""The server's side of an opening handshake, decided on data alone.

A `ServerOpening` is fed the bytes a client sends; once its request head
is complete, it decides: the 101 response (with the subprotocol and the
extensions' hooks) and what came after the head, or a rejection (the HTTP
answer to send, and the `HandshakeError` that says why). Every driver (the
blocking `websocket`, `AsyncServer`, `Server`) only moves these bytes and
keeps the time: nothing here reads or writes a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from wspy.errors import AbortHandshake, HandshakeError, HandshakeTimeout
from wspy.protocol.extension import Extension, Hook
from wspy.protocol.forwarded import TrustedProxies, client_host
from wspy.protocol.handshake import (MAX_HEAD_SIZE, MAX_HEADERS, MAX_LINE_LENGTH, HeadReader,
                                     ProtocolSelector, Request, Response, UpgradeSettings,
                                     accept_request, complete_response, error_response,
                                     first_supported, parse_request)

logger = logging.getLogger('wspy')

RequestHook = Callable[[Request], Response | None]


class RequestAuthenticator(Protocol):
    """A server's `auth`: `wspy.BasicAuth`, `wspy.DigestAuth` (see `wspy.auth`)."""

    def authenticate(self, request: Request) -> str:
        """The user name `request` logs in as; `Unauthorized` (a 401) if it does not."""


class ServerSettings(UpgradeSettings, Protocol):
    """What a server's handshakes follow: a `websocket`'s options, or `OpeningSettings`.

    See `websocket` for what each means. `auth` is a `RequestAuthenticator`
    (anything else set there is an error of the application: a 500).
    """

    @property
    def auth(self) -> object:
        """The `RequestAuthenticator` that checks the request, if any."""
    @property
    def process_request(self) -> RequestHook | None:
        """The hook that may answer the request itself, if any."""
    @property
    def trusted_proxies(self) -> TrustedProxies | None:
        """Proxies whose X-Forwarded-For gives the client address, if any."""
    @property
    def handshake_timeout(self) -> float | None:
        """Seconds the whole opening handshake may take (None: no limit)."""
    @property
    def max_line_length(self) -> int:
        """The longest request line or header line accepted, in bytes."""
    @property
    def max_headers(self) -> int:
        """The most header lines accepted."""
    @property
    def max_head_size(self) -> int:
        """The largest request head accepted, in bytes."""


@dataclass
class OpeningSettings:
    """`ServerSettings` of their own, for a `ServerOpening` without a `websocket`."""

    protocols: list[str] = field(default_factory=list)
    trusted_origins: list[str | None] | None = None
    locations: list[str] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    select_protocol: ProtocolSelector = first_supported
    extensions: list[Extension] = field(default_factory=list)
    auth: RequestAuthenticator | None = None
    process_request: RequestHook | None = None
    trusted_proxies: TrustedProxies | None = None
    handshake_timeout: float | None = None
    max_line_length: int = MAX_LINE_LENGTH
    max_headers: int = MAX_HEADERS
    max_head_size: int = MAX_HEAD_SIZE


def rejection(error: HandshakeError, peer: Any = None) -> bytes:
    """The HTTP answer to a request not upgraded: `error`'s (logged here), or its response."""
    if isinstance(error, AbortHandshake):
        logger.debug('answered %s with HTTP %d', _name(peer), error.status)
        return complete_response(error.response).to_bytes()
    logger.info('rejected handshake from %s: %d %s', _name(peer), error.status, error)
    return error_response(error.status, str(error), error.headers).to_bytes()


def _name(peer: Any) -> str:
    return '?' if peer is None else str(peer)


class ServerOpening:
    """The opening handshake of one client of a server, following `settings`.

    `feed(data)` takes the bytes received until it returns True: the
    opening is decided. Then `response` is the bytes to send: the 101
    response when `error` is None (`request`, `protocol`, `hooks` and
    `rest`, the bytes after the head, tell the rest), or the HTTP answer
    of a rejection, and `error` the `HandshakeError` that says why.
    `request` is also set when a complete request was rejected.

    Args:
        settings: what the handshake follows: a `websocket`'s options, or
            `OpeningSettings`.
        peer: the client's address, as `accept()` gave it (for
            `request.client_address` and the log).
    """

    __slots__ = ('settings', 'peer', 'request', 'response', 'protocol', 'hooks', 'rest', 'error',
                 '_reader')

    def __init__(self, settings: ServerSettings, peer: Any = None) -> None:
        self.settings = settings
        self.peer = peer
        self.request: Request | None = None
        self.response = b''
        self.protocol: str | None = None
        self.hooks: list[Hook] = []
        self.rest = b''
        self.error: HandshakeError | None = None
        self._reader: HeadReader | None = None  # made by the first feed()

    @property
    def timeout(self) -> float | None:
        """Seconds the whole opening may take (None: no limit); then `timed_out()`."""
        return self.settings.handshake_timeout

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Take bytes the client sent; whether the opening is decided (see the class)."""
        reader = self._reader
        if reader is None:
            settings = self.settings
            reader = self._reader = HeadReader(settings.max_line_length, settings.max_headers,
                                               settings.max_head_size)
        try:
            head = reader.feed(data)
            if head is None:
                return False
            self.rest = reader.rest
            self.accept(head)
        except HandshakeError as error:
            self.reject(error)
        return True

    def decide(self, head: bytes, rest: bytes = b'') -> None:
        """Decide on a request head read already (`rest` came after it), as `feed` does."""
        self.rest = rest
        try:
            self.accept(head)
        except HandshakeError as error:
            self.reject(error)

    def accept(self, head: bytes) -> bytes:
        """Check a complete request head; the 101 response, also kept in `response`.

        First `auth` and `process_request` (which sees every request, an
        upgrade or not), then the checks of RFC 6455 4.2.1 (a GET over
        HTTP/1.1, one `Host`, `Upgrade: websocket`, `Connection: Upgrade`,
        a 16-byte `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`), the
        `trusted_origins` and `locations`, then the subprotocol and the
        extensions.

        Returns:
            The 101 response, as bytes to send.

        Raises:
            HandshakeError: the error to reject the request with (`reject`
                gives its answer): a bad request, `auth` refusing it, an
                answer of `process_request` (`AbortHandshake`), or a 500 when
                either fails.
        """
        settings = self.settings
        request = self.request = parse_request(head)
        request.client_address = client_host(self.peer, request.headers,
                                             settings.trusted_proxies)
        try:
            auth = settings.auth
            if auth is not None:
                authenticate = getattr(auth, 'authenticate', None)
                if authenticate is None:
                    raise TypeError('a server takes auth=wspy.BasicAuth(...) or '
                                    f'wspy.DigestAuth(...), not a {type(auth).__name__}')
                request.user = authenticate(request)
            process_request = settings.process_request
            answer = None if process_request is None else process_request(request)
        except HandshakeError:
            raise
        except Exception as error:  # application code: a 500, and the server goes on
            logger.exception('error while checking the request from %s', _name(self.peer))
            raise HandshakeError('internal server error', 500) from error
        if answer is not None:
            raise AbortHandshake(answer)
        response, self.protocol, self.hooks = accept_request(request, settings)
        self.response = response.to_bytes()
        return self.response

    def reject(self, error: HandshakeError) -> bytes:
        """Decide a rejection for `error` (found here, or by the driver: TLS, end of file);
        its HTTP answer, also kept in `response`."""
        self.error = error
        self.response = rejection(error, self.peer)
        return self.response

    def timed_out(self) -> bytes:
        """Decide the rejection of a client too slow for `timeout`: the 408 answer."""
        return self.reject(HandshakeTimeout(f'handshake not completed within {self.timeout} s'))
