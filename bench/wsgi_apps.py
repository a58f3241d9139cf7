"""The WSGI echo applications of `bench/run.py --wsgi`, served by gunicorn (see servers.py).

Each echoes every message as it came, at `/`, with each library's defaults
but for the message size limit (32 MiB where there is one).
"""

from __future__ import annotations

from typing import Any

LIMIT = 32 << 20


def wspy_app() -> Any:
    """wspy.wsgi.WebSocketApplication: a blocking connection on the worker's thread."""
    import wspy
    from wspy.wsgi import WebSocketApplication

    def echo(connection: wspy.Connection) -> None:
        while True:
            connection.send(connection.recv().payload)

    return WebSocketApplication(echo, max_message_size=LIMIT, max_frame_size=LIMIT)


def handoff_app() -> Any:
    """wspy.wsgi.HandOff: the socket handed to an event loop in the worker process."""
    import wspy
    from wspy.wsgi import HandOff

    class Echo(HandOff):
        def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
            client.send(message)

    return Echo(max_message_size=LIMIT, max_frame_size=LIMIT)


def flask_sock_app() -> Any:
    """flask-sock (simple-websocket, on wsproto): a Flask route, on the worker's thread."""
    from flask import Flask
    from flask_sock import Sock

    app = Flask(__name__)
    sock = Sock(app)

    @sock.route('/')
    def echo(ws: Any) -> None:
        while True:
            ws.send(ws.receive())

    return app
