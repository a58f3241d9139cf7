"""The exception hierarchy of wspy, rooted at `WebSocketError`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload


class WebSocketError(Exception):
    """Root of every exception raised by wspy."""


class HandshakeError(WebSocketError):
    """The opening handshake failed.

    On the server side `status` is the HTTP status the request is answered
    with and `headers` are extra response headers; on the client side
    `status` is the status the server answered with, if any.
    """

    default_status = 400

    def __init__(self, message: str, status: int | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
        self.headers = list(headers)


class AbortHandshake(HandshakeError):
    """Answer the request with `response` (a `wspy.Response`) instead of upgrading."""

    def __init__(self, response: Any) -> None:
        super().__init__(f'answered with HTTP {response.status}', response.status)
        self.response = response


class InvalidRequest(HandshakeError):
    """The client's upgrade request is malformed or not acceptable (400)."""


class InvalidMethod(InvalidRequest):
    """The request uses another method than GET (405)."""

    default_status = 405


class NotUpgrade(InvalidRequest):
    """A plain HTTP request without a WebSocket upgrade (426)."""

    default_status = 426


class UnsupportedVersion(InvalidRequest):
    """The client asks for a WebSocket version other than 13 (426)."""

    default_status = 426


class InvalidOrigin(InvalidRequest):
    """The request's Origin is not among the trusted origins (403)."""

    default_status = 403


class InvalidLocation(InvalidRequest):
    """The requested path is not among the server's locations (404)."""

    default_status = 404


class SecurityError(InvalidRequest):
    """The HTTP head exceeds a configured limit (431)."""

    default_status = 431


class Unauthorized(InvalidRequest):
    """No valid credentials: answered 401 with a challenge in `headers`."""

    default_status = 401


class HandshakeTimeout(HandshakeError):
    """The handshake did not complete within the handshake timeout (408)."""

    default_status = 408


class InvalidResponse(HandshakeError):
    """The server's handshake response is malformed or does not match."""


class InvalidHeader(InvalidResponse):
    """A header of the server's response is missing or wrong."""


class NegotiationError(InvalidHeader):
    """The server's answer to an extension offer cannot be used."""


class InvalidStatus(InvalidResponse):
    """The server answered with another status than 101 Switching Protocols."""

    def __init__(self, message: str, status: int,
                 headers: Iterable[tuple[str, str]] = (), body: bytes = b'') -> None:
        super().__init__(message, status, headers)
        self.body = body

    @property
    def location(self) -> str | None:
        """The Location header of a redirect, if any."""
        for name, value in self.headers:
            if name.lower() == 'location':
                return value
        return None


class RedirectError(HandshakeError):
    """Too many redirects, or a redirect to a URL that cannot be followed."""


class ProxyError(HandshakeError):
    """The HTTP proxy refused to open a tunnel (`status` is its answer, 407 for credentials)."""

    default_status = 502


class InvalidURI(WebSocketError, ValueError):
    """A URL that is not a valid ws:// or wss:// URL."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; `code` is the close code to fail with (1002)."""

    code = 1002

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidPayload(ProtocolError):
    """Text or a close reason that is not valid UTF-8 (1007)."""

    code = 1007


class PayloadTooBig(ProtocolError):
    """A frame or message over the configured size limit (1009)."""

    code = 1009


class ConnectionClosed(WebSocketError):
    """The connection is closed; `code` and `reason` say how."""

    def __init__(self, code: int, reason: str = '') -> None:
        super().__init__(f'connection closed: {code} {reason}'.rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed by a clean close handshake (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection was closed with an error code or dropped."""


class SocketClosed(ConnectionClosedError):
    """The TCP connection ended without a close handshake (1006).

    `SocketClosed(code, reason)`, wspy 0.9's form, still makes one with that
    `code` (1006 for None), with a DeprecationWarning: raise
    `ConnectionClosedError(code, reason)` for a code other than 1006.
    """

    @overload
    def __init__(self, reason: str = 'connection dropped') -> None: ...

    @overload
    def __init__(self, code: int | None, reason: str, /) -> None: ...

    def __init__(self, reason: str | int | None = 'connection dropped', *legacy: str) -> None:
        if isinstance(reason, str) and not legacy:
            super().__init__(1006, reason)
            return
        from wspy.protocol.compat import warn_deprecated
        warn_deprecated('SocketClosed(code, reason)',
                        'SocketClosed(reason) (code 1006) or ConnectionClosedError(code, reason)')
        code, text = reason, legacy[0] if legacy else ''
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise TypeError(f'SocketClosed(code, reason): code must be an int or None, '
                            f'not {type(code).__name__}')
        super().__init__(1006 if code is None else code, text)


class WriteTimeout(SocketClosed):
    """A write waited `write_timeout` seconds without the peer taking a byte (1006).

    The peer does not read: the connection is dropped.
    """

    def __init__(self, reason: str = 'write timed out') -> None:
        super().__init__(reason)


class InvalidState(WebSocketError):
    """An operation that the connection's current state does not allow."""


class ConcurrencyError(WebSocketError, RuntimeError):
    """Two threads called `recv()` on the same connection at once."""


class PingError(WebSocketError, ValueError):
    """A ping that cannot be sent, such as one with a payload over 125 bytes."""


class SSLError(HandshakeError):
    """TLS failed during the opening handshake (certificate, host name, protocol).

    The `ssl.SSLError` it comes from is its `__cause__`.
    """
