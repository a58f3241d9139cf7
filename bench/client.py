"""The client side: wspy's client beside websockets' (and aiohttp's with compression).

    python bench/client.py [--reps 5] [--only SCENARIO...]

Scenarios:
- *16 MiB binary echo*: 8 round trips of a 16 MiB random message, against
  picows (the fastest server here); MB/s of payload one way.
- *deflate 1 KiB JSON echo* and *deflate 64 KiB JSON echo*: permessage-deflate
  at each client's defaults, against wspy's AsyncServer with permessage-deflate
  (the fastest compressing server here); JSON-like text that deflates about
  10:1, a cycle of 64 distinct messages, 8 in flight (8 sent, then their 8
  echoes read and checked); messages per second and MB/s.

The server runs pinned to CPU 0; each client runs in a process of its own
pinned to CPU 1, the clients alternating across repetitions. The round
trips include the server's time, the same for every client, so the ratios
between clients understate the difference between the clients alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
IN_FLIGHT = 8


@dataclass(frozen=True)
class Scenario:
    """One client workload: what it sends, how often, against which server."""

    size: int
    count: int
    deflate: bool
    unit: str  # 'MB/s' or 'msg/s'

    @property
    def server(self) -> str:
        """The echo server the clients talk to."""
        return 'wspy-AsyncServer' if self.deflate else 'picows'


SCENARIOS = {
    '16 MiB binary echo': Scenario(16 << 20, 8, False, 'MB/s'),
    'deflate 1 KiB JSON echo': Scenario(1024, 20000, True, 'msg/s'),
    'deflate 64 KiB JSON echo': Scenario(65536, 2000, True, 'MB/s'),
}


def json_text(size: int, seed: int) -> str:
    """`size` bytes of JSON-like records (as bench/loadgen.c's --json makes them)."""
    rng = random.Random(seed)
    first_id = 10000 + rng.randrange(80000)
    records: list[str] = []
    length = 2
    for k in range(size):
        ident = first_id + k
        record = (f'{", " if k else ""}{{"id": {ident}, "name": "user-{ident}", '
                  f'"active": {rng.choice(["true", "false"])}, '
                  f'"city": "{rng.choice(["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo"])}", '
                  f'"score": {rng.randrange(1000)}, "tags": ["alpha", "beta"]}}')
        if length + len(record) > size:
            break
        records.append(record)
        length += len(record)
    return '[' + ''.join(records) + ' ' * (size - length) + ']'


def batches(scenario: Scenario) -> list[list[str | bytes]]:
    """What a client sends, in batches sent together before their echoes are read."""
    if not scenario.deflate:
        payload = os.urandom(scenario.size)
        return [[payload] for _ in range(scenario.count)]
    cycle = [json_text(scenario.size, seed) for seed in range(64)]
    return [[cycle[(start + i) % len(cycle)] for i in range(IN_FLIGHT)]
            for start in range(0, scenario.count, IN_FLIGHT)]


def run_wspy(url: str, scenario: Scenario) -> float:
    """Seconds for the scenario's round trips with wspy's client."""
    import wspy

    work = batches(scenario)
    extensions = [wspy.DeflateMessage()] if scenario.deflate else []
    conn = wspy.connect(url, max_message_size=None, max_frame_size=None, ping_interval=None,
                        extensions=extensions)
    start = time.perf_counter()
    for sent in work:
        for message in sent:
            conn.send(message)
        for message in sent:
            assert conn.recv().payload == message
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def run_websockets(url: str, scenario: Scenario) -> float:
    """Seconds for the scenario's round trips with websockets' client."""
    from websockets.sync.client import connect

    work = batches(scenario)
    with connect(url, max_size=None, compression='deflate' if scenario.deflate else None) as ws:
        start = time.perf_counter()
        for sent in work:
            for message in sent:
                ws.send(message)
            for message in sent:
                assert ws.recv() == message
        return time.perf_counter() - start


def run_aiohttp(url: str, scenario: Scenario) -> float:
    """Seconds for the scenario's round trips with aiohttp's client (compression only)."""
    import aiohttp

    work = batches(scenario)

    async def main() -> float:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url, compress=15, max_msg_size=0) as ws:
            start = time.perf_counter()
            for sent in work:
                for message in sent:
                    assert isinstance(message, str)
                    await ws.send_str(message)
                for message in sent:
                    assert await ws.receive_str() == message
            return time.perf_counter() - start

    return asyncio.run(main())


# name: (function, extra environment, whether it takes part without compression)
CLIENTS: dict[str, tuple[Callable[[str, Scenario], float], dict[str, str], bool]] = {
    'websockets': (run_websockets, {}, True),
    'aiohttp': (run_aiohttp, {}, False),
    'wspy': (run_wspy, {}, True),
    'wspy without C': (run_wspy, {'WSPY_NO_SPEEDUPS': '1'}, True),
}


def measure(client: str, scenario_name: str, url: str) -> float:
    """One client run of a scenario, in a fresh process on CPU 1: its figure in the unit."""
    scenario = SCENARIOS[scenario_name]
    env = {**os.environ, 'PYTHONPATH': str(HERE.parent), **CLIENTS[client][1]}
    result = subprocess.run([sys.executable, __file__, '--one', client, scenario_name, url],
                            capture_output=True, text=True, env=env, timeout=300,
                            preexec_fn=lambda: os.sched_setaffinity(0, {1}))
    if result.returncode:
        raise RuntimeError(f'{client}: {result.stderr.strip()}')
    seconds = float(result.stdout)
    if scenario.unit == 'msg/s':
        return scenario.count / seconds
    return scenario.count * scenario.size / seconds / 1e6


def main() -> int:
    """Measure every client against one server per scenario; print medians and ratios."""
    from run import start_server, stop_server

    parser = argparse.ArgumentParser()
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--only', nargs='*', default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument('--one', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        client, scenario_name, url = args.one
        print(CLIENTS[client][0](url, SCENARIOS[scenario_name]))
        return 0
    print(f'\n# clients, {args.reps} repetitions, medians, ratios against websockets')
    print('| scenario | ' + ' | '.join(CLIENTS) + ' |')
    print('|---' * (len(CLIENTS) + 1) + '|')
    for scenario_name in args.only:
        scenario = SCENARIOS[scenario_name]
        clients = [name for name, (_, _, plain) in CLIENTS.items() if plain or scenario.deflate]
        results: dict[str, list[float]] = {name: [] for name in clients}
        server, port = start_server(scenario.server, deflate=scenario.deflate)
        try:
            for _ in range(args.reps):
                for name in clients:
                    results[name].append(measure(name, scenario_name, f'ws://127.0.0.1:{port}/'))
        finally:
            stop_server(server)
        reference = statistics.median(results['websockets'])
        cells = []
        for name in CLIENTS:
            if name not in results:
                cells.append('-')
                continue
            median = statistics.median(results[name])
            cells.append(f'{median:,.0f} {scenario.unit} ({median / reference:.2f}x)')
        print(f'| {scenario_name} | ' + ' | '.join(cells) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
