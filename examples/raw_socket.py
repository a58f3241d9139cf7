"""Upgrade a raw socket: accept one client, answer each text frame, stop at its close frame.

    python examples/raw_socket.py [PORT]
"""

import socket
import sys

import wspy

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
sock = wspy.websocket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(('127.0.0.1', port))
sock.listen(5)
print(f'listening on ws://127.0.0.1:{port}/', flush=True)

client, address = sock.accept()  # the HTTP upgrade happens here
print(f'{address[0]} asked for {client.request.path}', flush=True)
client.send(wspy.Frame(wspy.OPCODE_TEXT, b'Hello, Client!'))
while True:
    frame = client.recv()  # whole frames, control frames included
    if frame.opcode == wspy.OPCODE_CLOSE:
        client.send(wspy.ControlFrame.close(*frame.unpack_close()))
        break
    if frame.opcode == wspy.OPCODE_TEXT:
        client.send(wspy.Frame(wspy.OPCODE_TEXT, b'you said: ' + frame.payload))
client.close()
sock.close()
