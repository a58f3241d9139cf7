"""The client side: 16 MiB binary messages echoed through `wspy.connect`, beside websockets.

    python bench/client.py [--reps 5] [--messages 8]

One picows echo server (the fastest server here) runs pinned to CPU 0; each
client runs in a process of its own pinned to CPU 1, alternating across
repetitions. MB/s counts the echoed payload one way, as bench/loadgen does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = 16 << 20


def run_wspy(url: str, count: int) -> float:
    """Seconds for `count` round trips of a 16 MiB message with wspy's client."""
    import wspy

    payload = os.urandom(SIZE)
    conn = wspy.connect(url, max_message_size=None, max_frame_size=None, ping_interval=None)
    start = time.perf_counter()
    for _ in range(count):
        conn.send(payload)
        assert len(conn.recv().payload) == SIZE
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def run_websockets(url: str, count: int) -> float:
    """Seconds for `count` round trips of a 16 MiB message with websockets' client."""
    from websockets.sync.client import connect

    payload = os.urandom(SIZE)
    with connect(url, max_size=None, compression=None) as ws:
        start = time.perf_counter()
        for _ in range(count):
            ws.send(payload)
            assert len(ws.recv()) == SIZE
        return time.perf_counter() - start


# name: (function, extra environment)
CLIENTS = {
    'websockets': (run_websockets, {}),
    'wspy': (run_wspy, {}),
    'wspy without C': (run_wspy, {'WSPY_NO_SPEEDUPS': '1'}),
}


def measure(name: str, url: str, count: int) -> float:
    """MB/s of one client run, in a fresh process on CPU 1."""
    env = {**os.environ, 'PYTHONPATH': str(HERE.parent), **CLIENTS[name][1]}
    result = subprocess.run([sys.executable, __file__, '--one', name, url, str(count)],
                            capture_output=True, text=True, env=env, timeout=300,
                            preexec_fn=lambda: os.sched_setaffinity(0, {1}))
    if result.returncode:
        raise RuntimeError(f'{name}: {result.stderr.strip()}')
    return count * SIZE / float(result.stdout) / 1e6


def main() -> int:
    """Measure every client against one server; print medians and ratios."""
    from run import start_server, stop_server

    parser = argparse.ArgumentParser()
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--messages', type=int, default=8)
    parser.add_argument('--one', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, url, count = args.one
        print(CLIENTS[name][0](url, int(count)))
        return 0
    server, port = start_server('picows')
    results: dict[str, list[float]] = {name: [] for name in CLIENTS}
    try:
        for _ in range(args.reps):
            for name in CLIENTS:
                results[name].append(measure(name, f'ws://127.0.0.1:{port}/', args.messages))
    finally:
        stop_server(server)
    reference = statistics.median(results['websockets'])
    print(f'\n# client: {args.messages} x 16 MiB binary echo against picows, '
          f'{args.reps} repetitions, medians')
    print('| client | MB/s | vs websockets |')
    print('|---|---|---|')
    for name, values in results.items():
        median = statistics.median(values)
        print(f'| {name} | {median:,.0f} | {median / reference:.2f}x |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
