"""wsgiref's server with what it lacks to serve WebSockets: `make_server`.

A thread per request, the client's socket given as `environ['wspy.socket']`,
and a 426 allowed to name its protocol (`Upgrade`).
"""

from __future__ import annotations

import wsgiref.simple_server
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wspy.wsgi.request import WSGIApplication


class _ServerHandler(wsgiref.simple_server.ServerHandler):
    """wsgiref's handler of one response, which lets a 426 name the protocol (`Upgrade`)."""

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """As wsgiref's, but an `Upgrade` header is allowed (RFC 9110 15.5.22)."""
        upgrade = [(name, value) for name, value in headers if name.lower() == 'upgrade']
        others = [(name, value) for name, value in headers if name.lower() != 'upgrade']
        write = super().start_response(status, others, exc_info)
        response_headers: Any = getattr(self, 'headers')  # noqa: B009 - set by start_response
        for name, value in upgrade:
            response_headers.add_header(name, value)
        return write


class WSGIRequestHandler(wsgiref.simple_server.WSGIRequestHandler):
    """wsgiref's request handler, giving the client's socket as `environ['wspy.socket']`."""

    def get_environ(self) -> dict[str, Any]:
        """The request's environ, with the socket."""
        environ = super().get_environ()
        environ['wspy.socket'] = self.connection
        return environ

    def handle(self) -> None:
        """Handle one HTTP request (as wsgiref's, on a thread of `WSGIServer`)."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ''
            self.send_error(414)
            return
        if not self.parse_request():  # an error was answered
            return
        handler = _ServerHandler(self.rfile, self.wfile,  # type: ignore[arg-type]
                                 self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]


class WSGIServer(ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """wsgiref's server, a thread per request: a WebSocket holds one, pages go on meanwhile."""

    daemon_threads = True
    block_on_close = False


def make_server(host: str, port: int, app: WSGIApplication,
                server_class: type[WSGIServer] = WSGIServer,
                handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
                ) -> WSGIServer:
    """A wsgiref server for `app` on `host` and `port` that can serve WebSockets.

    As `wsgiref.simple_server.make_server`, with this module's threaded
    server and handler (which gives the socket to `accept`). For
    development and tests: a thread for each request.

    Args:
        host: the address to listen on (`''` for every IPv4 address).
        port: the port; 0 picks a free one (`server.server_port` tells it).
        app: the WSGI application.
        server_class: the server class (a `WSGIServer`).
        handler_class: the request handler class (a `WSGIRequestHandler`).

    Returns:
        The bound server: `serve_forever()` serves, `shutdown()` stops.
    """
    server = wsgiref.simple_server.make_server(host, port, app, server_class, handler_class)
    assert isinstance(server, server_class)
    return server
