"""gevent: gunicorn's gevent worker and gevent.pywsgi get a clear refusal at the first upgrade.

wspy's connections are blocking sockets and OS threads: under gevent's
monkey-patching its socket class cannot be made at all (`socket.socket` is
gevent's, not a `_socket.socket`), and on a greenlet its blocking reads would
hold up the whole process. So an upgrade is answered 500 saying so, at once,
and the pages of the same application go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import wspy

from test_wsgi import ROOT, TEST_DIR, get_page, gunicorn, open_ws


def assert_refused_at_once(port: int, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(wspy.InvalidStatus) as refused:
        open_ws(port, path)
    assert refused.value.status == 500 and time.monotonic() - started < 2
    assert b'cannot serve WebSockets here' in refused.value.body
    assert b'gthread' in refused.value.body


def check_refusals(port: int) -> None:
    """Both ways of wspy.wsgi refuse; pages, and the 426 to a plain GET, go on."""
    assert_refused_at_once(port, '/echo')  # WebSocketApplication
    assert_refused_at_once(port, '/view')  # a view calling accept()
    assert get_page(port, '/echo') == (200, 'page /echo')
    status, text = get_page(port, '/view')
    assert status == 426 and 'WebSocket endpoint' in text


def test_gunicorn_gevent_worker_refuses_upgrades() -> None:
    with gunicorn('gevent') as server:
        check_refusals(server.port)
        assert get_page(server.port, '/page') == (200, 'page /page')
    assert 'Using worker: gevent' in server.log
    assert server.log.count('socket module is monkey-patched') == 1  # logged once


PYWSGI = """import sys
if sys.argv[2] == 'patched':
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, sys.argv[1])
from gevent.pywsgi import WSGIServer
import wsgi_app
server = WSGIServer(('127.0.0.1', 0), wsgi_app.app, log=None)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.mark.parametrize('patched', ['patched', 'unpatched'])
def test_gevent_pywsgi_refuses_upgrades(patched: str) -> None:
    process = subprocess.Popen([sys.executable, '-c', PYWSGI, str(TEST_DIR), patched],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        check_refusals(port)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert 'Traceback' not in errors, errors
    reason = ('monkey-patched' if patched == 'patched' else 'runs on a gevent greenlet')
    assert reason in errors
