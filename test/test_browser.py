"""A real browser: headless Chromium loads the demo page and talks to both servers.

The test drives the page through Chromium's DevTools protocol, which is
itself a WebSocket: wspy's client speaks it. Skipped only where Chromium is
not installed (`.ci/run` installs Debian's `chromium`, so CI never skips).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy
from wspy.__main__ import EchoHandler

from certs import Certs

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason='Chromium is not installed (Debian: apt-get install chromium)')

# As the machine's notes advise: no background traffic to hosts a closed network refuses.
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--ignore-certificate-errors', '--remote-debugging-port=0']


class Page:
    """One browser tab, driven with Runtime.evaluate over the DevTools WebSocket."""

    def __init__(self, debugger_url: str) -> None:
        self.conn = wspy.connect(debugger_url, max_message_size=None, ping_interval=None)
        self.ids = itertools.count(1)

    def evaluate(self, expression: str, timeout: float = 10) -> Any:
        """The value of a JavaScript expression in the page (a Promise is awaited)."""
        number = next(self.ids)
        self.conn.send(json.dumps({'id': number, 'method': 'Runtime.evaluate', 'params': {
            'expression': expression, 'returnByValue': True, 'awaitPromise': True,
            'timeout': int(timeout * 1000)}}))
        while True:
            reply = json.loads(self.conn.recv().payload)
            if reply.get('id') == number:
                result = reply['result']
                if 'exceptionDetails' in result:
                    raise AssertionError(f'{expression}: {result["exceptionDetails"]}')
                return result['result'].get('value')

    def wait_for(self, condition: str, timeout: float = 10) -> None:
        """Wait until a JavaScript condition holds in the page (loading counts as false)."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f'(() => {{ try {{ return !!({condition}); }} '
                                f'catch (e) {{ return false; }} }})()'):
            assert time.monotonic() < deadline, f'still false after {timeout} s: {condition}'
            time.sleep(0.05)


@contextlib.contextmanager
def chromium(url: str, profile: Path) -> Iterator[Page]:
    """Headless Chromium showing `url`; its page, ready to be driven."""
    assert CHROMIUM is not None
    process = subprocess.Popen([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / 'DevToolsActivePort'
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, 'Chromium exited'
            assert time.monotonic() < deadline, 'Chromium did not open its DevTools port'
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=5) as r:
                pages = [t for t in json.load(r) if t['type'] == 'page' and t['url'] == url]
            if pages:
                break
            assert time.monotonic() < deadline, 'the page did not open'
            time.sleep(0.05)
        page = Page(pages[0]['webSocketDebuggerUrl'])
        try:
            yield page
        finally:
            page.conn.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Demo(EchoHandler):
    """The demo server, remembering how each client closed."""

    def onclose(self, client: Any, code: int, reason: str) -> None:
        self.closes.append((code, reason))  # type: ignore[attr-defined]


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
@pytest.mark.parametrize('base', [wspy.Server, wspy.AsyncServer],
                         ids=['Server', 'AsyncServer'])
def test_demo_page_in_chromium(base: type, secure: bool, certs: Certs, tmp_path: Path) -> None:
    server = type('DemoServer', (Demo, base), {})(
        ('127.0.0.1', 0), extensions=[wspy.DeflateMessage()],
        ssl_args={'certfile': str(certs.server_cert), 'keyfile': str(certs.server_key)}
        if secure else None)
    server.closes = []
    server.start()
    scheme = 'https' if secure else 'http'
    try:
        with chromium(f'{scheme}://127.0.0.1:{server.address[1]}/', tmp_path) as page:
            page.wait_for("document.getElementById('status').textContent.startsWith("
                          f"'connected to {'wss' if secure else 'ws'}://')")
            assert page.evaluate('ws.extensions').startswith('permessage-deflate')
            page.evaluate("document.getElementById('text').value = 'héllo from Chromium';"
                          "document.getElementById('form').requestSubmit()")
            page.wait_for("document.getElementById('log').textContent"
                          ".includes('< héllo from Chromium')")
            page.evaluate("ws.send('x'.repeat(300000))")
            page.wait_for("document.getElementById('log').textContent"
                          ".includes('< ' + 'x'.repeat(300000))")
            echoed = page.evaluate("""new Promise((resolve, reject) => {
                const s = new WebSocket(ws.url);
                s.binaryType = 'arraybuffer';
                s.onopen = () => s.send(new Uint8Array([0, 1, 2, 255]));
                s.onmessage = (e) => { resolve(Array.from(new Uint8Array(e.data))); s.close(); };
                s.onerror = () => reject('error');
            })""")
            assert echoed == [0, 1, 2, 255]
            page.evaluate("ws.close(1000, 'bye from the page')")
            page.wait_for("document.getElementById('status').textContent.startsWith('closed')")
            deadline = time.monotonic() + 5
            while (1000, 'bye from the page') not in server.closes:
                assert time.monotonic() < deadline, server.closes
                time.sleep(0.05)
    finally:
        server.shutdown()
