"""The WSGI application test_wsgi.py serves with each server (gunicorn loads it by name).

/echo: a `WebSocketApplication` echoing messages (permessage-deflate, subprotocol
'chat'), its page for plain GETs; /view: a plain WSGI view calling `accept()`;
/fail: a handler that raises; anything else: a page. The environment sets
`max_connections` (WSPY_MAX_CONNECTIONS) and `max_message_size` (WSPY_MAX_SIZE).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import wspy
from wspy.wsgi import StartResponse, WebSocketApplication, accept, answer


def page(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = f"page {environ.get('PATH_INFO')}".encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def echo(connection: wspy.Connection) -> None:
    while True:
        message = connection.recv()
        if message.payload == 'whoami':
            connection.send(f'{connection.request.path if connection.request else None} '
                            f'{connection.protocol}')
        else:
            connection.send(message.payload)


def fail(connection: wspy.Connection) -> None:
    connection.recv()
    raise RuntimeError('the handler failed')


def view(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A view of a framework, as it would call the helper."""
    try:
        connection = accept(environ, ping_interval=None)
    except wspy.HandshakeError as error:
        status, headers, body = answer(error)
        start_response(status, headers)
        return [body]
    with connection:
        connection.send('view says hi')
        connection.send(connection.recv().payload)
    start_response('200 OK', [])  # never written: the socket is the WebSocket's
    return [b'ignored']


_limit = os.environ.get('WSPY_MAX_CONNECTIONS')
_options: dict[str, Any] = {}
if os.environ.get('WSPY_MAX_SIZE'):
    _options['max_message_size'] = int(os.environ['WSPY_MAX_SIZE'])
echo_app = WebSocketApplication(echo, fallback=page, protocols=['chat'],
                                extensions=[wspy.DeflateMessage()],
                                max_connections=int(_limit) if _limit else None, **_options)
fail_app = WebSocketApplication(fail)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get('PATH_INFO')
    if path == '/echo':
        return echo_app(environ, start_response)
    if path == '/view':
        return view(environ, start_response)
    if path == '/fail':
        return fail_app(environ, start_response)
    return page(environ, start_response)
