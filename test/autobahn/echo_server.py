"""An echo server for the Autobahn fuzzingclient: every message back as it came."""

from __future__ import annotations

import argparse
import logging

import wspy

# Autobahn's 9.* cases send messages of up to 16 MiB.
LIMIT = 64 << 20


class EchoServer(wspy.Server):
    """Echoes text as text and binary as binary."""

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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    EchoServer(('127.0.0.1', args.port), max_message_size=LIMIT, max_frame_size=LIMIT,
               backlog_size=128).run()


if __name__ == '__main__':
    main()
