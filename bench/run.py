"""Run the echo benchmarks side by side and print medians.

    python bench/run.py [--reps 5] [--quick] [--only SCENARIO ...] [--servers NAME ...]
                        [--reference NAME] [--workers] [--fallback] [--wsgi] [--baseline DIR]

Each server runs pinned to CPU 0 and the C load generator (bench/loadgen)
to CPU 1. With --workers, wspy's AsyncServer in 1 and then 2 worker
processes, nothing pinned (the workers need both CPUs; the load generator
shares them). Implementations alternate within each repetition, so a noisy
moment hurts them alike; the figures are medians over the repetitions,
with ratios against the reference server (the first listed: websockets by
default), then the spread of each figure over the repetitions. With
--baseline DIR (a checkout of another commit, its C accelerator built),
each wspy server also runs from that tree, just before
the same server from this one, and this one's ratios are against it. With
--wsgi, WebSockets inside a WSGI application under one gunicorn `gthread`
worker (16 threads): flask-sock's echo, then wspy.wsgi's (a thread per
connection, as flask-sock's) and its hand-off to an event loop, in rows
with few connections (a thread holds each).

The first rows send what the first version of this benchmark sent: binary
frames of one repeated byte, masked with a zero key, counted from their
headers. The others send what clients send: text (valid UTF-8, some of it
multi-byte) or JSON-like text, a random masking key per frame, and every
echo checked byte for byte (a wrong echo fails the run); over TLS 1.3 with
a self-signed RSA-2048 certificate made for the run (wss rows), and with
permessage-deflate at each library's defaults (deflate rows, where the
bytes the server sent per echo are shown too). A '-' marks a server that
does not take part in a row: picows has no permessage-deflate, and aiohttp
is a reference for the wss and deflate rows only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# CPUs of the server and of the load generator; None leaves a process unpinned.
PIN: dict[str, set[int] | None] = {'server': {0}, 'loadgen': {1}}
LOADGEN = HERE / 'loadgen'

BASELINE_SUFFIX = '@baseline'
# The checkout the servers named NAME@baseline run from (see --baseline).
TREES: dict[str, Path] = {'': HERE.parent}
# The certificate and key of the wss rows (made by make_certificate).
CERTIFICATE: list[str] = []

# The options of loadgen that make its messages like a real client's.
REAL = ('--text', '--mask', '--check')
# With --quick: the duration in seconds or the count of each mode.
QUICK = {'echo': 1, 'handshake': 1, 'rtt': 5000, 'idle': 1000}


@dataclass(frozen=True)
class Row:
    """A row of the table: a figure of a scenario's loadgen run."""

    name: str
    key: str
    unit: str


@dataclass(frozen=True)
class Scenario:
    """One loadgen run per server and repetition, and the rows it fills."""

    mode: str
    params: tuple[int, ...]         # the mode's arguments; the last a duration or a count
    rows: tuple[Row, ...]
    options: tuple[str, ...] = ()   # loadgen's options: --text, --tls, --deflate...

    @property
    def tls(self) -> bool:
        """Whether the server serves wss://."""
        return '--tls' in self.options

    @property
    def deflate(self) -> bool:
        """Whether the server accepts permessage-deflate."""
        return '--deflate' in self.options

    def loadgen_args(self, quick: bool) -> list[str]:
        """The load generator's arguments after the port (options first)."""
        params = [*self.params[:-1], QUICK[self.mode] if quick else self.params[-1]]
        return [*self.options, self.mode, *map(str, params)]


def echo(name: str, size: int, conns: int, inflight: int, seconds: int,
         options: tuple[str, ...] = (), unit: str = 'msg/s') -> Scenario:
    """An echo scenario reporting messages (or MB) per second."""
    key = 'msgs_per_s' if unit == 'msg/s' else 'MB_per_s'
    return Scenario('echo', (size, conns, inflight, seconds), (Row(name, key, unit),), options)


def handshakes(name: str, options: tuple[str, ...] = ()) -> Scenario:
    """Upgrades per second, 32 connections at a time, each reset once its 101 has come."""
    return Scenario('handshake', (32, 3), (Row(name, 'handshakes_per_s', '/s'),), options)


def deflate_echo(name: str, size: int, conns: int, inflight: int, unit: str,
                 bytes_row: str) -> Scenario:
    """A permessage-deflate echo of JSON-like text; also the bytes sent back per message."""
    scenario = echo(name, size, conns, inflight, 3,
                    ('--json', '--mask', '--check', '--deflate'), unit)
    return Scenario(scenario.mode, scenario.params,
                    (*scenario.rows, Row(bytes_row, 'wire_bytes_per_msg', 'B')),
                    scenario.options)


SCENARIOS = {scenario.rows[0].name: scenario for scenario in (
    # The first version's rows: binary, zero masking key, echoes counted from their headers.
    echo('16 B echo, 64 x 16', 16, 64, 16, 3),
    echo('1 KiB echo, 64 x 16', 1024, 64, 16, 3),
    echo('64 KiB echo, 8 conns', 65536, 8, 1, 3, unit='MB/s'),
    echo('16 MiB echo, 1 conn', 16 << 20, 1, 1, 4, unit='MB/s'),
    handshakes('handshakes, 32 concurrent'),
    Scenario('rtt', (16, 20000), (Row('16 B round trip, 1 conn', 'median_us', 'us'),)),
    Scenario('idle', (5000,), (Row('memory per idle connection (5,000)', 'kib_per_conn', 'KiB'),)),
    # What clients send: text, random masks, every echo checked.
    echo('16 B text echo, 64 x 16', 16, 64, 16, 3, REAL),
    echo('1 KiB text echo, 64 x 16', 1024, 64, 16, 3, REAL),
    echo('64 KiB echo, random masks, 8 conns', 65536, 8, 1, 3, ('--mask', '--check'), 'MB/s'),
    echo('16 MiB text echo, 1 conn', 16 << 20, 1, 1, 4, REAL, unit='MB/s'),
    Scenario('rtt', (16, 20000), (
        Row('16 B text round trip, 1 conn, p50', 'p50_us', 'us'),
        Row('16 B text round trip, 1 conn, p99', 'p99_us', 'us'),
        Row('CPU per message, 1 conn', 'cpu_us_per_msg', 'us'),
    ), REAL),
    echo('wss 16 B text echo, 64 x 16', 16, 64, 16, 3, ('--tls', *REAL)),
    echo('wss 64 KiB echo, 8 conns', 65536, 8, 1, 3, ('--tls', '--mask', '--check'), 'MB/s'),
    handshakes('wss handshakes, 32 concurrent', ('--tls',)),
    deflate_echo('deflate 1 KiB JSON echo, 64 x 16', 1024, 64, 16, 'msg/s',
                 'deflate 1 KiB JSON, bytes per echo'),
    deflate_echo('deflate 64 KiB JSON echo, 8 conns', 65536, 8, 1, 'MB/s',
                 'deflate 64 KiB JSON, bytes per echo'),
)}
# `--fallback` (issue 17, goal 8): the pure-Python servers against websockets.
FALLBACK_ROWS = ['16 B echo, 64 x 16', '16 B text echo, 64 x 16', '1 KiB text echo, 64 x 16',
                 'handshakes, 32 concurrent', '64 KiB echo, 8 conns',
                 '64 KiB echo, random masks, 8 conns']


# `--wsgi` (issue 18): a thread per connection, so 8 connections (16 messages in flight each).
WSGI_SCENARIOS = {scenario.rows[0].name: scenario for scenario in (
    echo('16 B text echo, 8 x 16', 16, 8, 16, 3, REAL),
    echo('1 KiB text echo, 8 x 16', 1024, 8, 16, 3, REAL),
)}
WSGI_ROWS = ['16 B text echo, 8 x 16', '1 KiB text echo, 8 x 16',
             '64 KiB echo, random masks, 8 conns', '16 B text round trip, 1 conn, p50',
             'handshakes, 32 concurrent']
ALL_SCENARIOS = {**SCENARIOS, **WSGI_SCENARIOS}


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


def cpu_seconds(pid: int) -> float:
    """CPU time a process and its children (gunicorn's worker) have used so far (user and
    system, all their threads)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rpartition(')')[2].split()
    spent = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    children = Path(f'/proc/{pid}/task/{pid}/children')
    for child in (children.read_text().split() if children.exists() else ()):
        try:
            spent += cpu_seconds(int(child))
        except OSError:  # gone meanwhile
            pass
    return spent


def make_certificate(directory: str) -> None:
    """A self-signed RSA-2048 certificate and its key for the wss rows."""
    if shutil.which('openssl') is None:
        raise SystemExit('the wss rows need the openssl command: apt-get install openssl')
    cert, key = f'{directory}/cert.pem', f'{directory}/key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-subj', '/CN=localhost', '-keyout', key, '-out', cert],
                   check=True, capture_output=True)
    CERTIFICATE[:] = [cert, key]


def start_server(name: str, tls: bool = False,
                 deflate: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """Start an echo server pinned to CPU 0; wait until it accepts connections."""
    port = free_port()
    name, suffix, _ = name.partition(BASELINE_SUFFIX)
    env = {**os.environ, 'PYTHONPATH': str(TREES[suffix])}
    command = [sys.executable, str(HERE / 'servers.py'), name, str(port)]
    if tls:
        command += ['--tls', *CERTIFICATE]
    if deflate:
        command.append('--deflate')
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # gunicorn's worker is forked later by this process: it inherits the CPUs set here.
    if PIN['server'] is not None:
        os.sched_setaffinity(server.pid, PIN['server'])
    from servers import WSGI

    ready = answers_http if name in WSGI else accepts
    for _ in range(200):
        if ready(port):
            return server, port
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f'{name} did not start')


def accepts(port: int) -> bool:
    """Whether a server accepts connections on `port`."""
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
    except OSError:
        return False
    return True


def answers_http(port: int) -> bool:
    """Whether a server answers an HTTP request on `port` (gunicorn's master listens
    before its worker is up: the worker answers)."""
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=2) as sock:
            sock.sendall(b'GET /ready HTTP/1.0\r\n\r\n')
            return bool(sock.recv(16))
    except OSError:
        return False


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
        raise RuntimeError(f'loadgen {" ".join(args)}: {result.stderr.strip()}')
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


def measure(name: str, scenario: Scenario, quick: bool) -> dict[str, float]:
    """One loadgen run of a scenario on a fresh server: its figures, and the server's CPU
    time per message (cpu_us_per_msg)."""
    server, port = start_server(name, scenario.tls, scenario.deflate)
    try:
        args = scenario.loadgen_args(quick)
        if scenario.mode == 'idle':
            return idle_memory(server, port, int(args[-1]))
        before = cpu_seconds(server.pid)
        figures = loadgen([str(port), *args])
        spent = cpu_seconds(server.pid) - before
        messages = figures.get('count') or figures.get('msgs')
        if messages:
            figures['cpu_us_per_msg'] = spent * 1e6 / messages
        return figures
    finally:
        stop_server(server)


def takes_part(name: str, scenario: Scenario) -> bool:
    """Whether a server runs a scenario ('-' in its rows otherwise)."""
    from servers import NO_DEFLATE, TLS_AND_DEFLATE_ONLY

    base = name.partition(BASELINE_SUFFIX)[0]
    if scenario.deflate and base in NO_DEFLATE:
        return False
    return base not in TLS_AND_DEFLATE_ONLY or scenario.tls or scenario.deflate


def cell(values: list[float], unit: str, against: list[float] | None) -> str:
    """A median with its unit, and its ratio to the reference's when there is one."""
    median = statistics.median(values)
    text = f'{median:,.0f} {unit}' if median >= 100 else f'{median:.1f} {unit}'
    if against:
        text += f' ({median / statistics.median(against):.2f}x)'
    return text


def print_grid(scenarios: list[Scenario], servers: list[str],
               text: Callable[[Row, str, list[float]], str],
               results: dict[tuple[str, str], list[float]]) -> None:
    """A table with a row per figure and a column per server; `text(row, server, values)`
    gives a cell where the server took part and has figures."""
    print('| scenario | ' + ' | '.join(servers) + ' |')
    print('|' + '---|' * (len(servers) + 1))
    for scenario in scenarios:
        for row in scenario.rows:
            cells = []
            for name in servers:
                values = results.get((row.name, name))
                if not takes_part(name, scenario):
                    cells.append('-')
                elif not values:
                    cells.append('failed')
                else:
                    cells.append(text(row, name, values))
            print(f'| {row.name} | ' + ' | '.join(cells) + ' |')


def print_table(results: dict[tuple[str, str], list[float]], scenarios: list[Scenario],
                servers: list[str], reference: str) -> None:
    """The table of medians, with ratios against the reference (or the baseline's)."""
    def median(row: Row, name: str, values: list[float]) -> str:
        if name == reference:
            return cell(values, row.unit, None)
        base = results.get((row.name, reference))
        return cell(values, row.unit, results.get((row.name, name + BASELINE_SUFFIX), base))

    print_grid(scenarios, servers, median, results)


def print_spread(results: dict[tuple[str, str], list[float]], scenarios: list[Scenario],
                 servers: list[str]) -> None:
    """How far apart the repetitions were: (largest - smallest) / median, per figure."""
    def spread(row: Row, name: str, values: list[float]) -> str:
        return f'{100 * (max(values) - min(values)) / statistics.median(values):.0f} %'

    print('\n# spread over the repetitions: (largest - smallest) / median')
    print_grid(scenarios, servers, spread, results)


# Over this share of its run on its CPU, the load generator may be what limits a figure.
BUSY = 0.9


def run(scenarios: list[Scenario], servers: list[str], reps: int,
        quick: bool) -> dict[tuple[str, str], list[float]]:
    """Measure every scenario on every server taking part, `reps` times; the figures.

    Where the load generator was busy over BUSY of a run, a line on stderr says so.
    """
    results: dict[tuple[str, str], list[float]] = {}
    for scenario in scenarios:
        for _ in range(reps):
            for name in servers:
                if not takes_part(name, scenario):
                    continue
                try:
                    figures = measure(name, scenario, quick)
                except Exception as error:  # report and go on with the others
                    print(f'  {scenario.rows[0].name} / {name}: {error}', file=sys.stderr)
                    continue
                for row in scenario.rows:
                    results.setdefault((row.name, name), []).append(figures[row.key])
                busy = figures.get('loadgen_busy', 0)
                if busy > BUSY:
                    print(f'  {scenario.rows[0].name} / {name}: the load generator was '
                          f'{busy:.0%} busy', file=sys.stderr)
    return results


def main() -> int:
    """Measure, then print the table."""
    from servers import NO_C, SERVERS, WORKERS, WSGI

    parser = argparse.ArgumentParser()
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--quick', action='store_true',
                        help='one repetition of short runs: to check that all works')
    parser.add_argument('--only', nargs='*', default=list(SCENARIOS),
                        choices=list(ALL_SCENARIOS))
    parser.add_argument('--servers', nargs='*', default=list(SERVERS),
                        choices=[*SERVERS, *WORKERS, *NO_C, *WSGI])
    parser.add_argument('--reference', help='the server of the ratios (default: the first)')
    parser.add_argument('--workers', action='store_true',
                        help='1 against 2 worker processes, nothing pinned')
    parser.add_argument('--fallback', action='store_true',
                        help="wspy's pure-Python servers (no C accelerator) against websockets")
    parser.add_argument('--wsgi', action='store_true',
                        help='wspy.wsgi against flask-sock under one gunicorn gthread worker')
    parser.add_argument('--baseline', type=Path,
                        help='a checkout of another commit: its wspy servers run beside these')
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
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
    if args.fallback:
        args.servers = ['websockets', *NO_C]
        if args.only == list(SCENARIOS):
            args.only = FALLBACK_ROWS
    if args.wsgi:
        args.servers = list(WSGI)
        if args.only == list(SCENARIOS):
            args.only = WSGI_ROWS
    reference = args.reference or args.servers[0]
    if reference not in args.servers:
        parser.error(f'--reference {reference} is not among the servers')
    if not LOADGEN.exists():
        raise SystemExit(f'{LOADGEN} missing: run `make bench`')
    scenarios = [ALL_SCENARIOS[name] for name in args.only]
    load = os.getloadavg()[0]
    print(f'# {os.cpu_count()} CPUs, load average {load:.2f} at start; '
          f'{args.reps} repetitions, medians; {placement}; ratios against {reference}')
    if args.baseline is not None:
        print(f'# NAME{BASELINE_SUFFIX} runs from {args.baseline}; NAME\'s ratio is against it')
    with tempfile.TemporaryDirectory(prefix='wspy-bench-') as directory:
        if any(scenario.tls for scenario in scenarios):
            make_certificate(directory)
        started = time.monotonic()
        results = run(scenarios, args.servers, args.reps, args.quick)
    print_table(results, scenarios, args.servers, reference)
    if args.reps > 1:
        print_spread(results, scenarios, args.servers)
    print(f'# {time.monotonic() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
