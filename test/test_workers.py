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
from wspy.protocol.auth import authorization, parse_challenges

from conftest import TIMEOUT, App, connections_to, free_port, pid_of
from worker_app import USERS


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


# -- Digest authentication shared by the workers ---------------------------------------------

CREDENTIALS = ('alice', USERS['alice'])


def captured_authorization(served: App) -> str:
    """A valid Authorization header answering a real challenge, not sent yet."""
    with pytest.raises(wspy.InvalidStatus) as info:
        wspy.connect(f'ws://{served.address}/')
    assert info.value.status == 401
    challenges = parse_challenges(value for name, value in info.value.headers
                                  if name.lower() == 'www-authenticate')
    value = authorization(challenges, *CREDENTIALS, 'GET', '/')
    assert value is not None and value.startswith('Digest ')
    return value


def accepting_workers(served: App, authorization_value: str, times: int) -> list[int]:
    """Send the same Authorization on `times` new connections: the pids that accepted it."""
    accepted = []
    for _ in range(times):
        try:
            conn = wspy.connect(f'ws://{served.address}/',
                                headers=[('Authorization', authorization_value)])
        except wspy.InvalidStatus as error:
            assert error.status == 401
            continue
        accepted.append(pid_of(conn))
        conn.close()
    return accepted


def authenticated_workers(served: App, count: int, exclude: set[int] = frozenset()) -> set[int]:
    """Authenticate afresh until `count` workers (none in `exclude`) have let us in."""
    found: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    while len(found) < count:
        assert time.monotonic() < deadline, f'only reached workers {sorted(found)}'
        conn = served.connect(auth=CREDENTIALS)  # every fresh authentication succeeds
        pid = pid_of(conn)
        conn.close()
        if pid not in exclude:
            found.add(pid)
    return found


def test_a_captured_digest_request_is_accepted_once_by_all_workers(app: Any) -> None:
    served = app(None, 'digest')
    workers = authenticated_workers(served, 2)
    captured = captured_authorization(served)
    # 30 connections reach both workers (the kernel spreads them): one accepts, once.
    assert len(accepting_workers(served, captured, 30)) == 1
    victim, survivor = workers
    os.kill(victim, signal.SIGKILL)
    [replacement] = authenticated_workers(served, 1, exclude=workers)
    # The replacement refuses it as well, and so does the survivor.
    assert accepting_workers(served, captured, 30) == []
    # Legitimate clients still get in on both, their retry landing on either worker.
    assert authenticated_workers(served, 2) == {survivor, replacement}
    assert served.stop() == 0
    assert 'Traceback' not in served.logged()
