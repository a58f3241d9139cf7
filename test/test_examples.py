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


def echoes_both_kinds(url: str) -> None:
    """A client sends text and binary to an echo server and gets each back as it was."""
    conn = wspy.connect(url, extensions=[wspy.DeflateMessage()])
    conn.send('Hello, World!')
    assert conn.recv() == wspy.TextMessage('Hello, World!')
    conn.send(b'\x00\xff')
    assert conn.recv() == wspy.BinaryMessage(b'\x00\xff')
    conn.close()
    assert conn.close_code == 1000


@pytest.mark.parametrize('mode', [(), ('--threaded',), ('--connection',)],
                         ids=['AsyncServer', 'Server', 'Connection'])
def test_porting_wspy09_echo(background, mode: tuple[str, ...]) -> None:
    port = background('porting_wspy09_echo.py', *mode)
    echoes_both_kinds(f'ws://127.0.0.1:{port}/')
    if mode == ('--connection',):      # one client at a time: the next is served after
        echoes_both_kinds(f'ws://127.0.0.1:{port}/')


def test_porting_wspy09_frames() -> None:
    result = run('porting_wspy09_frames.py')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['server received: Hello, Server!',
                                          'client received: Hello, Client!']


def test_porting_ws4py_echo_and_client(background) -> None:
    port = background('porting_ws4py_echo.py')
    echoes_both_kinds(f'ws://127.0.0.1:{port}/ws')
    result = run('porting_ws4py_client.py', f'ws://127.0.0.1:{port}/ws')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sizes = list(range(0, 200, 25))
    assert lines[:8] == [str(size) for size in sizes]
    assert lines[8] == '=> 708 ' + '#' * 708       # the fragmented message, whole
    assert lines[9:17] == [f'=> {size} ' + '*' * size for size in sizes]
    assert lines[17:] == ['Closed down 1000 ']


def test_porting_ws4py_broadcast(background) -> None:
    port = background('porting_ws4py_echo.py', '--broadcast')
    alice = wspy.connect(f'ws://127.0.0.1:{port}/ws')
    bob = wspy.connect(f'ws://127.0.0.1:{port}/ws')
    bob.send('hi all')
    assert alice.recv().payload == 'hi all' and bob.recv().payload == 'hi all'
    bob.close(1000, 'bob has to go')
    assert alice.recv().payload == 'bob has to go'
    alice.close()
