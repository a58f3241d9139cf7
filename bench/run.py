"""Run the echo benchmarks side by side and print medians.

    python bench/run.py [--reps 3] [--only SCENARIO ...] [--servers NAME ...] [--workers]
                        [--baseline DIR]

Each server runs pinned to CPU 0 and the C load generator (bench/loadgen)
to CPU 1. With --workers, wspy's AsyncServer in 1 and then 2 worker
processes, nothing pinned (the workers need both CPUs; the load generator
shares them). Implementations alternate within each repetition, so a noisy
moment hurts them alike; the figures are medians over the repetitions,
with ratios against the first server listed (websockets by default).
With --baseline DIR (a checkout of another commit, its C accelerator
built), each wspy server also runs from that tree, just before the same
server from this one, and this one's ratios are against it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# CPUs of the server and of the load generator; None leaves a process unpinned.
PIN: dict[str, set[int] | None] = {'server': {0}, 'loadgen': {1}}
LOADGEN = HERE / 'loadgen'

BASELINE_SUFFIX = '@baseline'
# The checkout the servers named NAME@baseline run from (see --baseline).
TREES: dict[str, Path] = {'': HERE.parent}

# name: (loadgen arguments, the figure to report, its unit)
SCENARIOS = {
    '16 B echo, 64 x 16': (['echo', '16', '64', '16', '3'], 'msgs_per_s', 'msg/s'),
    '1 KiB echo, 64 x 16': (['echo', '1024', '64', '16', '3'], 'msgs_per_s', 'msg/s'),
    '64 KiB echo, 8 conns': (['echo', '65536', '8', '1', '3'], 'MB_per_s', 'MB/s'),
    '16 MiB echo, 1 conn': (['echo', str(16 << 20), '1', '1', '4'], 'MB_per_s', 'MB/s'),
    'handshakes, 32 concurrent': (['handshake', '32', '3'], 'handshakes_per_s', '/s'),
    '16 B round trip, 1 conn': (['rtt', '16', '20000'], 'median_us', 'us'),
    'memory per idle connection (5,000)': (['idle', '5000'], 'kib_per_conn', 'KiB'),
}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise RuntimeError('no VmRSS')


def start_server(name: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start an echo server pinned to CPU 0; wait until it accepts connections."""
    port = free_port()
    name, suffix, _ = name.partition(BASELINE_SUFFIX)
    env = {**os.environ, 'PYTHONPATH': str(TREES[suffix])}
    server = subprocess.Popen([sys.executable, str(HERE / 'servers.py'), name, str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if PIN['server'] is not None:
        os.sched_setaffinity(server.pid, PIN['server'])
    for _ in range(100):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f'{name} did not start')


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Terminate a server, killing it if it lingers."""
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def parse(line: str) -> dict[str, float]:
    """The key=value figures of a loadgen line."""
    return {k: float(v) for k, v in (p.split('=') for p in line.split() if '=' in p)}


def loadgen(args: list[str], timeout: float = 120) -> dict[str, float]:
    """Run the load generator (pinned to CPU 1 by default); its figures."""
    cpus = PIN['loadgen']

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    result = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True,
                            timeout=timeout, preexec_fn=pin)
    if result.returncode:
        raise RuntimeError(f'loadgen {args}: {result.stderr.strip()}')
    return parse(result.stdout)


def idle_memory(server: subprocess.Popen[bytes], port: int, count: int) -> dict[str, float]:
    """KiB of server memory per idle connection, with `count` connections open."""
    time.sleep(0.5)
    before = rss_kib(server.pid)
    holder = subprocess.Popen([str(LOADGEN), str(port), 'idle', str(count)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline() if holder.stdout else ''
    if not line.startswith('ready'):
        raise RuntimeError('idle connections failed')
    time.sleep(1.0)
    after = rss_kib(server.pid)
    holder.communicate('')
    return {'kib_per_conn': (after - before) / count}


def measure(name: str, scenario: str) -> float:
    """One measurement of one scenario on a fresh server."""
    args, key, _ = SCENARIOS[scenario]
    server, port = start_server(name)
    try:
        if args[0] == 'idle':
            return idle_memory(server, port, int(args[1]))[key]
        return loadgen([str(port), *args])[key]
    finally:
        stop_server(server)


def main() -> int:
    """Measure, then print the table."""
    from servers import SERVERS, WORKERS

    parser = argparse.ArgumentParser()
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--only', nargs='*', default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument('--servers', nargs='*', default=list(SERVERS),
                        choices=[*SERVERS, *WORKERS])
    parser.add_argument('--workers', action='store_true',
                        help='1 against 2 worker processes, nothing pinned')
    parser.add_argument('--baseline', type=Path,
                        help='a checkout of another commit: its wspy servers run beside these')
    args = parser.parse_args()
    if args.baseline is not None:
        TREES[BASELINE_SUFFIX] = args.baseline.resolve()
        args.servers = [entry for name in args.servers for entry in (
            [name + BASELINE_SUFFIX, name] if name.startswith('wspy') else [name])]
    placement = 'server on CPU 0, load generator on CPU 1'
    if args.workers:
        args.servers = list(WORKERS)
        PIN.update(server=None, loadgen=None)
        placement = 'nothing pinned'
        if args.only == list(SCENARIOS):
            args.only = [name for name in SCENARIOS if 'memory' not in name]
    if not LOADGEN.exists():
        raise SystemExit(f'{LOADGEN} missing: run `make bench`')
    load = os.getloadavg()[0]
    print(f'# {os.cpu_count()} CPUs, load average {load:.2f} at start; '
          f'{args.reps} repetitions, medians; {placement}')
    if args.baseline is not None:
        print(f'# NAME{BASELINE_SUFFIX} runs from {args.baseline}; NAME\'s ratio is against it')
    results: dict[tuple[str, str], list[float]] = {}
    for scenario in args.only:
        for _ in range(args.reps):
            for name in args.servers:
                try:
                    value = measure(name, scenario)
                except Exception as error:  # report and go on with the others
                    print(f'  {scenario} / {name}: {error}', file=sys.stderr)
                    continue
                results.setdefault((scenario, name), []).append(value)
    reference = args.servers[0]
    header = '| scenario | ' + ' | '.join(args.servers) + ' |'
    print(header)
    print('|' + '---|' * (len(args.servers) + 1))
    for scenario in args.only:
        _, _, unit = SCENARIOS[scenario]
        base = results.get((scenario, reference))
        cells = []
        for name in args.servers:
            values = results.get((scenario, name))
            if not values:
                cells.append('failed')
                continue
            median = statistics.median(values)
            cell = f'{median:,.0f} {unit}' if median >= 100 else f'{median:.1f} {unit}'
            against = results.get((scenario, name + BASELINE_SUFFIX), base)
            if against and name != reference:
                ratio = median / statistics.median(against)
                cell += f' ({ratio:.2f}x)'
            cells.append(cell)
        print(f'| {scenario} | ' + ' | '.join(cells) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
