"""Behind a real nginx (Debian's package): ws and wss (TLS at nginx), to TCP and Unix socket
backends, for both servers: handshake, echo, large messages, ping/pong, close, client address."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy

from certs import Certs
from conftest import TIMEOUT, EchoServer, eventually, free_port

NGINX = shutil.which('nginx') or next(
    (path for path in ('/usr/sbin/nginx', '/usr/local/sbin/nginx') if Path(path).exists()), None)

# The proxying part of the configuration docs/howto/nginx.md documents (test_docs checks it).
LOCATION = '''
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
'''

CONFIG = '''
daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream tcp_backend {{ server 127.0.0.1:{backend_port}; }}
    upstream unix_backend {{ server unix:{socket}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ {tcp_location} }}
        location /unix/ {{ {unix_location} }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ {tcp_location} }}
    }}
}}
'''


LIMITS = {'max_message_size': 8 << 20, 'max_frame_size': 8 << 20}


class Backend(EchoServer):
    """Echoes; 'who' answers with the client's address; 'close' closes with 4002."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pongs: list[bytes] = []

    def onmessage(self, client: Any, message: wspy.Message) -> None:
        if message.payload == 'who':
            client.send(client.client_address)
        elif message.payload == 'close':
            client.close(4002, 'closed by the server')
        else:
            client.send(message)

    def onpong(self, client: Any, payload: bytes) -> None:
        self.pongs.append(payload)


class PingRecorder(wspy.Connection):
    """A client connection that keeps the pings and pongs it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []

    def onping(self, payload: bytes) -> None:
        self.pings.append(payload)

    def onpong(self, payload: bytes) -> None:
        self.pongs.append(payload)


class Nginx:
    """nginx on loopback ports in front of one TCP and one Unix socket backend."""

    def __init__(self, directory: Path, certs: Certs, backend_port: int, socket_path: str) -> None:
        self.port = free_port()
        self.tls_port = free_port()
        config = directory / 'nginx.conf'
        config.write_text(CONFIG.format(
            dir=directory, backend_port=backend_port, socket=socket_path, port=self.port,
            tls_port=self.tls_port, cert=certs.server_cert, key=certs.server_key,
            tcp_location=LOCATION.format(upstream='tcp_backend'),
            unix_location=LOCATION.format(upstream='unix_backend')))
        assert NGINX is not None
        self.process = subprocess.Popen([NGINX, '-c', str(config), '-p', str(directory)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.tls_port), 0.5).close()
                socket.create_connection(('127.0.0.1', self.port), 0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    assert self.process.stderr is not None
                    pytest.fail(f'nginx did not start: {self.process.stderr.read()!r}')
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(TIMEOUT)


@pytest.fixture(params=['Server', 'AsyncServer'])
def proxied(request: pytest.FixtureRequest, tmp_path: Path,
            certs: Certs) -> Iterator[tuple[Nginx, Backend, Backend]]:
    if NGINX is None:
        pytest.skip('nginx is not installed (Debian package nginx-light; .ci/run installs it)')
    base = wspy.Server if request.param == 'Server' else wspy.AsyncServer
    server_class = type('ProxiedBackend', (Backend, base), {})
    socket_path = str(tmp_path / 'backend.sock')
    options = {'ping_interval': None, **LIMITS}
    tcp = server_class(('127.0.0.1', 0), trusted_proxies=['127.0.0.1'], **options)
    unix = server_class(socket_path, trusted_proxies=['unix'], **options)
    tcp.start()
    unix.start()
    nginx = Nginx(tmp_path, certs, tcp.address[1], socket_path)
    yield nginx, tcp, unix
    nginx.stop()
    tcp.shutdown()
    unix.shutdown()


def routes(nginx: Nginx, certs: Certs) -> list[tuple[str, dict[str, Any]]]:
    """Each way through nginx: ws to TCP, ws to the Unix socket, wss to TCP."""
    return [(f'ws://127.0.0.1:{nginx.port}/chat', {}),
            (f'ws://127.0.0.1:{nginx.port}/unix/chat', {}),
            (f'wss://localhost:{nginx.tls_port}/chat', {'ssl_args': {'cafile': str(certs.ca)}})]


def test_messages_pings_and_close_pass_through(proxied: Any, certs: Certs) -> None:
    nginx, tcp, unix = proxied
    large = bytes(range(256)) * (4 << 12)  # 4 MiB
    for target, options in routes(nginx, certs):
        conn = wspy.connect(target, connection_class=PingRecorder, ping_interval=None,
                            **LIMITS, **options)
        conn.sock.settimeout(TIMEOUT)
        conn.send('hello through nginx')
        assert conn.recv().payload == 'hello through nginx'
        conn.send(large)
        assert conn.recv().payload == large
        conn.send_ping(b'client ping')
        conn.send('after the ping')
        assert conn.recv().payload == 'after the ping'
        assert conn.pongs == [b'client ping']
        conn.close(4001, 'done')
        assert conn.close_code == 4001
    tcp.wait_closes(2)
    unix.wait_closes(1)
    assert [e[1:] for e in tcp.events + unix.events if e[0] == 'close'] == [
        (4001, 'done')] * 3
    assert [e[1] for e in tcp.events if e[0] == 'open'] == ['/chat', '/chat']
    assert [e[1] for e in unix.events if e[0] == 'open'] == ['/unix/chat']


def test_server_ping_and_close_reach_the_client(proxied: Any, certs: Certs) -> None:
    nginx, tcp, unix = proxied
    for target, options in routes(nginx, certs):
        conn = wspy.connect(target, connection_class=PingRecorder, ping_interval=None,
                            **options)
        conn.sock.settimeout(TIMEOUT)
        conn.send('hi')
        assert conn.recv().payload == 'hi'
        for client in [*tcp.clients, *unix.clients]:
            client.send_ping(b'server ping')
        conn.send('close')
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()
        assert conn.pings == [b'server ping']
        assert (conn.close_code, conn.close_reason) == (4002, 'closed by the server')
        # The next route pings every client: this one must be gone from the servers first.
        assert eventually(lambda: not [*tcp.clients, *unix.clients])
    assert tcp.pongs + unix.pongs == [b'server ping'] * 3


def test_client_address_comes_from_the_trusted_proxy(proxied: Any, certs: Certs) -> None:
    nginx, _, _ = proxied
    for target, options in routes(nginx, certs):
        # From 127.0.0.2, with a forged header: nginx appends the real address.
        conn = wspy.connect(target, source_address=('127.0.0.2', 0),
                            headers=[('X-Forwarded-For', '203.0.113.66')], **options)
        conn.sock.settimeout(TIMEOUT)
        conn.send('who')
        assert conn.recv().payload == '127.0.0.2', target
        conn.close()


def test_many_clients_at_once(proxied: Any) -> None:
    nginx, _, _ = proxied
    errors: list[BaseException] = []

    def talk(number: int) -> None:
        try:
            with wspy.connect(f'ws://127.0.0.1:{nginx.port}/chat', ping_interval=None) as conn:
                conn.sock.settimeout(TIMEOUT)
                for round_ in range(20):
                    conn.send(f'{number}:{round_}')
                    assert conn.recv().payload == f'{number}:{round_}'
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=talk, args=(number,)) for number in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert errors == []
