"""`python -m wspy`: the demo echo server a person can use at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import wspy

from conftest import free_port


def test_help() -> None:
    result = subprocess.run([sys.executable, '-m', 'wspy', '--help'], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and 'serve' in result.stdout and 'connect' in result.stdout
    result = subprocess.run([sys.executable, '-m', 'wspy', 'serve', '--help'],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and '--port' in result.stdout and '--threaded' in result.stdout


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


def start_demo(*extra: str) -> tuple[subprocess.Popen[str], int]:
    """The demo server in a subprocess; its process and port once it accepts."""
    port = free_port()
    process = subprocess.Popen([sys.executable, '-m', 'wspy', '--host', '127.0.0.1',
                                '--port', str(port), *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    scheme = 'wss' if '--certfile' in extra else 'ws'
    assert f'{scheme}://127.0.0.1:{port}/' in process.stdout.readline()
    for _ in range(50):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError('demo server did not start')


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_demo_page_for_browsers_on_both_servers() -> None:
    for extra in ((), ('--threaded',)):
        process, port = start_demo(*extra)
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
                sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
                page = b''
                while chunk := sock.recv(65536):
                    page += chunk
            assert page.startswith(b'HTTP/1.1 200 OK\r\n')
            assert b'text/html' in page and b'new WebSocket(' in page
        finally:
            stop(process)


def test_interactive_client() -> None:
    process, port = start_demo()
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'wspy', 'connect', f'ws://127.0.0.1:{port}/', '--deflate',
             '--header', 'X-Test: yes'], input='hello\nsecond line\n', capture_output=True,
            text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert '< hello' in lines and '< second line' in lines
        assert lines[-1] == 'closed: 1000'
        binary = subprocess.run(
            [sys.executable, '-m', 'wspy', 'connect', f'ws://127.0.0.1:{port}/', '--binary'],
            input='raw\n', capture_output=True, text=True, timeout=30)
        assert "< b'raw'" in binary.stdout.splitlines()
    finally:
        stop(process)


def test_interactive_client_errors() -> None:
    port = free_port()
    refused = subprocess.run([sys.executable, '-m', 'wspy', 'connect', f'ws://127.0.0.1:{port}/'],
                             input='', capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and 'cannot connect' in refused.stderr
    assert 'Traceback' not in refused.stderr
    bad = subprocess.run([sys.executable, '-m', 'wspy', 'connect', 'http://x/'],
                         input='', capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and 'not a ws:// or wss:// URL' in bad.stderr
    header = subprocess.run([sys.executable, '-m', 'wspy', 'connect', 'ws://x/', '--header', 'x'],
                            input='', capture_output=True, text=True, timeout=30)
    assert header.returncode == 2 and 'NAME:VALUE' in header.stderr


def test_wss_demo_and_client_options(certs) -> None:
    process, port = start_demo('--certfile', str(certs.server_cert), '--keyfile',
                               str(certs.server_key))
    url = f'wss://127.0.0.1:{port}/'
    try:
        for options in (['--cafile', str(certs.ca)], ['--insecure']):
            result = subprocess.run([sys.executable, '-m', 'wspy', 'connect', url, *options],
                                    input='secure\n', capture_output=True, text=True,
                                    timeout=30)
            assert '< secure' in result.stdout.splitlines(), result.stderr
        refused = subprocess.run([sys.executable, '-m', 'wspy', 'connect', url],
                                 input='', capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and 'certificate verify failed' in refused.stderr
        auth = subprocess.run([sys.executable, '-m', 'wspy', 'connect', url, '--auth', 'nocolon'],
                              input='', capture_output=True, text=True, timeout=30)
        assert auth.returncode == 2 and 'USER:PASSWORD' in auth.stderr
    finally:
        stop(process)
    missing = subprocess.run([sys.executable, '-m', 'wspy', '--port', '0', '--certfile',
                              '/nonexistent.pem'], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and 'cannot serve' in missing.stderr
    assert 'Traceback' not in missing.stderr
