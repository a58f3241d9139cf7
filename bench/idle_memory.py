"""Where the memory of an idle AsyncServer connection goes: tracemalloc, per connection.

    python bench/idle_memory.py [--connections 5000] [--traceback]

Runs an `AsyncServer` in a thread of this process, opens `--connections` upgraded
connections to it (plain sockets, minimal upgrade requests), and prints the bytes and
blocks of Python memory each one added, by the line that allocated them (`--traceback`:
by the whole call stack), largest first; the client sockets' own objects (about 90
bytes a connection) are in the total too. `make bench-scale` measures the process's
memory instead (PSS), which also counts the allocator's overhead.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wspy import AsyncServer  # this checkout's, from the path above

REQUEST = (b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n'
           b'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
           b'Sec-WebSocket-Version: 13\r\n\r\n')


def open_connections(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` upgraded connections (each has had its 101)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(REQUEST)
        sockets.append(sock)
    for sock in sockets:
        head = b''
        while b'\r\n\r\n' not in head:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError('the server closed a connection')
            head += data
    return sockets


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--connections', type=int, default=5000)
    parser.add_argument('--traceback', action='store_true')
    parser.add_argument('--top', type=int, default=25)
    args = parser.parse_args()
    server = AsyncServer(('127.0.0.1', 0), backlog_size=1024)
    server.start()
    address = server.address
    assert isinstance(address, tuple)
    warm = open_connections(address, 100)  # the first connections' one-off allocations
    count = args.connections
    gc.collect()
    tracemalloc.start(16 if args.traceback else 1)
    before = tracemalloc.take_snapshot()
    sockets = open_connections(address, count)
    deadline = time.monotonic() + 30
    while len(server.clients) < count + len(warm) and time.monotonic() < deadline:
        time.sleep(0.05)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = after.compare_to(before, 'traceback' if args.traceback else 'lineno')
    total = sum(stat.size_diff for stat in stats)
    print(f'{total / count:,.0f} bytes per idle connection ({count:,} connections)')
    for stat in stats[:args.top]:
        frames = stat.traceback.format()
        print(f'{stat.size_diff / count:8.1f} B {stat.count_diff / count:5.2f} blocks  '
              f'{frames[-1].strip() if not args.traceback else ""}')
        if args.traceback:
            print('\n'.join(f'        {line}' for line in frames))
    for sock in sockets + warm:
        sock.close()
    server.shutdown()


if __name__ == '__main__':
    main()
