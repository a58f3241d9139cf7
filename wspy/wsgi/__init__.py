"""WebSockets inside WSGI applications: Flask, Django, any WSGI app, on the same port as pages.

A WSGI server (gunicorn, Werkzeug's development server, gevent's `pywsgi`
with this package's `gevent.WSGIHandler`, wsgiref with this package's
`make_server`) owns the client's socket and gives it in `environ`
(`gunicorn.socket`, `werkzeug.socket`, `wspy.socket`, `gunicorn.sock`). From
inside the request, `accept(environ)` checks the upgrade request with the
checks of wspy's servers (`ServerOpening`: method, headers, version, key,
origins, locations, subprotocols, extensions such as permessage-deflate,
`auth`, `process_request`), takes the socket over, answers 101 on it and
returns a blocking `Connection` with its options (limits, keepalive, close
timeout). `WebSocketApplication(handler)` is the same as a WSGI application
that calls `handler(connection)`, and answers the requests it does not
upgrade.

Once taken over, the socket is the connection's alone: the server's socket
object is left on a dead socket (plain TCP on OS threads), so whatever the
server writes after the application returns goes nowhere and the connection
is never read for another request; over TLS, whose session lives in the
server's `ssl.SSLSocket`, and under gevent, whose socket is cooperative, the
connection reads and writes through that object and shuts the TCP
connection down when it closes, which ends the server's use of it just as
well. The WebSocket holds the server's thread (or greenlet) for as long as
it is open: see the documentation's WSGI guide for what that means with
each gunicorn worker (`gunicorn.GThreadWorker` keeps a thread for pages and
refusals). `close_all()` closes them with 1001 for a graceful stop
(`close_all_on_signals()` from gunicorn's `post_worker_init` hook).

The package's modules, each owning one thing (import the names from `wspy.wsgi`):

- `request`: the WSGI side: environ, request head and socket, options, `answer`, refusals
- `takeover`: the client's socket taken over (plain or TLS), the decision on its request
- `cooperative`: waits that yield to the other greenlets, under gevent
- `application`: blocking connections on the server's thread: `accept`, `WebSocketApplication`
- `handoff`: `HandOff`, the sockets handed to an event loop in the worker
- `simple_server`: wsgiref's server, which gives its socket: `make_server`
- `stopping`: the graceful stop: `close_all`, `close_all_on_signals`
- `gevent`, `gunicorn`: gevent's `pywsgi` handler and gunicorn's worker (import them by
  module: they import gevent and gunicorn)
"""

from wspy.wsgi.application import Handler as Handler
from wspy.wsgi.application import WebSocketApplication, accept
from wspy.wsgi.handoff import HandOff
from wspy.wsgi.request import SOCKET_KEYS as SOCKET_KEYS
from wspy.wsgi.request import Environ as Environ
from wspy.wsgi.request import WSGIApplication as WSGIApplication
from wspy.wsgi.request import server_socket as server_socket
from wspy.wsgi.request import (SocketUnavailable, StartResponse, WSGIOptions, answer,
                               is_upgrade, request_head)
from wspy.wsgi.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wspy.wsgi.stopping import close_all, close_all_on_signals

__all__ = ['WSGIOptions', 'SocketUnavailable', 'accept', 'answer', 'is_upgrade',
           'WebSocketApplication', 'HandOff', 'WSGIRequestHandler', 'WSGIServer', 'make_server',
           'close_all', 'close_all_on_signals', 'StartResponse', 'request_head']
