"""examples/flask_chat.py in a real browser: headless Chromium chats through gunicorn.

Driven as test_browser.py drives the demo page, through Chromium's DevTools
protocol (a WebSocket wspy's client speaks). Skipped only where Chromium is
not installed (`.ci/run` installs Debian's `chromium`, so CI never skips).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy

from test_browser import CHROMIUM, Page, chromium
from test_wsgi import EXAMPLES, gunicorn, open_ws

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason='Chromium is not installed (Debian: apt-get install chromium)')


@contextlib.contextmanager
def within(seconds: float, connection: wspy.Connection) -> Iterator[None]:
    """Bound the receives of the block: past `seconds`, the connection is aborted (a
    receive waiting raises `ConnectionClosed`)."""
    timer = threading.Timer(seconds, connection.abort)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def recv_text(connection: wspy.Connection, seconds: float = 5) -> str:
    """The next message, received within `seconds`."""
    with within(seconds, connection):
        payload = connection.recv().payload
    assert isinstance(payload, str)
    return payload


def command(page: Page, method: str, params: dict[str, Any] | None = None) -> Any:
    """Run a DevTools command in `page`: its result. Events until then are dropped."""
    number = next(page.ids)
    page.conn.send(json.dumps({'id': number, 'method': method, 'params': params or {}}))
    with within(10, page.conn):
        while True:
            reply = json.loads(page.conn.recv().payload)
            if reply.get('id') == number:
                assert 'error' not in reply, reply
                return reply['result']


def wait_event(page: Page, method: str, seconds: float = 10) -> dict[str, Any]:
    """The parameters of the next DevTools event `method` in `page`."""
    with within(seconds, page.conn):
        while True:
            reply = json.loads(page.conn.recv().payload)
            if reply.get('method') == method:
                return dict(reply['params'])


LOG = "Array.from(document.querySelectorAll('#log li'), li => li.textContent)"


def test_flask_chat_in_chromium_on_gunicorn(tmp_path: Path) -> None:
    """The chat page served by gunicorn (gthread): Chromium answers its name prompt, its
    WebSocket (permessage-deflate) joins, sends a line and shows another client's; the tab
    closing its socket is seen by the other client."""
    with gunicorn('gthread', threads=4, app='flask_chat:app', chdir=EXAMPLES) as server, \
            chromium('about:blank', tmp_path) as page:
        alice = open_ws(server.port, '/chat?name=alice')
        assert recv_text(alice) == '* alice joined'
        # Navigate once the dialog events are on, to answer the page's prompt().
        command(page, 'Page.enable')
        command(page, 'Page.navigate', {'url': f'http://127.0.0.1:{server.port}/'})
        dialog = wait_event(page, 'Page.javascriptDialogOpening')
        assert (dialog['type'], dialog['message']) == ('prompt', 'Your name?')
        command(page, 'Page.handleJavaScriptDialog', {'accept': True, 'promptText': 'chromium'})
        assert recv_text(alice, 10) == '* chromium joined'
        page.wait_for(f"{LOG}.includes('* chromium joined')")
        assert page.evaluate('socket.extensions').startswith('permessage-deflate')
        page.evaluate("document.getElementById('text').value = 'héllo from Chromium';"
                      "document.getElementById('form').requestSubmit()")
        assert recv_text(alice) == 'chromium: héllo from Chromium'
        page.wait_for(f"{LOG}.includes('chromium: héllo from Chromium')")
        alice.send('hi Chromium')
        assert recv_text(alice) == 'alice: hi Chromium'
        page.wait_for(f"{LOG}.includes('alice: hi Chromium')")
        page.evaluate('socket.close()')
        assert recv_text(alice) == '* chromium left'
        alice.close()
    assert alice.close_code == 1000
