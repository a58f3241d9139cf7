"""The WSGI side of an upgrade: the request as the server gives it, and the answer to a refusal.

What a WSGI server hands its application (`environ`, `start_response`),
the request's head rebuilt from `environ` and the client's socket found in
it, the options of `accept` checked and split, the WSGI answer to a request
not upgraded, and the refusal of what cannot serve WebSockets.
"""

from __future__ import annotations

import _socket
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from wspy.errors import AbortHandshake, HandshakeError, InvalidRequest, NotUpgrade
from wspy.options import ConnectionOptions, SocketOptions, check_options
from wspy.protocol.handshake import Response, error_response
from wspy.websocket import _SERVER_AUTH, websocket
from wspy.wsgi.cooperative import on_greenlet

logger = logging.getLogger('wspy')

#: A WSGI environ.
Environ = dict[str, Any]
#: The keys under which WSGI servers give the client's socket, in the order looked up.
SOCKET_KEYS = ('gunicorn.socket', 'werkzeug.socket', 'wspy.socket', 'gunicorn.sock')
# What a socket of gevent's has of a socket.socket, that wspy uses.
_SOCKET_METHODS = ('fileno', 'recv_into', 'send', 'gettimeout', 'setblocking')
# Hop-by-hop headers, which a WSGI application must not give its server (PEP 3333); a
# 426's Upgrade is kept (RFC 9110 15.5.22), which gunicorn and Werkzeug pass on.
_HOP_BY_HOP = frozenset(('connection', 'keep-alive', 'proxy-authenticate',
                         'proxy-authorization', 'te', 'trailers', 'transfer-encoding'))
_CONNECTION_OPTIONS = ConnectionOptions.__optional_keys__
_NO_SOCKET = ('this WSGI server does not give the client socket (no '
              f"{', '.join(repr(key) for key in SOCKET_KEYS)} in environ), so it cannot "
              'serve WebSockets: run the application under gunicorn, Werkzeug, '
              'wspy.wsgi.make_server or gevent.pywsgi with wspy.wsgi.gevent.WSGIHandler')
_KNOWN_OPTIONS = SocketOptions.__optional_keys__ | _CONNECTION_OPTIONS


class StartResponse(Protocol):
    """The `start_response` callable a WSGI server gives its application."""

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None, /) -> Callable[[bytes], object]:
        """Start the response: its status line and headers."""


#: A WSGI application.
WSGIApplication = Callable[[Environ, StartResponse], Iterable[bytes]]


class WSGIOptions(SocketOptions, ConnectionOptions, total=False):
    """The keyword options of `accept` and `WebSocketApplication` (see `wspy.options`).

    The socket's (what requests are accepted, `write_timeout`,
    `max_frame_size`) and the connection's (`max_message_size`,
    `close_timeout`, `ping_interval`, `ping_timeout`). The HTTP head was read
    by the WSGI server, under its own limits and timeout: `handshake_timeout`
    and the head limits do not apply to it.
    """


class SocketUnavailable(HandshakeError):
    """The WSGI server does not give the client's socket: it cannot serve WebSockets (500)."""

    default_status = 500


# -- the request -----------------------------------------------------------------------

def is_upgrade(environ: Environ) -> bool:
    """Whether the request asks for a WebSocket (`Upgrade: websocket`), valid or not."""
    upgrade = environ.get('HTTP_UPGRADE', '')
    return 'websocket' in (token.strip().lower() for token in upgrade.split(','))


def request_head(environ: Environ) -> bytes:
    """The request's HTTP head as the client sent it, rebuilt from `environ`.

    The request target is the server's raw one when it gives it (`RAW_URI`,
    `REQUEST_URI`), else `SCRIPT_NAME`, `PATH_INFO` and `QUERY_STRING`.
    Headers the server joined (repeated ones) stay joined with commas.

    Raises:
        InvalidRequest: a head that is not Latin-1 (a server's mistake:
            PEP 3333 strings are Latin-1).
    """
    target = environ.get('RAW_URI') or environ.get('REQUEST_URI')
    if not target:
        path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
        target = quote(path.encode('latin-1'), safe="/;=,:@!$&'()*+~") or '/'
        query = environ.get('QUERY_STRING')
        if query:
            target += '?' + query
    lines = [f"{environ.get('REQUEST_METHOD', 'GET')} {target} "
             f"{environ.get('SERVER_PROTOCOL', 'HTTP/1.1')}"]
    for key, value in environ.items():
        if key.startswith('HTTP_'):
            lines.append(f"{key[5:].replace('_', '-')}: {value}")
    for key, name in (('CONTENT_TYPE', 'Content-Type'), ('CONTENT_LENGTH', 'Content-Length')):
        if environ.get(key):
            lines.append(f'{name}: {environ[key]}')
    try:
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')
    except UnicodeEncodeError as error:  # PEP 3333 strings are Latin-1: a server's mistake
        raise InvalidRequest(f'request head not in Latin-1: {error}') from None


def server_socket(environ: Environ) -> socket.socket | None:
    """The client's socket, as the WSGI server gives it in `environ`; None if it does not.

    gevent's socket, which is no `socket.socket` unless gevent has patched
    the module, is taken as one.
    """
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket) or all(
                callable(getattr(sock, name, None)) for name in _SOCKET_METHODS):
            return sock
    return None


def answer(error: HandshakeError) -> tuple[str, list[tuple[str, str]], bytes]:
    """The WSGI answer to a request not upgraded for `error`: status line, headers, body.

    `error.response` for an `AbortHandshake` (an answer of
    `process_request`), a plain-text error otherwise (426 to a request that
    is no upgrade, 401 with its challenge, 403 for an origin, ...).
    Hop-by-hop headers, which WSGI leaves to the server, are left out.

    Returns:
        (status line, headers, body), for `start_response(status, headers)`
        and `return [body]`.
    """
    if isinstance(error, AbortHandshake):
        response: Response = error.response
        body = response.body
        headers = response.headers.items()
        if 'Content-Length' not in response.headers:
            headers.append(('Content-Length', str(len(body))))
    else:
        response = error_response(error.status, str(error), error.headers)
        body, headers = response.body, response.headers.items()
    kept = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
    return f'{response.status} {response.reason}', kept, body


# -- what cannot serve WebSockets: another library's monkey-patching; HandOff on greenlets --

_PATCHED = ('wspy.wsgi cannot serve WebSockets here: the socket module is monkey-patched by a '
            "library other than gevent (eventlet?), and wspy's sockets are the standard "
            "library's: serve WebSockets with gevent, gunicorn's gthread or sync worker, "
            'Werkzeug or wspy.wsgi.make_server')
_HAND_OFF_ON_GREENLETS = ('wspy.wsgi.HandOff cannot serve WebSockets here: the request runs '
                          'on a gevent greenlet, and HandOff hands sockets to an event loop on '
                          'an OS thread. Under gevent a WebSocket needs no thread of its own: '
                          'serve it with accept() or WebSocketApplication')
_refusal_logged = False


def _refuse_unsupported(environ: Environ, hand_off: bool = False) -> None:
    """Refuse at once what cannot serve WebSockets (`SocketUnavailable`, a 500 saying why; 426
    to a request that is no upgrade), logged once per process. Never a hang.

    That is a socket module patched by another library than gevent (whose
    socket class cannot be wspy's), and a `HandOff` on a gevent greenlet.
    """
    global _refusal_logged
    if issubclass(websocket, _socket.socket):
        if not (hand_off and on_greenlet()):
            return
        message = _HAND_OFF_ON_GREENLETS
    else:
        message = _PATCHED
    if not is_upgrade(environ):
        raise NotUpgrade('this is a WebSocket endpoint: send an Upgrade: websocket request',
                         headers=[('Upgrade', 'websocket')])
    if not _refusal_logged:
        _refusal_logged = True
        logger.error('%s', message)
    raise SocketUnavailable(message)


def _check_socket_options(socket_options: dict[str, Any]) -> None:
    """Make a socket with `socket_options`: a mistaken one fails when the application is
    made, not at the first request (not under another library's patching, where the
    upgrades are refused anyway)."""
    if issubclass(websocket, _socket.socket):
        websocket(**socket_options).close()


def _split_options(caller: str, options: Mapping[str, Any],
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """`options` checked, as the socket's and the connection's; `TypeError` for a mistake."""
    check_options(caller, options, _KNOWN_OPTIONS)
    if isinstance(options.get('auth'), tuple):
        raise TypeError(_SERVER_AUTH)
    socket_options: dict[str, Any] = {}
    connection_options: dict[str, Any] = {}
    for name, value in options.items():
        (connection_options if name in _CONNECTION_OPTIONS else socket_options)[name] = value
    return socket_options, connection_options
