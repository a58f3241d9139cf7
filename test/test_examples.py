"""The scripts in examples/ run and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wspy

from conftest import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / 'examples'


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def background() -> Iterator:
    """Start an example server; wait until it accepts; stop it afterwards."""
    processes: list[subprocess.Popen[str]] = []

    def start(name: str, *args: str) -> int:
        port = free_port()
        process = subprocess.Popen([sys.executable, str(EXAMPLES / name), str(port), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, 'PYTHONUNBUFFERED': '1'})
        processes.append(process)
        assert f'127.0.0.1:{port}' in process.stdout.readline()
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_frames() -> None:
    result = run('frames.py')
    assert result.returncode == 0, result.stderr
    assert 'parsed:' in result.stdout and 'rejected: unmasked frame from a client' in result.stdout


def test_raw_socket(background) -> None:
    port = background('raw_socket.py')
    conn = wspy.connect(f'ws://127.0.0.1:{port}/raw')
    assert conn.recv().payload == 'Hello, Client!'
    conn.send('ping me')
    assert conn.recv().payload == 'you said: ping me'
    conn.close(1000, 'bye')
    assert conn.close_code == 1000


@pytest.mark.parametrize('mode', [(), ('--async',)], ids=['Server', 'AsyncServer'])
def test_echo_server_and_client(background, mode: tuple[str, ...]) -> None:
    port = background('echo_server.py', *mode)
    result = run('client.py', f'ws://127.0.0.1:{port}/', 'hello', 'world')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['hello', 'world', 'closed: 1000']


def test_chat_server(background) -> None:
    port = background('chat_server.py')
    alice = wspy.connect(f'ws://127.0.0.1:{port}/alice')
    assert alice.recv().payload == '* 1 here'
    bob = wspy.connect(f'ws://127.0.0.1:{port}/bob')
    assert alice.recv().payload == '* 2 here' and bob.recv().payload == '* 2 here'
    bob.send('hi all')
    assert alice.recv().payload == 'bob: hi all' and bob.recv().payload == 'bob: hi all'
    for conn in (alice, bob):
        conn.close()


def test_wss_server_with_digest_auth(background, certs) -> None:
    port = background('wss_server.py', str(certs.server_cert), str(certs.server_key))
    url = f'wss://localhost:{port}/'
    trust = {'cafile': str(certs.ca)}
    conn = wspy.connect(url, ssl_args=trust, auth=('alice', 'wonderland'))
    assert conn.recv().payload == 'hello alice, over TLSv1.3'
    conn.send('secret')
    assert conn.recv().payload == 'secret'
    conn.close()
    with pytest.raises(wspy.InvalidStatus) as refused:
        wspy.connect(url, ssl_args=trust, auth=('alice', 'guess'))
    assert refused.value.status == 401
