"""The original wspy 0.9 README's "Sending frames with a websocket", ported (docs/porting.md).

    python examples/porting_wspy09_frames.py

Its server and its client, in one process (the server in a thread). What
changed: `accept()` returns `(client, address)`; payloads are bytes (a `str`
is encoded as UTF-8); a client frame needs a masking key, given as
`masking_key=os.urandom(4)` where 0.9 wrote `mask=True`.
"""

import os
import socket
import threading

import wspy

sock = wspy.websocket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(('127.0.0.1', 0))
sock.listen(5)


def server():
    client, _address = sock.accept()
    client.send(wspy.Frame(wspy.OPCODE_TEXT, b'Hello, Client!'))
    frame = client.recv()
    print(f'server received: {frame.payload.decode()}')
    client.close()


thread = threading.Thread(target=server)
thread.start()

client = wspy.websocket(location='/my/path')
client.connect(sock.getsockname())
client.send(wspy.Frame(wspy.OPCODE_TEXT, 'Hello, Server!', masking_key=os.urandom(4)))
reply = client.recv()
thread.join(10)                   # the server's line first, then the client's
print(f'client received: {reply.payload.decode()}')
client.close()
sock.close()
