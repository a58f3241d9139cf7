"""Echo servers for the Autobahn fuzzingclient: every message back as it came."""

from __future__ import annotations

import argparse
import logging

import wspy

# Autobahn's 9.* cases send messages of up to 16 MiB.
LIMIT = 64 << 20


class EchoServer(wspy.BaseServer):
    """Echoes text as text and binary as binary (on either server class)."""

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        """Send the message back."""
        client.send(message)

    def onerror(self, client: wspy.ServerConnection, error: Exception) -> None:
        """Autobahn sends bad input on purpose: log it quietly."""
        logging.getLogger('wspy').debug('%s: %s', client, error)


def main() -> None:
    """Serve on the port given on the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, default=9001)
    parser.add_argument('--server', choices=['Server', 'AsyncServer'], default='Server')
    parser.add_argument('--certfile', help='serve wss:// with this certificate')
    parser.add_argument('--keyfile')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server_class = type('Echo', (EchoServer, getattr(wspy, args.server)), {})
    ssl_args = None if args.certfile is None else {'certfile': args.certfile,
                                                   'keyfile': args.keyfile}
    server_class(('127.0.0.1', args.port), ssl_args=ssl_args, max_message_size=LIMIT,
                 max_frame_size=LIMIT,
                 extensions=[wspy.DeflateMessage(), wspy.DeflateFrame()]).run()


if __name__ == '__main__':
    main()
