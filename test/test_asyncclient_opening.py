"""`AsyncClient` opens connections as `wspy.connect` does: redirects, 401 answers, and
the rules that keep credentials to their origin (one `ClientOpening` decides for both)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

import wspy
from wspy.errors import InvalidStatus, RedirectError
from wspy.protocol.opening import ClientOpening

from conftest import url
from test_asyncclient import recorder  # noqa: F401 - a fixture
from test_client import redirect, stub  # noqa: F401 - a fixture
from test_proxy import proxy  # noqa: F401 - a fixture
from test_tls import server_tls, trusting

USERS = {'alice': 'wonderland'}


def test_follows_a_redirect_to_another_server(serve: Any, stub: Any,  # noqa: F811
                                              recorder: Any) -> None:  # noqa: F811
    server = serve()
    moved = stub(redirect(302, url(server, '/new')))
    client = recorder(['redirected'], expect=1)
    connecting = client.connect(f'ws://127.0.0.1:{moved.port}/old')
    assert client.wait_for('message') == [('message', 'redirected')]
    assert connecting.uri.resource == '/new' and connecting.opening.redirects == 1


def test_redirect_limit(stub: Any, recorder: Any) -> None:  # noqa: F811
    loop = stub(redirect(302, '/again'))
    client = recorder(max_redirects=3)
    client.connect(f'ws://127.0.0.1:{loop.port}/')
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, RedirectError) and 'max_redirects is 3' in str(error)
    assert len(loop.requests) == 4


def test_no_redirect_from_wss_down_to_ws(serve: Any, certs: Any,
                                         recorder: Any) -> None:  # noqa: F811
    class Downgrade(wspy.BaseServer):
        def process_request(self, request: wspy.Request) -> wspy.Response:
            return wspy.Response(302, {'Location': 'ws://127.0.0.1:1/'})

    server = serve(Downgrade, ssl_args={'certfile': certs.server_cert,
                                        'keyfile': certs.server_key})
    client = recorder(ssl_args={'cafile': certs.ca})
    client.connect(f'wss://localhost:{server.address[1]}/', auth=('alice', 'wonderland'))
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, RedirectError) and 'leave TLS' in str(error)


@pytest.mark.parametrize('auth', [wspy.BasicAuth(USERS), wspy.DigestAuth(USERS)],
                         ids=['basic', 'digest'])
def test_answers_a_401_challenge(serve: Any, recorder: Any, auth: Any) -> None:  # noqa: F811
    server = serve(auth=auth)
    client = recorder(['hello'], expect=1, auth=('alice', 'wonderland'))
    client.connect(url(server))
    assert client.wait_for('message') == [('message', 'hello')]


def test_wrong_credentials_are_reported(serve: Any, recorder: Any) -> None:  # noqa: F811
    server = serve(auth=wspy.DigestAuth(USERS))
    client = recorder()
    client.connect(url(server), auth=('alice', 'looking-glass'))
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, InvalidStatus) and error.status == 401
    assert 'refused the credentials' in str(error)


def test_credentials_stay_with_their_origin(stub: Any, recorder: Any) -> None:  # noqa: F811
    target = stub(lambda request: b'HTTP/1.1 401 No\r\nWWW-Authenticate: Basic realm="x"\r\n'
                                  b'Content-Length: 0\r\n\r\n')
    moved = stub(redirect(302, f'ws://127.0.0.1:{target.port}/'))
    client = recorder(auth=('alice', 'wonderland'))
    client.connect(f'ws://127.0.0.1:{moved.port}/',
                   headers=[('Cookie', 'session=1'), ('X-Trace', 'keep')])
    [(_, error)] = client.wait_for('failed')
    assert isinstance(error, InvalidStatus) and error.status == 401
    [request] = target.requests  # the challenge was not answered: another origin
    assert 'Cookie' not in request.headers and 'Authorization' not in request.headers
    assert request.headers.get('X-Trace') == 'keep'


def test_the_opening_decides_on_data_alone() -> None:
    """No socket: redirects and challenges as data in, the next attempt out."""
    opening = ClientOpening('wss://a.example/x', [('Cookie', 'c'), ('X', 'y')],
                            auth=('alice', 'wonderland'))
    challenge = InvalidStatus('401', 401, [('WWW-Authenticate', 'Basic realm="r"')])
    opening.refused(challenge)
    assert ('Authorization', 'Basic YWxpY2U6d29uZGVybGFuZA==') in opening.headers
    opening.refused(InvalidStatus('302', 302, [('Location', 'wss://b.example/y')]))
    assert opening.uri.host == 'b.example' and opening.headers == [('X', 'y')]
    with pytest.raises(InvalidStatus):  # no credentials for b.example: the 401 is final
        opening.refused(challenge)
    with pytest.raises(RedirectError):
        opening.refused(InvalidStatus('302', 302, [('Location', 'ws://b.example/')]))


def test_ws_and_wss_through_a_proxy(serve: Any, proxy: Any, certs: Any,  # noqa: F811
                                    recorder: Any) -> None:  # noqa: F811
    tunnel = proxy()
    plain = serve()
    secure = serve(ssl_args=server_tls(certs))
    client = recorder(['through the proxy'], expect=2, ssl_args=trusting(certs),
                      proxy=tunnel.url)
    client.connect(f'ws://127.0.0.1:{plain.address[1]}/')
    client.connect(f'wss://localhost:{secure.address[1]}/')
    assert client.wait_for('message', 2) == [('message', 'through the proxy')] * 2
    assert sorted(tunnel.tunnels) == sorted([f'127.0.0.1:{plain.address[1]}',
                                             f'localhost:{secure.address[1]}'])


def test_proxy_credentials_and_refusals(serve: Any, proxy: Any,  # noqa: F811
                                        recorder: Any) -> None:  # noqa: F811
    tunnel = proxy(('carol', 'p@ss word'))
    server = serve()
    target = f'ws://127.0.0.1:{server.address[1]}/'
    client = recorder(['in'], expect=1)
    client.connect(target, proxy=tunnel.url)
    client.connect(target, proxy=f'http://carol:wrong@127.0.0.1:{tunnel.port}')
    client.connect(target, proxy=f'socks5://127.0.0.1:{tunnel.port}')
    failures = [event[1] for event in client.wait_for('failed', 3)]
    by_kind = {type(error): str(error) for error in failures if not
               isinstance(error, wspy.ProxyError)}
    assert 'only http://' in by_kind[wspy.InvalidURI]
    refusals = sorted(str(error) for error in failures if isinstance(error, wspy.ProxyError))
    assert [error.status for error in failures if isinstance(error, wspy.ProxyError)] == [407] * 2
    assert 'refused the credentials' in refusals[0] and 'wants credentials' in refusals[1]
    client.connect(target, proxy=f'http://carol:p%40ss%20word@127.0.0.1:{tunnel.port}')
    assert client.wait_for('message') == [('message', 'in')]


def test_a_trickling_proxy_is_bounded_by_the_timeout(recorder: Any) -> None:  # noqa: F811
    listener = socket.create_server(('127.0.0.1', 0))
    stop = threading.Event()

    def trickle() -> None:
        sock, _ = listener.accept()
        with sock:
            for byte in b'HTTP/1.1 200 Connection established\r\n\r\n':
                if stop.wait(0.5):
                    return
                sock.send(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    client = recorder()
    began = time.monotonic()
    client.connect('ws://127.0.0.1:1/', handshake_timeout=1,
                   proxy=f'http://127.0.0.1:{listener.getsockname()[1]}')
    try:
        [(_, error)] = client.wait_for('failed')
    finally:
        stop.set()
        listener.close()
    assert isinstance(error, wspy.ProxyError) and error.status == 504
    assert time.monotonic() - began < 1 + 1
