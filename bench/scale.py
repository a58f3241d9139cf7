"""100,000 idle WebSocket connections and a broadcast to all of them through Redis.

    python bench/scale.py [--connections 100000] [--workers W] [--clients C]
                          [--broadcasts 5] [--interval 2.0] [--ping-interval 60]
                          [--timeout 900]

Starts a redis-server on a free loopback port, then an `AsyncServer` in `Workers`
processes (SO_REUSEPORT), each worker subscribed to the Redis channel through a
`RedisFanout`, and opens the connections from bench/scale_client (C, epoll) in several
processes, each from a loopback source address of its own (127.0.0.2, 127.0.0.3...: every
source address has its own ephemeral ports). Each process keeps under the 20,000 file
descriptors a process may hold here: by default a worker per 17,000 connections and a
client process per 16,000.

With every connection open and idle, it takes the server's memory per connection: the
proportional set size (PSS: a page shared by N processes counts 1/N in each) of the
supervisor and its workers after, minus before, divided by the connections. Then it
publishes `--broadcasts` 16-byte binary messages, `--interval` seconds apart, with a
Redis client; each carries its CLOCK_REALTIME send time, which the clients subtract from
the kernel's receive time of the message in their socket (SO_TIMESTAMPNS). The clients
run at idle priority (SCHED_IDLE) meanwhile: their reads then wait for a free CPU rather
than take it from the server, as on a machine of its own, and the kernel's timestamps
keep their figures true whenever they read. Prints the delivery latency (p50, p99, max
over every connection and broadcast), the connections reached, the memory per
connection, the CPU used, the processes and descriptors, and PASS or FAIL against the
goals (every connection gets every broadcast, p99 under 1 s, under 4 KiB per idle
connection). Everything stops by itself within `--timeout` seconds, and every child goes
with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import re
import math
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENT = HERE / 'scale_client'
CHANNEL = 'bench-scale'
# Connections per worker and per client process by default: under the 20,000 descriptors
# a process may hold here, with room for SO_REUSEPORT's uneven spread.
PER_WORKER = 17_000
PER_CLIENT = 16_000
# The goals (issue 17, goal 7).
MAX_P99 = 1.0
MAX_BYTES_PER_CONN = 4096
# Seconds over which the idle server's CPU use (its keepalive pings) is measured.
IDLE_SECONDS = 3.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child: be killed when the process that started it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# -- the server (in its own process: python bench/scale.py --serve PORT REDIS_URL WORKERS) --

def serve(port: int, redis_url: str, workers: int, ping_interval: float) -> None:
    """The server: an AsyncServer in `workers` processes, each on the Redis channel."""
    from wspy import AsyncServer, Workers
    from wspy.fanout import RedisFanout

    class ScaleServer(AsyncServer):
        """An AsyncServer whose broadcasts come from the Redis channel."""

        def __init__(self, address: Any, *, redis_url: str, **options: Any) -> None:
            die_with_parent()
            super().__init__(address, **options)
            self.fanout = RedisFanout(self, redis_url, CHANNEL)

        def onclose(self, client: Any, code: int | None, reason: str) -> None:
            logging.getLogger('wspy').warning('closed: %s %s', code, reason)

        def onerror(self, client: Any, error: Exception) -> None:
            logging.getLogger('wspy').warning('error: %r', error)

    die_with_parent()
    logging.basicConfig(level=logging.INFO, format='%(process)d %(levelname)s %(message)s')
    Workers(ScaleServer, ('127.0.0.1', port), workers, redis_url=redis_url,
            ping_interval=ping_interval or None).run()


# -- measuring -----------------------------------------------------------------------------

def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """A process's Rss and Pss (KiB) from /proc/PID/smaps_rollup."""
    figures = {}
    for line in Path(f'/proc/{pid}/smaps_rollup').read_text().splitlines():
        name, _, rest = line.partition(':')
        if name in ('Rss', 'Pss'):
            figures[name] = int(rest.split()[0])
    return figures


def total_memory(pids: list[int]) -> dict[str, int]:
    """Rss and Pss summed over processes (KiB)."""
    per_process = [memory_kib(pid) for pid in pids]
    return {name: sum(figures[name] for figures in per_process) for name in ('Rss', 'Pss')}


def descriptors(pid: int) -> int:
    """The file descriptors a process holds."""
    return len(os.listdir(f'/proc/{pid}/fd'))


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user and system) the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f'/proc/{pid}/stat').read_text().rpartition(')')[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf('SC_CLK_TCK')


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy so far (/proc/stat)."""
    fields = [int(field) for field in Path('/proc/stat').read_text().split('\n')[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def listen_overflows() -> int:
    """The kernel's count of connections dropped for a full accept queue (TcpExt)."""
    lines = Path('/proc/net/netstat').read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith('TcpExt:'):
            counters = dict(zip(names.split(), values.split(), strict=True))
            return int(counters.get('ListenOverflows', 0))
    return 0


def log_summary(log: Path) -> list[str]:
    """The server's warnings and errors, each kind once with its count (numbers as N)."""
    kinds: dict[str, int] = {}
    for line in log.read_text(errors='replace').splitlines():
        if ' WARNING ' in line or ' ERROR ' in line or 'rejected' in line:
            kind = re.sub(r'\d+', 'N', line.split(' ', 1)[1])[:160]
            kinds[kind] = kinds.get(kind, 0) + 1
    return [f'{count:,} x {kind}' for kind, count in sorted(kinds.items(),
                                                          key=lambda item: -item[1])]


def children(pid: int) -> list[int]:
    """The child processes of `pid`."""
    text = Path(f'/proc/{pid}/task/{pid}/children').read_text()
    return [int(child) for child in text.split()]


def percentile(ordered: array[float], fraction: float) -> float:
    """The value at `fraction` of a sorted sequence (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Processes:
    """The children of the run: each killed, whatever happens, when the run ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []
        self.groups: list[int] = []

    def start(self, command: list[str], *, group: bool = False,
              **options: Any) -> subprocess.Popen[Any]:
        """Start a child (`group`: in a process group of its own, killed whole)."""
        process = subprocess.Popen(command, preexec_fn=die_with_parent,
                                   start_new_session=group, **options)
        self.started.append(process)
        if group:
            self.groups.append(process.pid)
        return process

    def stop_all(self) -> None:
        """Terminate every child, then kill whatever is left after a few seconds."""
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


def start_redis(processes: Processes, directory: str) -> tuple[Any, int]:
    """A redis-server on a free loopback port, and a client of it."""
    import redis

    server = shutil.which('redis-server')
    if server is None:
        raise SystemExit('bench-scale needs redis-server: apt-get install redis-server')
    port = free_port()
    processes.start([server, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                     '--appendonly', 'no', '--dir', directory],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host='127.0.0.1', port=port, socket_timeout=10)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError('redis-server did not start') from None
            time.sleep(0.05)


def wait_for_workers(redis_client: Any, server: subprocess.Popen[Any], workers: int,
                     log: Path) -> list[int]:
    """Wait until every worker listens and is subscribed; their pids."""
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise RuntimeError(f'the server exited:\n{log.read_text()[-2000:]}')
        subscribers = dict(redis_client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0)
        pids = children(server.pid)
        if subscribers == workers and len(pids) == workers:
            return pids
        if time.monotonic() > deadline:
            raise RuntimeError(f'{subscribers} of {workers} workers subscribed after 30 s')
        time.sleep(0.1)


class Output:
    """The lines the client processes print, read as they come (no buffering hides one)."""

    def __init__(self, clients: list[subprocess.Popen[bytes]]) -> None:
        self.fds = {client.stdout.fileno(): index for index, client in enumerate(clients)
                    if client.stdout is not None}
        self.partial = {fd: b'' for fd in self.fds}
        self.pending: deque[tuple[int, str]] = deque()

    def lines(self, deadline: float) -> Iterator[tuple[int, str]]:
        """(client index, line) as they come, until `deadline` or every client's end."""
        while True:
            while self.pending:  # kept here: the caller may stop at any line
                yield self.pending.popleft()
            left = deadline - time.monotonic()
            if not self.fds or left <= 0:
                return
            ready, _, _ = select.select(list(self.fds), [], [], left)
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    del self.fds[fd]
                    continue
                *complete, self.partial[fd] = (self.partial[fd] + data).split(b'\n')
                self.pending.extend((self.fds[fd], line.decode()) for line in complete)


def figures(line: str) -> dict[str, str]:
    """The key=value figures of a client's line."""
    return dict(part.split('=', 1) for part in line.split() if '=' in part)


def settle(pids: list[int], most: float = 30.0) -> None:
    """Wait until the processes stop using CPU (the last handshakes done), at most `most` s."""
    deadline = time.monotonic() + most
    before = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pids)
        if now - before < 0.02:
            return
        before = now


# -- the run ---------------------------------------------------------------------------------

def run(args: argparse.Namespace, processes: Processes, scratch: Path) -> bool:
    """The benchmark; True if every goal is met."""
    if not CLIENT.exists():
        raise SystemExit(f'{CLIENT} is missing: make bench/scale_client')
    connections = args.connections
    workers = args.workers or max(2, math.ceil(connections / PER_WORKER))
    nclients = args.clients or max(2, math.ceil(connections / PER_CLIENT))
    redis_client, redis_port = start_redis(processes, str(scratch))
    port = free_port()
    log = scratch / 'server.log'
    with log.open('w') as log_file:
        server = processes.start(
            [sys.executable, __file__, '--serve', str(port),
             f'redis://127.0.0.1:{redis_port}/0', str(workers), str(args.ping_interval)],
            group=True, stdout=log_file, stderr=subprocess.STDOUT)
    worker_pids = wait_for_workers(redis_client, server, workers, log)
    server_pids = [server.pid, *worker_pids]
    settle(server_pids)
    before = total_memory(server_pids)

    overflows_before = listen_overflows()
    shares = [connections // nclients + (index < connections % nclients)
              for index in range(nclients)]
    clients: list[subprocess.Popen[bytes]] = [
        processes.start([str(CLIENT), str(port), f'127.0.0.{2 + index}', str(share),
                         str(args.broadcasts), str(args.open_timeout),
                         str(scratch / f'latencies.{index}')],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for index, share in enumerate(shares)]
    output = Output(clients)
    opened = failed = ready_clients = 0
    open_seconds = 0.0
    for _, line in output.lines(time.monotonic() + args.open_timeout + 30):
        if line.startswith('ready'):
            ready = figures(line)
            opened += int(ready['opened'])
            failed += int(ready['failed'])
            open_seconds = max(open_seconds, float(ready['seconds']))
            ready_clients += 1
            if ready_clients == nclients:
                break
    overflows = listen_overflows() - overflows_before
    print(f'opened {opened:,} of {connections:,} connections in {open_seconds:.1f} s'
          f' ({failed:,} failed, {overflows:,} accept queue overflows)', flush=True)

    time.sleep(2)  # the last 101s are out: the server has nothing more to do but keepalive
    after = total_memory(server_pids)
    per_conn = {name: (after[name] - before[name]) * 1024 / max(opened, 1)
                for name in ('Rss', 'Pss')}
    server_fds = [descriptors(pid) for pid in worker_pids]
    client_fds = [descriptors(client.pid) for client in clients]

    idle_before = cpu_seconds(worker_pids)
    time.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_seconds(worker_pids) - idle_before) / IDLE_SECONDS

    # The clients read at idle priority while the broadcasts go out: on a machine of its
    # own, a server would not share its CPUs with 100,000 clients. The latencies are the
    # kernel's receive times, whenever the clients read them.
    for client in clients:
        os.sched_setscheduler(client.pid, os.SCHED_IDLE, os.sched_param(0))
    cpu_before = cpu_seconds(worker_pids)
    client_cpu_before = cpu_seconds([client.pid for client in clients])
    machine_before = machine_busy_seconds()
    for seq in range(args.broadcasts):
        payload = struct.pack('<QI4x', time.time_ns(), seq)
        redis_client.publish(CHANNEL, b'\0b' + payload)  # RedisFanout's binary message
        time.sleep(args.interval)
    complete = [0] * nclients
    for index, line in output.lines(time.monotonic() + args.deliver_timeout):
        if line.startswith('all'):
            complete[index] += 1
            if all(count == args.broadcasts for count in complete):
                break
    broadcast_cpu = cpu_seconds(worker_pids) - cpu_before
    client_cpu = cpu_seconds([client.pid for client in clients]) - client_cpu_before
    machine_cpu = machine_busy_seconds() - machine_before

    got = [0] * args.broadcasts
    closed = bad = shared = 0
    latencies = array('d')
    warnings = log_summary(log)
    for client in clients:
        with contextlib.suppress(PermissionError):  # back from idle: not every user may
            os.sched_setscheduler(client.pid, os.SCHED_OTHER, os.sched_param(0))
        assert client.stdin is not None
        client.stdin.close()  # the clients write their latencies and exit
    summaries = {index: figures(line) for index, line in output.lines(time.monotonic() + 30)
                 if line.startswith('summary')}
    for index, client in enumerate(clients):
        client.wait(30)
        summary = summaries.get(index, {})
        closed += int(summary.get('closed', 0))
        bad += int(summary.get('bad', 0))
        shared += int(summary.get('shared', 0))
        for seq, count in enumerate(summary.get('got', '').split(',')):
            if count:
                got[seq] += int(count)
        data = (scratch / f'latencies.{index}').read_bytes()
        latencies.frombytes(data)
    latencies = array('d', sorted(latencies))

    expected = connections * args.broadcasts
    received = len(latencies)
    p50, p99, worst = ((percentile(latencies, 0.5), percentile(latencies, 0.99),
                        latencies[-1]) if latencies else (math.inf,) * 3)
    all_delivered = opened == connections and received == expected and not closed and not bad
    goals = {
        f'all {connections:,} connections open, every broadcast on each': all_delivered,
        f'p99 delivery under {MAX_P99:g} s': p99 < MAX_P99,
        f'under {MAX_BYTES_PER_CONN / 1024:g} KiB per idle connection (PSS)':
            per_conn['Pss'] < MAX_BYTES_PER_CONN,
    }
    rows = [
        ('connections open', f'{opened:,} of {connections:,} ({failed:,} failed, '
                             f'{closed:,} closed later, {bad:,} unexpected frames)'),
        ('time to open them all', f'{open_seconds:.1f} s'),
        ('server memory per idle connection', f'{per_conn["Pss"]:,.0f} B PSS '
                                              f'({per_conn["Rss"]:,.0f} B RSS)'),
        ('server memory, all connections open', f'{after["Pss"] / 1024:,.0f} MiB PSS '
                                                f'(before: {before["Pss"] / 1024:,.0f} MiB)'),
        ('broadcasts received', f'{received:,} of {expected:,} '
                                f'(per broadcast: {", ".join(f"{n:,}" for n in got)}; '
                                f'{shared:,} read with another, their times less exact)'),
        ('delivery latency p50 / p99 / max', f'{p50 * 1e3:,.0f} / {p99 * 1e3:,.0f} / '
                                             f'{worst * 1e3:,.0f} ms'),
        ('delivery latency min / p10 / p90', ' / '.join(
            f'{percentile(latencies, fraction) * 1e3:,.0f}' for fraction in (0, 0.1, 0.9))
            + ' ms' if latencies else '-'),
        ('server CPU for the broadcasts', f'{broadcast_cpu:.2f} s '
                                          f'({broadcast_cpu * 1e6 / max(received, 1):.1f} us '
                                          f'per message delivered)'),
        ('client CPU for the broadcasts', f'{client_cpu:.2f} s'),
        ('all CPUs busy meanwhile', f'{machine_cpu:.2f} s (other processes included)'),
        ('server CPU while idle', f'{idle_cpu * 100:.1f} % of a CPU (keepalive pings)'),
        ('server processes', f'{workers} workers + 1 supervisor, '
                             f'descriptors per worker {min(server_fds):,}-{max(server_fds):,}'),
        ('client processes', f'{nclients} (127.0.0.2-127.0.0.{1 + nclients}), descriptors per '
                             f'process {min(client_fds):,}-{max(client_fds):,}'),
        ('redis-server', '1 process'),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name:<{width}}  {value}')
    if warnings:
        print('server warnings:')
        for line in warnings[:10]:
            print(f'  {line}')
    for goal, met in goals.items():
        print(f'{"PASS" if met else "FAIL"}  {goal}')
    return all(goals.values())


def main() -> int:
    """Run the benchmark, or (--serve) the server it starts."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--connections', type=int, default=100_000)
    parser.add_argument('--workers', type=int, default=0,
                        help=f'server processes (default: one per {PER_WORKER:,} connections)')
    parser.add_argument('--clients', type=int, default=0,
                        help=f'client processes (default: one per {PER_CLIENT:,} connections)')
    parser.add_argument('--broadcasts', type=int, default=5)
    parser.add_argument('--interval', type=float, default=2.0,
                        help='seconds between broadcasts (each one to 100,000 clients takes '
                             'about one here: two keeps them apart)')
    parser.add_argument('--open-timeout', type=float, default=300.0,
                        help='seconds to open every connection')
    parser.add_argument('--deliver-timeout', type=float, default=30.0,
                        help='seconds after the last broadcast for it to reach everyone')
    parser.add_argument('--timeout', type=float, default=900.0,
                        help='the whole run stops after this many seconds')
    parser.add_argument('--ping-interval', type=float, default=60.0,
                        help="the server's keepalive pings, seconds apart (0: none; wspy's "
                             "default, 20, keeps 60 %% of a CPU busy with 100,000 clients)")
    parser.add_argument('--serve', nargs=4,
                        metavar=('PORT', 'REDIS_URL', 'WORKERS', 'PING_INTERVAL'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], int(args.serve[2]), float(args.serve[3]))
        return 0

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f'stopped by {signal.Signals(signum).name}')

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
        signal.signal(signum, stop)
    signal.alarm(math.ceil(args.timeout))
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix='bench-scale-') as scratch:
            try:
                return 0 if run(args, processes, Path(scratch)) else 1
            finally:
                processes.stop_all()
    finally:
        signal.alarm(0)


if __name__ == '__main__':
    sys.exit(main())
