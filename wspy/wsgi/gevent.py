"""gevent's WSGI server with WebSockets: the request handler that gives wspy the socket.

`gevent.pywsgi.WSGIServer` does not put the client's socket in `environ`;
with this handler it does (`wspy.socket`), and `wspy.wsgi.accept` and
`WebSocketApplication` serve WebSockets under it, each on the request's
greenlet, with or without gevent's monkey-patching::

    from gevent.pywsgi import WSGIServer
    from wspy.wsgi.gevent import WSGIHandler

    WSGIServer(('', 8000), app, handler_class=WSGIHandler).serve_forever()

gunicorn's `gevent` and `gevent_pywsgi` workers give the socket already.
Importing this module imports gevent (`pip install "wspy[gevent]"`).
"""

from __future__ import annotations

from typing import Any

from gevent import pywsgi


class WSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """`gevent.pywsgi.WSGIHandler` that gives the client's socket as `environ['wspy.socket']`."""

    def get_environ(self) -> dict[str, Any]:
        """The request's environ, with the client's socket under `wspy.socket`."""
        environ: dict[str, Any] = super().get_environ()
        environ['wspy.socket'] = self.socket
        return environ
