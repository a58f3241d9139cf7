"""`RedisFanout` against a real redis-server: across workers, types kept, reconnecting."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy
from wspy.fanout import decode, encode

from conftest import TIMEOUT, connections_to, free_port

REDIS_SERVER = shutil.which('redis-server')


class Redis:
    """A redis-server on a loopback port, which a test may stop and start again."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f'redis://127.0.0.1:{port}/0'

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), 0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline, 'redis-server did not start'
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(TIMEOUT)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    if REDIS_SERVER is None:
        pytest.skip('redis-server is not installed (Debian package redis-server; .ci/run '
                    'installs it)')
    pytest.importorskip('redis', reason='the redis package is not installed '
                        '(pip install "wspy[redis]")')
    server = Redis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize('message', ['text ✓', b'\x00binary\xff', '', b''])
def test_encoding_keeps_the_type(message: str | bytes) -> None:
    decoded = decode(encode(message))
    assert type(decoded.payload) is type(message) and decoded.payload == message


def test_foreign_messages_are_text_when_utf8() -> None:
    assert decode('plain ✓'.encode()).payload == 'plain ✓'
    assert decode(b'\xff\xfe').payload == b'\xff\xfe'


def test_a_broadcast_reaches_the_clients_of_both_workers(redis_server: Redis, app: Any) -> None:
    served = app(f'127.0.0.1:{free_port()}', redis_server.url)
    conns = list(connections_to(served, 2).values())
    extra = served.connect()  # a third client, on either worker
    wait_until(lambda: served.logged().count("subscribed to 'test'") == 2,
               'both workers subscribed')
    conns[0].send('hello everyone')
    conns[1].send(b'\x01\x02')
    for conn in [*conns, extra]:
        received = {conn.recv().payload, conn.recv().payload}
        assert received == {'hello everyone', b'\x01\x02'}
        conn.close()
    assert served.stop() == 0


class Collector(wspy.AsyncServer):
    """Keeps what its fan-out delivers instead of broadcasting it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered: list[Any] = []


def delivered_fanout(server: Collector, url: str) -> wspy.RedisFanout:
    class Keeping(wspy.RedisFanout):
        def deliver(self, message: wspy.Message) -> None:
            server.delivered.append(message.payload)

    return Keeping(server, url, 'reconnect', min_backoff=0.05, max_backoff=0.2)


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_lost_redis_is_reconnected_with_backoff(redis_server: Redis,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, 'wspy')
    server = Collector(('127.0.0.1', 0))
    fanout = delivered_fanout(server, redis_server.url)
    try:
        assert fanout.subscribed.wait(TIMEOUT)
        fanout.publish('before')
        wait_until(lambda: server.delivered == ['before'], 'first message')
        redis_server.stop()
        wait_until(lambda: not fanout.subscribed.is_set(), 'the loss noticed')
        fanout.publish('while down')  # waits in the publisher's queue
        time.sleep(0.5)  # several attempts, each logged
        redis_server.start()
        assert fanout.subscribed.wait(TIMEOUT)
        fanout.publish('after')
        wait_until(lambda: 'after' in server.delivered, 'a message after the restart')
    finally:
        fanout.close()
        server._release()
    messages = [record.getMessage() for record in caplog.records]
    assert any('lost Redis' in message and 'reconnecting in' in message for message in messages)
    assert any('back on Redis' in message for message in messages)
    delays = [float(message.rsplit(' in ', 1)[1].split()[0]) for message in messages
              if 'lost Redis' in message]
    assert delays == sorted(delays) and max(delays) <= 0.2  # doubling, up to max_backoff


def test_publishing_never_blocks_and_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip('redis')
    server = Collector(('127.0.0.1', 0))
    # Nothing listens there: publish() still returns at once, and keeps at most max_pending.
    fanout = wspy.RedisFanout(server, f'redis://127.0.0.1:{free_port()}/0',
                              max_pending=3, min_backoff=0.05)
    try:
        start = time.monotonic()
        for number in range(10):
            fanout.publish(f'message {number}')
        assert time.monotonic() - start < 0.5
        assert len(fanout._pending) <= 3
        assert any('dropped the oldest' in record.getMessage() for record in caplog.records)
    finally:
        fanout.close()
        server._release()


def test_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'redis', None)
    server = Collector(('127.0.0.1', 0))
    try:
        with pytest.raises(ImportError, match=r'pip install "wspy\[redis\]"'):
            wspy.RedisFanout(server)
    finally:
        server._release()
