"""The exception hierarchy of wspy, rooted at `WebSocketError`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload


class WebSocketError(Exception):
    """Root of every exception raised by wspy."""


class HandshakeError(WebSocketError):
    """The opening handshake failed.

    A server answers a request it refuses with the HTTP status of the
    subclass, and logs it (`websocket.accept()` and `wspy.wsgi.accept`
    raise it to their caller); a client raises it from `connect()` (or
    gives it to `AsyncClient.onconnecterror`).

    Args:
        message: what was wrong.
        status: the HTTP status; by default the class's (400 here).
        headers: extra headers of the server's answer.

    Attributes:
        status: on the server side, the HTTP status the request is answered
            with; on the client side, the status the server answered with
            (`InvalidStatus`) or the class's.
        headers: on the server side, the extra headers of the answer (a
            401's challenge, a 405's `Allow`); on the client side, those the
            server answered with.
    """

    default_status = 400

    def __init__(self, message: str, status: int | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
        self.headers = list(headers)


class AbortHandshake(HandshakeError):
    """Answer the request with `response` (a `wspy.Response`) instead of upgrading.

    What a server makes of a `Response` that `process_request` returns; an
    application may raise it from there as well.
    """

    def __init__(self, response: Any) -> None:
        super().__init__(f'answered with HTTP {response.status}', response.status)
        self.response = response


class InvalidRequest(HandshakeError):
    """The client's upgrade request is malformed or not acceptable (400)."""


class InvalidMethod(InvalidRequest):
    """The request uses another method than GET (405, with `Allow: GET`).

    RFC 6455 4.1: "The method of the request MUST be GET".
    """

    default_status = 405


class NotUpgrade(InvalidRequest):
    """A plain HTTP request without a WebSocket upgrade (426 Upgrade Required).

    The answer names the protocol to upgrade to (`Upgrade: websocket`,
    RFC 9110 15.5.22). A server's `process_request` sees the request
    first, and may answer it with a page instead.
    """

    default_status = 426


class UnsupportedVersion(InvalidRequest):
    """The client asks for a WebSocket version other than 13 (426).

    RFC 6455 4.4: "If the server doesn't support the requested version, it
    MUST respond with a `Sec-WebSocket-Version` header field [...]
    containing all versions it is willing to use": the answer says
    `Sec-WebSocket-Version: 13`.
    """

    default_status = 426


class InvalidOrigin(InvalidRequest):
    """The request's Origin is not among the `trusted_origins` (403).

    RFC 6455 10.2: "If the origin indicated is unacceptable to the server,
    then it SHOULD respond to the WebSocket handshake with a reply
    containing HTTP 403 Forbidden status code."
    """

    default_status = 403


class InvalidLocation(InvalidRequest):
    """The requested path is not among the server's `locations` (404)."""

    default_status = 404


class SecurityError(InvalidRequest):
    """The HTTP head exceeds a configured limit (431).

    `max_line_length`, `max_headers` or `max_head_size`: the request is
    refused as soon as it goes over, without reading the rest.
    """

    default_status = 431


class Unauthorized(InvalidRequest):
    """No valid credentials for the server's `auth`: answered 401 with a challenge in `headers`.

    Raised by `BasicAuth.authenticate` and `DigestAuth.authenticate` (and
    any `auth` of the application's); the `WWW-Authenticate` headers are
    the challenges.
    """

    default_status = 401


class HandshakeTimeout(HandshakeError):
    """The handshake did not complete within `handshake_timeout` (408).

    A server answers a client too slow with 408; a client raises it
    (`connect`) or reports it (`AsyncClient`, to `onconnecterror`) when the
    whole opening (connecting, TLS, the upgrade, redirects) takes longer
    than its timeout.
    """

    default_status = 408


class InvalidResponse(HandshakeError):
    """The server's handshake response is malformed or does not match the request (client side)."""


class InvalidHeader(InvalidResponse):
    """A header of the server's 101 response is missing or wrong.

    `Upgrade`, `Connection`, a `Sec-WebSocket-Accept` that is not the one
    for the request's key (RFC 6455 4.1: then "the client MUST *Fail the
    WebSocket Connection*"), or a subprotocol that was not offered.
    """


class NegotiationError(InvalidHeader):
    """The server's answer to an extension offer cannot be used.

    An extension that was not offered, accepted twice, or with parameters
    the client did not allow (see `Extension.accept_response`).
    """


class InvalidStatus(InvalidResponse):
    """The server answered with another status than 101 Switching Protocols.

    RFC 6455 4.1: "If the status code received from the server is not 101,
    the client handles the response per HTTP [RFC2616] procedures":
    `connect()` follows redirects and answers a 401 with the credentials it
    has, and raises this for any other answer (and for a 401 it cannot
    answer, or that refuses its credentials).

    Attributes:
        status: the status the server answered with (401, 403, 404, ...).
        headers: the headers of the answer, as (name, value) pairs.
        body: the body of the answer (up to 64 KiB of it).
    """

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
    """Too many redirects (over `max_redirects`), or a redirect that is not followed.

    One to a URL that is not ws://, wss://, http:// or https://, and one
    from wss:// to ws:// (it would leave TLS).
    """


class ProxyError(HandshakeError):
    """The HTTP proxy refused to open a tunnel (`status` is its answer, 407 for credentials)."""

    default_status = 502


class InvalidURI(WebSocketError, ValueError):
    """A URL that is not a valid ws:// or wss:// URL (or a proxy URL that is not http://)."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455: the connection fails with `code` (1002).

    The connection fails (RFC 6455 7.1.7: the endpoint "SHOULD send a Close
    frame with an appropriate status code"): a close frame with `code` and
    the message as its reason, `onerror` called with the error, and the
    end of the connection; `recv()` then raises `ConnectionClosedError`.

    Args:
        message: what was wrong.
        code: the close code, if not the class's.

    Attributes:
        code: the close code to fail the connection with: 1002, "an endpoint
            is terminating the connection due to a protocol error" (RFC
            6455 7.4.1).
    """

    code = 1002

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidPayload(ProtocolError):
    """Text or a close reason not in UTF-8, or compressed data that does not inflate (1007).

    RFC 6455 8.1: "When an endpoint is to interpret a byte stream as UTF-8
    but finds that the byte stream is not, in fact, a valid UTF-8 stream,
    that endpoint MUST *Fail the WebSocket Connection*." wspy checks text
    as it arrives: a long message fails once its first bad byte has come.
    """

    code = 1007


class PayloadTooBig(ProtocolError):
    """A frame or message over the configured size limit (1009).

    Over `max_frame_size` (checked from the frame's header, before its
    payload is read) or `max_message_size` (across fragments, and after
    decompression: a compression bomb stops at the limit).
    """

    code = 1009


class ConnectionClosed(WebSocketError):
    """The connection is closed: `recv()` once it has closed, `send()` once the close began.

    Args:
        code: the close code (see `Connection.close_code`).
        reason: the close reason.

    Attributes:
        code: the peer's close code; 1005 if its close frame had none, the
            code this side failed the connection with, or 1006 when it
            dropped without a close frame.
        reason: the close reason that came with it.
    """

    def __init__(self, code: int, reason: str = '') -> None:
        super().__init__(f'connection closed: {code} {reason}'.rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed by a clean close handshake (1000, 1001, or 1005 for no code)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection was closed with an error code, or dropped (1006)."""


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

    The peer does not read: the connection is dropped (`send()` raises it,
    `onclose` gets 1006). During a handshake it is a `HandshakeTimeout`.
    """

    def __init__(self, reason: str = 'write timed out') -> None:
        super().__init__(reason)


class InvalidState(WebSocketError):
    """An operation that the connection's or socket's current state does not allow.

    Such as `recv()` before the handshake or on an `AsyncConnection`,
    `enable_ssl()` after the handshake, a client's `auth=(user, password)`
    over a connection that is not TLS checking the server, or `connect()`
    on an `AsyncClient` that is shutting down.
    """


class ConcurrencyError(WebSocketError, RuntimeError):
    """Two threads called `recv()` on the same connection at once: the second gets it."""


class PingError(WebSocketError, ValueError):
    """A ping that cannot be sent, such as one with a payload over 125 bytes."""


class SSLError(HandshakeError):
    """TLS failed during the opening handshake (certificate, host name, protocol).

    The `ssl.SSLError` it comes from is its `__cause__`.
    """
