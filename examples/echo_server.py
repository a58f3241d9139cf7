"""A server with callbacks: echo every message. `--async` runs it on the event loop.

    python examples/echo_server.py [PORT] [--async]
"""

import sys

import wspy

base = wspy.AsyncServer if '--async' in sys.argv else wspy.Server


class EchoServer(base):
    def onopen(self, client):
        print(f'{client.remote_address} connected', flush=True)

    def onmessage(self, client, message):
        client.send(message)

    def onclose(self, client, code, reason):
        print(f'{client.remote_address} closed: {code} {reason}', flush=True)


args = [a for a in sys.argv[1:] if not a.startswith('--')]
port = int(args[0]) if args else 8000
server = EchoServer(('127.0.0.1', port), extensions=[wspy.DeflateMessage()])
print(f'{base.__name__} on ws://127.0.0.1:{port}/', flush=True)
server.run()
