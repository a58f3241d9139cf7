"""A chat server: every message goes to every client (AsyncServer.broadcast).

    python examples/chat_server.py [PORT]
"""

import sys

import wspy


class Chat(wspy.AsyncServer):
    def onopen(self, client):
        self.broadcast(f'* {len(self.clients)} here')

    def onmessage(self, client, message):
        if isinstance(message, wspy.TextMessage):
            self.broadcast(f'{client.request.path.strip("/") or "anonymous"}: {message.payload}')


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
server = Chat(('127.0.0.1', port))
print(f'chat on ws://127.0.0.1:{port}/NAME', flush=True)
server.run()
