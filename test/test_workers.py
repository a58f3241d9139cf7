"""`Workers`: processes sharing a port, supervised restarts, graceful stop; `serve --workers`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import wspy

from conftest import TIMEOUT, connections_to, free_port


def test_two_workers_share_the_port(app: Any) -> None:
    served = app()
    conns = connections_to(served, 2)
    assert served.process.pid not in conns  # the parent only supervises
    for conn in conns.values():
        conn.send('echo')
        assert conn.recv().payload == 'echo'
        conn.close()
    assert served.stop() == 0


def test_killed_worker_is_replaced_while_the_other_serves(app: Any) -> None:
    served = app()
    conns = connections_to(served, 2)
    victim, survivor = list(conns)
    os.kill(victim, signal.SIGKILL)
    # The survivor's client is served all along.
    for number in range(5):
        conns[survivor].send(f'still here {number}')
        assert conns[survivor].recv().payload == f'still here {number}'
    # A new worker takes the victim's place.
    [replacement] = connections_to(served, 1, exclude={victim, survivor})
    assert replacement not in (victim, survivor)
    conns[survivor].close()
    assert served.stop() == 0
    log = served.logged()
    assert f'(pid {victim}) killed by SIGKILL' in log
    assert f'started (pid {replacement})' in log


def test_sigterm_closes_clients_with_1001_and_exits(app: Any) -> None:
    served = app()
    conns = connections_to(served, 2)
    served.process.send_signal(signal.SIGTERM)
    for conn in conns.values():
        with pytest.raises(wspy.ConnectionClosedOK):
            conn.recv()
        assert conn.close_code == wspy.CLOSE_GOING_AWAY
    assert served.process.wait(TIMEOUT) == 0
    assert 'all workers stopped' in served.logged()


def test_workers_on_a_unix_socket(app: Any, tmp_path: Path) -> None:
    path = str(tmp_path / 'workers.sock')
    served = app(path)
    conns = connections_to(served, 2)
    for conn in conns.values():
        conn.close()
    assert served.stop(signal.SIGINT) == 0
    assert not os.path.exists(path)
    assert 'one shared socket' in served.logged()


def test_serve_command_with_workers(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, '-m', 'wspy', 'serve', '--host', '127.0.0.1',
                                '--port', str(port), '--workers', '2'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert '2 workers' in process.stdout.readline()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                conn = wspy.connect(f'ws://127.0.0.1:{port}/')
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        conn.send('hello')
        assert conn.recv().payload == 'hello'
        conn.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
        assert process.stderr is not None
        assert 'Traceback' not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_workers_need_one_at_least() -> None:
    with pytest.raises(ValueError, match='at least 1'):
        wspy.Workers(wspy.AsyncServer, ('127.0.0.1', 0), workers=0)
