"""ws4py's echo client (example/echo_client.py), ported to wspy (docs/porting.md).

    python examples/porting_ws4py_client.py [URL]

ws4py's threaded `WebSocketClient` subclass becomes a `wspy.Connection`
subclass that `wspy.connect(..., connection_class=...)` makes, and
`receive_forever()` calls its callbacks: `opened` is `onopen`,
`received_message` is `onmessage`, `closed` is `onclose`. ws4py sent a
generator as one fragmented message; wspy sends a message in fragments with
`send(message, fragment_size=...)`.
"""

import sys

import wspy


class EchoClient(wspy.Connection):
    def onopen(self):
        fragments = ['#' * i for i in range(1, 200, 25)]
        self.send(''.join(fragments), fragment_size=25)

        for i in range(0, 200, 25):
            print(i, flush=True)
            self.send('*' * i)

    def onclose(self, code, reason):
        print('Closed down', code, reason, flush=True)

    def onmessage(self, message):
        print(f'=> {len(message.payload)} {message.payload}', flush=True)
        if len(message.payload) == 175:
            self.close(reason='Bye bye')


if __name__ == '__main__':
    url = sys.argv[1] if len(sys.argv) > 1 else 'ws://localhost:9000/ws'
    ws = wspy.connect(url, protocols=['http-only', 'chat'], connection_class=EchoClient)
    try:
        ws.receive_forever()
    except KeyboardInterrupt:
        ws.close()
