"""The wspy client under the Autobahn fuzzingserver: runs every case, echoing."""

from __future__ import annotations

import argparse
import logging

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


def main() -> None:
    """Run the cases the fuzzingserver at --url offers, then ask for the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--url', default='ws://127.0.0.1:9002')
    parser.add_argument('--agent', default='wspy-client')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    conn = wspy.connect(f'{args.url}/getCaseCount')
    count = int(conn.recv().payload)
    conn.close()
    for case in range(1, count + 1):
        run_case(f'{args.url}/runCase?case={case}&agent={args.agent}')
    conn = wspy.connect(f'{args.url}/updateReports?agent={args.agent}')
    conn.close()


if __name__ == '__main__':
    main()
