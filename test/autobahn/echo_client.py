"""A wspy client under the Autobahn fuzzingserver: runs every case, echoing.

`wspy.connect` (blocking) by default; `--async` runs the cases on an
`AsyncClient` instead, one after the other.
"""

from __future__ import annotations

import argparse
import logging
import threading

import wspy

LIMIT = 64 << 20


def run_case(url: str) -> None:
    """Echo every message on `url` until the server closes."""
    try:
        conn = wspy.connect(url, max_message_size=LIMIT, max_frame_size=LIMIT, timeout=30,
                            extensions=[wspy.DeflateMessage()])
    except (wspy.WebSocketError, OSError) as error:
        print(f'{url}: {error}')
        return
    try:
        while True:
            conn.send(conn.recv())
    except wspy.ConnectionClosed:
        pass
    finally:
        if not conn.closed:
            conn.abort()
            conn.close()


class AsyncEcho(wspy.AsyncClient):
    """Echoes every message; `finished` is set when a case's connection ends."""

    def __init__(self) -> None:
        super().__init__(max_message_size=LIMIT, max_frame_size=LIMIT, handshake_timeout=30,
                         extensions=[wspy.DeflateMessage()])
        self.finished = threading.Event()

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        client.send(message)

    def onclose(self, client: wspy.AsyncConnection, code: int, reason: str) -> None:
        self.finished.set()

    def onconnecterror(self, connecting: wspy.Connecting, error: Exception) -> None:
        print(f'{connecting.url}: {error}')
        self.finished.set()


def run_cases_async(url: str, count: int, agent: str) -> None:
    """Run the cases one after the other on an `AsyncClient`."""
    client = AsyncEcho()
    client.start()
    try:
        for case in range(1, count + 1):
            client.finished.clear()
            client.connect(f'{url}/runCase?case={case}&agent={agent}')
            if not client.finished.wait(120):
                print(f'case {case}: still open after 120 s')
    finally:
        client.shutdown()


def main() -> None:
    """Run the cases the fuzzingserver at --url offers, then ask for the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--url', default='ws://127.0.0.1:9002')
    parser.add_argument('--agent', default='wspy-client')
    parser.add_argument('--async', dest='on_loop', action='store_true',
                        help='run the cases on an AsyncClient')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    conn = wspy.connect(f'{args.url}/getCaseCount')
    count = int(conn.recv().payload)
    conn.close()
    if args.on_loop:
        run_cases_async(args.url, count, args.agent)
    else:
        for case in range(1, count + 1):
            run_case(f'{args.url}/runCase?case={case}&agent={args.agent}')
    conn = wspy.connect(f'{args.url}/updateReports?agent={args.agent}')
    conn.close()


if __name__ == '__main__':
    main()
