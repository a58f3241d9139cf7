"""Unix domain sockets (servers and `connect`), `source_address`, and `X-Forwarded-For`
believed only from `trusted_proxies`."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

import wspy
from wspy.forwarded import TrustedProxies, client_host
from wspy.protocol.handshake import Headers

from conftest import EchoServer


class AddressServer(EchoServer):
    """Answers each message with the client's address as the server sees it."""

    def onmessage(self, client: Any, message: wspy.Message) -> None:
        client.send(f'{client.client_address}|{client.request.client_address}')


def forwarded(value: str | None) -> Headers:
    return Headers([] if value is None else [('X-Forwarded-For', value)])


@pytest.mark.parametrize('peer, header, trusted, expected', [
    (('10.0.0.5', 4000), '1.2.3.4', None, '10.0.0.5'),  # nobody trusted: the peer
    (('10.0.0.5', 4000), '1.2.3.4', ['127.0.0.1'], '10.0.0.5'),  # peer not trusted
    (('127.0.0.1', 4000), '1.2.3.4', ['127.0.0.1'], '1.2.3.4'),
    (('127.0.0.1', 4000), None, ['127.0.0.1'], '127.0.0.1'),  # no header: the peer
    # The client's own entries stand left of what the proxies appended.
    (('127.0.0.1', 4000), '6.6.6.6, 1.2.3.4', ['127.0.0.1'], '1.2.3.4'),
    # Two trusted hops: the rightmost address that is not a proxy.
    (('10.1.1.1', 4000), '6.6.6.6, 1.2.3.4, 10.2.2.2', ['10.0.0.0/8'], '1.2.3.4'),
    # Every hop trusted: the leftmost.
    (('10.1.1.1', 4000), '10.3.3.3, 10.2.2.2', ['10.0.0.0/8'], '10.3.3.3'),
    # Garbage stops the walk at the last trusted hop.
    (('127.0.0.1', 4000), '1.2.3.4, unknown', ['127.0.0.1'], '127.0.0.1'),
    (('::1', 4000, 0, 0), '2001:db8::1', ['::1'], '2001:db8::1'),
    (('::ffff:127.0.0.1', 4000, 0, 0), '1.2.3.4', ['127.0.0.1'], '1.2.3.4'),
    ('', '1.2.3.4', ['unix'], '1.2.3.4'),
    ('', '1.2.3.4', ['127.0.0.1'], ''),  # a Unix peer is trusted only when 'unix' is listed
])
def test_client_host(peer: Any, header: str | None, trusted: list[str] | None,
                     expected: str) -> None:
    proxies = None if trusted is None else TrustedProxies(trusted)
    assert client_host(peer, forwarded(header), proxies) == expected


def test_bad_trusted_proxy_names_the_entry() -> None:
    with pytest.raises(ValueError, match="'not-an-address'"):
        TrustedProxies(['127.0.0.1', 'not-an-address'])


def test_forwarded_for_from_a_trusted_peer_only(serve: Any) -> None:
    trusting = serve(AddressServer, trusted_proxies=['127.0.0.1'])
    distrusting = serve(AddressServer, trusted_proxies=['192.0.2.0/24'])
    header = [('X-Forwarded-For', '203.0.113.7')]
    port = trusting.address[1]
    with wspy.connect(f'ws://127.0.0.1:{port}/', headers=header) as conn:
        conn.send('who')
        assert conn.recv().payload == '203.0.113.7|203.0.113.7'
    # From another loopback address, which is not trusted: the header is ignored.
    with wspy.connect(f'ws://127.0.0.1:{port}/', headers=header,
                      source_address=('127.0.0.2', 0)) as conn:
        conn.send('who')
        assert conn.recv().payload == '127.0.0.2|127.0.0.2'
    with wspy.connect(f'ws://127.0.0.1:{distrusting.address[1]}/', headers=header) as conn:
        conn.send('who')
        assert conn.recv().payload == '127.0.0.1|127.0.0.1'


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / 'wspy.sock')


def test_unix_socket_server_and_client(serve: Any, socket_path: str) -> None:
    server = serve(AddressServer, address=socket_path, trusted_proxies=['unix'])
    with wspy.connect('ws://localhost/chat', unix_socket=socket_path,
                      headers=[('X-Forwarded-For', '198.51.100.1')]) as conn:
        conn.send('who')
        assert conn.recv().payload == '198.51.100.1|198.51.100.1'
        assert conn.sock.family == socket.AF_UNIX
    assert server.events[0] == ('open', '/chat')
    server.shutdown()
    assert not os.path.exists(socket_path)  # removed when the server stops


def test_unix_peer_without_trust_has_no_address(serve: Any, socket_path: str) -> None:
    serve(AddressServer, address=socket_path)
    with wspy.connect('ws://localhost/', unix_socket=socket_path,
                      headers=[('X-Forwarded-For', '198.51.100.1')]) as conn:
        conn.send('who')
        assert conn.recv().payload == '|'


def test_stale_unix_socket_is_replaced(serve: Any, socket_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(socket_path)
    stale.close()  # the file stays, nobody listens
    serve(address=socket_path)
    with wspy.connect('ws://localhost/', unix_socket=socket_path) as conn:
        conn.send('hi')
        assert conn.recv().payload == 'hi'


def test_unix_socket_in_use_is_refused(serve: Any, socket_path: str) -> None:
    serve(address=socket_path)
    with pytest.raises(OSError, match='already listening'):
        serve(address=socket_path)
    with wspy.connect('ws://localhost/', unix_socket=socket_path) as conn:  # still served
        conn.send('hi')
        assert conn.recv().payload == 'hi'


def test_unix_socket_path_that_is_a_file_is_left_alone(serve: Any, socket_path: str) -> None:
    Path(socket_path).write_text('data')
    with pytest.raises(OSError):
        serve(address=socket_path)
    assert Path(socket_path).read_text() == 'data'
