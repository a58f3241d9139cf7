"""`python -m wspy serve` stops on SIGINT and SIGTERM in every state, for every server kind.

A first signal closes the clients gracefully (within max_join_time); a
second one stops at once. Each test runs the demo server in a subprocess.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

KINDS = {'Server': ['--threaded'], 'AsyncServer': [], 'Workers': ['--workers', '2']}
# `python -m wspy`, with Ctrl-C's handler even where SIGINT came ignored (a test run started
# as a background job of a shell): the signal then reaches the server as it does from a terminal.
WSPY_WITH_SIGINT = ('import runpy, signal; '
                    'signal.signal(signal.SIGINT, signal.default_int_handler); '
                    'runpy.run_module("wspy", run_name="__main__", alter_sys=True)')
#: The demo server's max_join_time (the default) and how late a stop may come after it.
MAX_JOIN_TIME = 2.0
SLACK = 2.5


class Demo:
    """The demo echo server in a subprocess."""

    def __init__(self, kind: str) -> None:
        env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
        self.process = subprocess.Popen(
            [sys.executable, '-c', WSPY_WITH_SIGINT, 'serve', '--host', '127.0.0.1', '--port', '0',
             *KINDS[kind]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r'ws://127\.0\.0\.1:(\d+)/', line)
        assert match, line
        self.address = ('127.0.0.1', int(match.group(1)))
        self.sockets: list[socket.socket] = []
        deadline = time.monotonic() + 10
        while True:  # workers listen a moment after the address is printed
            try:
                socket.create_connection(self.address, timeout=1).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, 'the server does not listen'
                time.sleep(0.05)

    def connect(self, count: int, upgrade: bool) -> None:
        """Open `count` connections: WebSocket clients that never read, or silent ones."""
        for _ in range(count):
            sock = socket.create_connection(self.address, timeout=10)
            self.sockets.append(sock)
            if upgrade:
                key = base64.b64encode(os.urandom(16)).decode()
                sock.sendall(f'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'
                             f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
                             f'Sec-WebSocket-Version: 13\r\n\r\n'.encode())
        for sock in self.sockets if upgrade else ():
            assert sock.recv(4096).startswith(b'HTTP/1.1 101 ')

    def stops_within(self, timeout: float) -> bool:
        """Whether the process exits within `timeout` seconds."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def demo() -> Iterator[Any]:
    started: list[Demo] = []

    def start(kind: str) -> Demo:
        server = Demo(kind)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_stops_when_idle(demo: Any, kind: str, signum: int) -> None:
    server = demo(kind)
    server.process.send_signal(signum)
    assert server.stops_within(SLACK)


@pytest.mark.parametrize('kind', list(KINDS))
def test_stops_with_clients_in_their_handshake(demo: Any, kind: str) -> None:
    server = demo(kind)
    server.connect(50, upgrade=False)
    time.sleep(0.3)
    server.process.send_signal(signal.SIGINT)
    assert server.stops_within(SLACK)


@pytest.mark.parametrize('kind', list(KINDS))
def test_stops_with_many_clients(demo: Any, kind: str) -> None:
    server = demo(kind)
    server.connect(500, upgrade=True)
    server.process.send_signal(signal.SIGTERM)
    # None of them answers the 1001: the server waits max_join_time for them.
    assert server.stops_within(MAX_JOIN_TIME + SLACK + 2)


@pytest.mark.parametrize('kind', list(KINDS))
def test_a_second_signal_stops_at_once(demo: Any, kind: str) -> None:
    server = demo(kind)
    server.connect(5, upgrade=True)
    server.process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    began = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.stops_within(MAX_JOIN_TIME)
    assert time.monotonic() - began < 1.2
