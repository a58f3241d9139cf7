"""The original wspy 0.9 README's echo servers, ported to today's API (docs/porting.md).

    python examples/porting_wspy09_echo.py [PORT] [--threaded | --connection]

By default its "Getting Started" server (AsyncServer, both compression
extensions); --threaded its `Server` version; --connection its `Connection`
example (a raw `websocket`, one client at a time). What changed: `print` is a
function; a text message's payload is a `str` and a binary one's `bytes`, so
`client.send(message)` echoes either kind (0.9's
`client.send(wspy.TextMessage(message.payload))` fails on binary messages).
"""

import logging
import socket
import sys

import wspy


class EchoServer(wspy.AsyncServer):
    def onopen(self, client):
        print(f'Client {client} connected', flush=True)

    def onmessage(self, client, message):
        print(f'Received message {message.payload!r}', flush=True)
        client.send(message)

    def onclose(self, client, code, reason):
        print(f'Client {client} disconnected', flush=True)


class ThreadedEchoServer(wspy.Server):
    # The same callbacks as EchoServer: each runs on one of the server's threads.
    onopen = EchoServer.onopen
    onmessage = EchoServer.onmessage
    onclose = EchoServer.onclose


class EchoConnection(wspy.Connection):
    def onopen(self):
        host, port = self.sock.getpeername()[:2]
        print(f'Connection opened at {host}:{port}', flush=True)

    def onmessage(self, message):
        print(f'Received message {message.payload!r}', flush=True)
        self.send(message)

    def onclose(self, code, reason):
        print('Connection closed', flush=True)


def serve_connections(port):
    """0.9's "Sending messages with a connection": accept, then echo until the client closes."""
    server = wspy.websocket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(('127.0.0.1', port))
    server.listen(5)
    print(f'echo on ws://127.0.0.1:{port}/ (Connection)', flush=True)
    while True:
        client, _address = server.accept()    # 0.9's README wrote `client = sock.accept()`
        EchoConnection(client).receive_forever()


def main():
    args = sys.argv[1:]
    port = int(args[0]) if args and args[0].isdigit() else 8000
    if '--connection' in args:
        serve_connections(port)
        return
    server_class = ThreadedEchoServer if '--threaded' in args else EchoServer
    server = server_class(('127.0.0.1', port),
                          extensions=[wspy.DeflateMessage(), wspy.DeflateFrame()],
                          loglevel=logging.INFO)
    print(f'echo on ws://127.0.0.1:{port}/ ({server_class.__name__})', flush=True)
    server.run()


if __name__ == '__main__':
    main()
