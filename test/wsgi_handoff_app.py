"""The WSGI application test_wsgi_handoff.py serves (gunicorn loads it by name).

/hub: a `HandOff` whose clients' messages are broadcast to all of them
(permessage-deflate offered); /view: a plain WSGI view calling `hub.accept()`;
/count: how many WebSockets the worker's loop holds, with the worker's pid;
anything else: a page.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import wspy
from wspy.asyncserver import AsyncConnection
from wspy.wsgi import HandOff, StartResponse, answer


def page(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = f"page {environ.get('PATH_INFO')}".encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


class Hub(HandOff):
    """Every message goes to every client; 'whoami' is answered to its sender alone."""

    def onopen(self, client: AsyncConnection) -> None:
        client.send(f'hello {client.request.path if client.request else None}')

    def onmessage(self, client: AsyncConnection, message: wspy.Message) -> None:
        if message.payload == 'whoami':
            client.send(f'{os.getpid()} {client.protocol}')
        else:
            self.broadcast(message.payload)


hub = Hub(fallback=page, protocols=['chat'], extensions=[wspy.DeflateMessage()])


def view(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A view of a framework, as it would call the hand-off."""
    try:
        hub.accept(environ)
    except wspy.HandshakeError as error:
        status, headers, body = answer(error)
        start_response(status, headers)
        return [body]
    start_response('200 OK', [])  # never written: the socket is the loop's
    return [b'ignored']


def count(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = f'{len(hub.clients)} {os.getpid()}'.encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get('PATH_INFO')
    if path == '/hub':
        return hub(environ, start_response)
    if path == '/view':
        return view(environ, start_response)
    if path == '/count':
        return count(environ, start_response)
    return page(environ, start_response)
