"""The echo endpoint for the Autobahn fuzzingclient as a WSGI application (wspy.wsgi).

    gunicorn -k gthread --threads 4 --chdir test/autobahn wsgi_echo:app   # under gunicorn
    python test/autobahn/wsgi_echo.py --port 9001                         # under Werkzeug
"""

from __future__ import annotations

import argparse
import logging

import wspy
from wspy.wsgi import WebSocketApplication

# Autobahn's 9.* cases send messages of up to 16 MiB.
LIMIT = 64 << 20


def echo(connection: wspy.Connection) -> None:
    """Send every message back as it came: text as text, binary as binary."""
    while True:
        connection.send(connection.recv().payload)


app = WebSocketApplication(echo, max_message_size=LIMIT, max_frame_size=LIMIT,
                           extensions=[wspy.DeflateMessage(), wspy.DeflateFrame()])


def main() -> None:
    """Serve `app` with Werkzeug's development server on the port given."""
    import werkzeug.serving

    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, default=9001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger('werkzeug').setLevel(logging.WARNING)
    werkzeug.serving.make_server('127.0.0.1', args.port, app, threaded=True).serve_forever()


if __name__ == '__main__':
    main()
