"""ws4py's echo servers, ported to wspy (docs/porting.md).

    python examples/porting_ws4py_echo.py [PORT] [--broadcast]

By default ws4py's `EchoWebSocket` (served there by a WSGI server and a
`WebSocketManager`): a `Server` whose `onmessage` sends every message back.
--broadcast: the `BroadcastWebSocket` of ws4py's gevent and CherryPy echo
examples, on `AsyncServer`: every message goes to every client, and a client
that leaves is announced with its close reason. ws4py's `opened`,
`received_message(m)` and `closed(code, reason)` are wspy's `onopen(client)`,
`onmessage(client, message)` and `onclose(client, code, reason)`, on the server
with the client passed in; `m.data` and `m.is_binary` are one `message`.
"""

import sys

import wspy


class EchoServer(wspy.Server):
    def onmessage(self, client, message):
        client.send(message)


class BroadcastServer(wspy.AsyncServer):
    def onmessage(self, client, message):
        self.broadcast(message)              # ws4py: for client in app.clients: client.send(m)

    def onclose(self, client, code, reason):
        self.broadcast(reason or 'A client left the room without a proper explanation.')


def main():
    args = sys.argv[1:]
    port = int(args[0]) if args and args[0].isdigit() else 9000
    server_class = BroadcastServer if '--broadcast' in args else EchoServer
    server = server_class(('127.0.0.1', port))
    print(f'{server_class.__name__} on ws://127.0.0.1:{port}/ws', flush=True)
    server.run()


if __name__ == '__main__':
    main()
