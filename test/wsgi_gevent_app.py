"""The WSGI application test_wsgi_gevent.py serves under gevent: wsgi_app's, and more routes.

/flood: a handler sending to a client that does not read (write_timeout 2 s),
whose outcome /flood-result gives; /shared?name=N: connections that send to
each other (message "flood N": to N until that fails; "send N": once to N,
then say how that went); /pong: a handler that only sends, reporting
whether the keepalive saw a pong; /handoff: a `HandOff`, which greenlets
refuse; anything else: wsgi_app's routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent

import wspy
from wspy.wsgi import HandOff, StartResponse, WebSocketApplication

import wsgi_app

flood_outcome = 'running'


def flood(connection: wspy.Connection) -> None:
    global flood_outcome
    try:
        while True:
            connection.send(b'x' * (256 << 10))
    except Exception as error:
        flood_outcome = type(error).__name__
        raise


def wait_for_pong(connection: wspy.Connection) -> None:
    for _ in range(500):
        if connection.latency is not None:
            break
        gevent.sleep(0.01)
    connection.send(f'pong seen: {connection.latency is not None}')
    connection.recv()


shared: dict[str, wspy.Connection] = {}


def share(connection: wspy.Connection) -> None:
    assert connection.request is not None
    shared[parse_qs(connection.request.query)['name'][0]] = connection
    while True:
        verb, name = connection.recv().payload.split()
        try:
            while True:
                shared[name].send(b'x' * (256 << 10))
                if verb == 'send':
                    break
            connection.send(f'sent to {name}')
        except wspy.ConnectionClosed as error:
            connection.send(f'{name} gone: {type(error).__name__}')


shared_app = WebSocketApplication(share, write_timeout=2, close_timeout=0.5, ping_interval=None)
flood_app = WebSocketApplication(flood, write_timeout=2, close_timeout=0.5, ping_interval=None)
pong_app = WebSocketApplication(wait_for_pong, ping_interval=0.05, ping_timeout=2)
hand_off = HandOff()


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get('PATH_INFO')
    if path == '/flood':
        return flood_app(environ, start_response)
    if path == '/flood-result':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [flood_outcome.encode()]
    if path == '/shared':
        return shared_app(environ, start_response)
    if path == '/pong':
        return pong_app(environ, start_response)
    if path == '/handoff':
        return hand_off(environ, start_response)
    return wsgi_app.app(environ, start_response)
