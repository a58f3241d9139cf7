"""A Flask chat whose WebSockets hold no thread of the server: handed off to a wspy loop.

    gunicorn -k sync --chdir examples flask_handoff:app            # one process, no threads
    gunicorn -k gthread --threads 4 --chdir examples flask_handoff:app
    python examples/flask_handoff.py [PORT]                         # Werkzeug's server

Open http://127.0.0.1:8000/ in two browser tabs. Each WebSocket request is
upgraded and handed to the event loop of `wspy.wsgi.HandOff`, on a thread of
the worker process, and the view returns at once: the worker's threads stay
free for pages, and gunicorn's worker timeout does not apply to WebSockets.
Plain TCP only: put TLS in a proxy in front. Needs Flask (`pip install flask`).
"""

import sys

from flask import Flask, request

import wspy
import wspy.wsgi

app = Flask(__name__)

PAGE = """<!doctype html>
<title>wspy chat</title>
<ul id="log"></ul>
<form id="form"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<script>
  const name = prompt('Your name?') || 'anonymous';
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/chat?name=${encodeURIComponent(name)}`);
  socket.onmessage = (event) => {
    const item = document.createElement('li');
    item.textContent = event.data;
    document.getElementById('log').append(item);
  };
  document.getElementById('form').onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById('text');
    socket.send(text.value);
    text.value = '';
  };
</script>
"""


class Chat(wspy.wsgi.HandOff):
    """The chat room: its callbacks run on the loop's thread, one at a time."""

    def __init__(self, **options):
        super().__init__(**options)
        self.names = {}

    def onopen(self, client):
        name = client.request.query_params.get('name', ['anonymous'])[0]
        self.names[client] = name
        self.broadcast(f'* {name} joined')

    def onmessage(self, client, message):
        self.broadcast(f'{self.names[client]}: {message.payload}')

    def onclose(self, client, code, reason):
        name = self.names.pop(client, None)
        if name is not None:
            self.broadcast(f'* {name} left')


chat = Chat(extensions=[wspy.DeflateMessage()], max_message_size=64 << 10)


@app.route('/')
def index():
    return PAGE


# websocket=True: Werkzeug's router answers an upgrade request to other routes 400.
@app.route('/chat', websocket=True)
def chat_socket():
    try:
        chat.accept(request.environ)  # returns at once: the socket is the loop's
    except wspy.HandshakeError as error:  # not a WebSocket request, or refused
        status, headers, body = wspy.wsgi.answer(error)
        return body, status, headers
    return ''  # never sent: the socket is the WebSocket's


if __name__ == '__main__':
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f'Flask chat (hand-off) on http://127.0.0.1:{port}/', flush=True)
    app.run('127.0.0.1', port, threaded=True)
