"""`python -m wspy`: a demo echo server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from wspy.message import Message
from wspy.server import Server, ServerConnection


class EchoServer(Server):
    """Sends every message back to the client that sent it, text as text, binary as binary."""

    def onopen(self, client: ServerConnection) -> None:
        """Log the new client."""
        logging.getLogger('wspy').info('%s connected', client.remote_address)

    def onmessage(self, client: ServerConnection, message: Message) -> None:
        """Echo the message."""
        client.send(message)

    def onclose(self, client: ServerConnection, code: int, reason: str) -> None:
        """Log the departure."""
        logging.getLogger('wspy').info('%s closed: %d %s', client.remote_address, code, reason)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the echo server until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog='python -m wspy', description='Run a WebSocket echo server.')
    parser.add_argument('command', nargs='?', default='serve', choices=['serve'],
                        help='what to run (default: serve)')
    parser.add_argument('--host', default='localhost', help='address to bind (default: localhost)')
    parser.add_argument('--port', type=int, default=8000, help='port to listen on (default: 8000)')
    parser.add_argument('--max-size', type=int, default=16 << 20,
                        help='largest message and frame accepted, in bytes (default: 16 MiB)')
    parser.add_argument('-v', '--verbose', action='store_true', help='log every connection')
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(message)s')
    server = EchoServer((args.host, args.port), max_message_size=args.max_size,
                        max_frame_size=args.max_size)

    def stop(signum: int, frame: FrameType | None) -> None:
        """SIGTERM: shut down gracefully, as Ctrl-C does."""
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    host, port = server.address[:2]
    print(f'wspy echo server on ws://{host}:{port}/ - in a browser console try:\n'
          f"  ws = new WebSocket('ws://{host}:{port}/'); "
          "ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send('hello')\n"
          'Ctrl-C stops it.', flush=True)
    server.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
