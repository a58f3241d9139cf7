"""A Flask chat: the page and its WebSocket on the same port, served by any WSGI server.

    python examples/flask_chat.py [PORT]          # Werkzeug's development server
    gunicorn -k gthread --threads 20 --chdir examples flask_chat:app

Open http://127.0.0.1:8000/ in two browser tabs. Each open WebSocket holds
a thread of the server for as long as it is open (see docs/howto/wsgi.md).
Needs Flask (`pip install flask`).
"""

import sys
import threading

from flask import Flask, request

import wspy
import wspy.wsgi

app = Flask(__name__)
clients: set[wspy.Connection] = set()
clients_lock = threading.Lock()

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


def broadcast(text):
    with clients_lock:
        everyone = list(clients)
    for client in everyone:
        try:
            client.send(text)
        except wspy.ConnectionClosed:
            pass  # it is leaving: its own view removes it


@app.route('/')
def index():
    return PAGE


# websocket=True: Werkzeug's router answers an upgrade request to other routes 400.
@app.route('/chat', websocket=True)
def chat():
    try:
        connection = wspy.wsgi.accept(request.environ, extensions=[wspy.DeflateMessage()],
                                      max_message_size=64 << 10)
    except wspy.HandshakeError as error:  # not a WebSocket request, or refused
        status, headers, body = wspy.wsgi.answer(error)
        return body, status, headers
    name = request.args.get('name', 'anonymous')
    with connection:
        with clients_lock:
            clients.add(connection)
        broadcast(f'* {name} joined')
        try:
            while True:
                broadcast(f'{name}: {connection.recv().payload}')
        except wspy.ConnectionClosed:
            pass
        finally:
            with clients_lock:
                clients.discard(connection)
    broadcast(f'* {name} left')
    return ''  # never sent: the socket was the WebSocket's


if __name__ == '__main__':
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f'Flask chat on http://127.0.0.1:{port}/', flush=True)
    app.run('127.0.0.1', port, threaded=True)
