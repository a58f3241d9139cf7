"""`python -m wspy`: the demo echo server a person can use at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import wspy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def test_help() -> None:
    result = subprocess.run([sys.executable, '-m', 'wspy', '--help'], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and '--port' in result.stdout


def test_demo_server_echoes_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, '-m', 'wspy', 'serve', '--host', '127.0.0.1',
                                '--port', str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert f'ws://127.0.0.1:{port}/' in banner
        conn = None
        for _ in range(50):
            try:
                conn = wspy.connect(f'ws://127.0.0.1:{port}/')
                break
            except OSError:
                time.sleep(0.1)
        assert conn is not None
        conn.send('hello demo')
        assert conn.recv() == wspy.TextMessage('hello demo')
        conn.send(b'\x00\x01')
        assert conn.recv() == wspy.BinaryMessage(b'\x00\x01')
        process.send_signal(signal.SIGTERM)
        try:
            conn.recv()
        except wspy.ConnectionClosedOK as closed:
            assert closed.code == wspy.CLOSE_GOING_AWAY
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
