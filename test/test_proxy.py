"""The client through an HTTP CONNECT proxy: ws and wss, credentials, the environment."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest

import wspy
from wspy.protocol.handshake import HeadReader, parse_request

from certs import Certs
from test_tls import server_tls, trusting


class ConnectProxy:
    """A small CONNECT proxy on 127.0.0.1 that records the tunnels it opens."""

    def __init__(self, credentials: tuple[str, str] | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.credentials = credentials
        self.hosts = hosts or {}    # a tunnel's host name -> the address it opens to instead
        self.tunnels: list[str] = []
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.url = f'http://127.0.0.1:{self.port}'
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            reader = HeadReader()
            head = None
            while head is None:
                data = client.recv(4096)
                if not data:
                    return
                head = reader.feed(data)
            request = parse_request(head)
            if self.credentials is not None:
                expected = 'Basic ' + base64.b64encode(':'.join(self.credentials).encode()).decode()
                if request.headers.get('Proxy-Authorization') != expected:
                    client.sendall(b'HTTP/1.1 407 Proxy Authentication Required\r\n'
                                   b'Proxy-Authenticate: Basic realm="proxy"\r\n'
                                   b'Content-Length: 0\r\n\r\n')
                    return
            host, _, port = request.target.rpartition(':')
            try:
                address = self.hosts.get(host, host.strip('[]'))
                upstream = socket.create_connection((address, int(port)), timeout=5)
            except OSError:
                client.sendall(b'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n')
                return
            self.tunnels.append(request.target)
            client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
            with upstream:
                pump = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
                pump.start()
                _relay(client, upstream)
                pump.join(5)

    def close(self) -> None:
        self.listener.close()


def _relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.fixture
def proxy() -> Iterator[type[ConnectProxy]]:
    proxies: list[ConnectProxy] = []

    def make(credentials: tuple[str, str] | None = None) -> ConnectProxy:
        made = ConnectProxy(credentials)
        proxies.append(made)
        return made

    yield make  # type: ignore[misc]
    for made in proxies:
        made.close()


def echo_once(conn: wspy.Connection, text: str = 'through the proxy') -> None:
    conn.send(text)
    assert conn.recv().payload == text
    conn.close()


def test_ws_and_wss_through_a_proxy(serve, proxy, certs: Certs) -> None:
    tunnel = proxy()
    plain = serve()
    secure = serve(ssl_args=server_tls(certs))
    echo_once(wspy.connect(f'ws://127.0.0.1:{plain.address[1]}/', proxy=tunnel.url))
    echo_once(wspy.connect(f'wss://localhost:{secure.address[1]}/', proxy=tunnel.url,
                           ssl_args=trusting(certs)))
    assert tunnel.tunnels == [f'127.0.0.1:{plain.address[1]}', f'localhost:{secure.address[1]}']


def test_proxy_credentials(serve, proxy) -> None:
    tunnel = proxy(('carol', 'p@ss word'))
    server = serve()
    target = f'ws://127.0.0.1:{server.address[1]}/'
    with pytest.raises(wspy.ProxyError, match='wants credentials') as info:
        wspy.connect(target, proxy=tunnel.url)
    assert info.value.status == 407
    with pytest.raises(wspy.ProxyError, match='refused the credentials'):
        wspy.connect(target, proxy=f'http://carol:wrong@127.0.0.1:{tunnel.port}')
    echo_once(wspy.connect(target, proxy=f'http://carol:p%40ss%20word@127.0.0.1:{tunnel.port}'))


def test_proxy_from_the_environment(serve, proxy, monkeypatch, certs: Certs) -> None:
    tunnel = proxy()
    plain = serve()
    secure = serve(ssl_args=server_tls(certs))
    monkeypatch.setenv('http_proxy', tunnel.url)
    monkeypatch.setenv('https_proxy', tunnel.url)
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.delenv('NO_PROXY', raising=False)
    echo_once(wspy.connect(f'ws://127.0.0.1:{plain.address[1]}/'))  # not asked: direct
    assert tunnel.tunnels == []
    echo_once(wspy.connect(f'ws://127.0.0.1:{plain.address[1]}/', proxy=True))
    echo_once(wspy.connect(f'wss://localhost:{secure.address[1]}/', proxy=True,
                           ssl_args=trusting(certs)))
    assert len(tunnel.tunnels) == 2
    monkeypatch.setenv('no_proxy', '127.0.0.1')
    echo_once(wspy.connect(f'ws://127.0.0.1:{plain.address[1]}/', proxy=True))
    assert len(tunnel.tunnels) == 2


def test_proxy_failures(proxy) -> None:
    tunnel = proxy()
    unused = socket.create_server(('127.0.0.1', 0))
    port = unused.getsockname()[1]
    unused.close()
    with pytest.raises(wspy.ProxyError, match='502') as info:
        wspy.connect(f'ws://127.0.0.1:{port}/', proxy=tunnel.url)
    assert info.value.status == 502
    with pytest.raises(wspy.InvalidURI, match='only http://'):
        wspy.connect(f'ws://127.0.0.1:{port}/', proxy=f'socks5://127.0.0.1:{tunnel.port}')
    with pytest.raises(OSError):
        wspy.connect(f'ws://127.0.0.1:{port}/', proxy=f'http://127.0.0.1:{port}')
