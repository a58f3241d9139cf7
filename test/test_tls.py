"""wss://: TLS on every server kind, the client and the raw `websocket`."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest

import wspy
from wspy import loop

from certs import Certs
from conftest import SERVERS, assert_echoes, in_threads, server_factory


def server_tls(certs: Certs, **extra: object) -> dict[str, object]:
    """`ssl_args` for a server with the test certificate."""
    return {'certfile': str(certs.server_cert), 'keyfile': str(certs.server_key), **extra}


def trusting(certs: Certs, **extra: object) -> dict[str, object]:
    """`ssl_args` for a client that trusts the test CA."""
    return {'cafile': str(certs.ca), **extra}


def wss(server: wspy.BaseServer, host: str = 'localhost') -> str:
    return f'wss://{host}:{server.address[1]}/'


def test_echo_text_binary_and_large_messages(serve, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs), max_message_size=None, max_frame_size=None)
    conn = wspy.connect(wss(server), ssl_args=trusting(certs), max_message_size=None,
                        max_frame_size=None)
    try:
        assert conn.sock.ssl_object is not None
        assert conn.sock.ssl_object.version() in ('TLSv1.2', 'TLSv1.3')
        conn.send('héllo')
        assert conn.recv().payload == 'héllo'
        conn.send(b'\x00\x01')
        assert conn.recv().payload == b'\x00\x01'
        big = os.urandom(6 << 20)
        conn.send(big)
        assert conn.recv().payload == big
    finally:
        conn.close()
    assert server.wait_closes(1)[0][1] == 1000


def test_many_clients_at_once(serve, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs))

    def client(number: int) -> None:
        conn = wspy.connect(wss(server), ssl_args=trusting(certs))
        for i in range(20):
            conn.send(f'{number}-{i}')
            assert conn.recv().payload == f'{number}-{i}'
        conn.close()

    in_threads(client, 20)


def test_sending_while_another_thread_receives(serve, certs: Certs) -> None:
    """OpenSSL forbids concurrent use of one session: here a blocked receiver (which
    also answers pings), three senders and the keepalive thread share one."""
    server = serve(ssl_args=server_tls(certs), ping_interval=0.01)
    conn = wspy.connect(wss(server), ssl_args=trusting(certs), ping_interval=0.01)
    received: list[object] = []

    def receive() -> None:
        try:
            while True:
                received.append(conn.recv().payload)
        except wspy.ConnectionClosed:
            pass

    reader = threading.Thread(target=receive)
    reader.start()
    in_threads(lambda k: [conn.send(f'{k}:{i}') for i in range(200)], 3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            len(received) < 600 or conn.latency is None
            or any(client.latency is None for client in server.clients)):
        time.sleep(0.01)
    assert sorted(received) == sorted(f'{k}:{i}' for k in range(3) for i in range(200))
    assert conn.latency is not None  # pings went both ways through the same sessions
    assert all(client.latency is not None for client in server.clients)
    conn.close()
    reader.join(10)


def test_client_certificates_required(serve, certs: Certs) -> None:
    seen: list[object] = []

    class Recorder:
        def onopen(self, client: wspy.ServerConnection) -> None:
            seen.append(client.sock.getpeercert())

    server = serve(ssl_args=server_tls(certs, cafile=str(certs.ca)))
    with pytest.raises((wspy.SSLError, wspy.HandshakeError)):
        wspy.connect(wss(server), ssl_args=trusting(certs))
    conn = wspy.connect(wss(server), ssl_args=trusting(
        certs, certfile=str(certs.client_cert), keyfile=str(certs.client_key)))
    conn.send('with a certificate')
    assert conn.recv().payload == 'with a certificate'
    conn.close()
    server.shutdown()
    # The same check from the application's side, on every server kind.
    for base, options in SERVERS.values():
        recorder = server_factory(base, options)(
            type('CertServer', (Recorder, base), {}),
            ssl_args=server_tls(certs, cafile=str(certs.ca)))
        recorder.start()
        try:
            conn = wspy.connect(wss(recorder), ssl_args=trusting(
                certs, certfile=str(certs.client_cert), keyfile=str(certs.client_key)))
            conn.close()
        finally:
            recorder.shutdown()
    assert len(seen) == len(SERVERS)
    for cert in seen:
        assert cert is not None
        assert dict(pair[0] for pair in cert['subject'])['commonName'] == 'wspy test client'


def test_client_refuses_a_wrong_host_name_or_an_unknown_ca(serve, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs))
    with pytest.raises(wspy.SSLError, match='certificate verify failed'):
        wspy.connect(wss(server), ssl_args=trusting(certs), server_hostname='wrong.example')
    with pytest.raises(wspy.SSLError, match='certificate verify failed'):
        wspy.connect(wss(server), ssl_args={'cafile': str(certs.other_ca)})
    with pytest.raises(wspy.SSLError):  # the system CAs do not know the test CA
        wspy.connect(wss(server))
    conn = wspy.connect(wss(server, '127.0.0.1'), ssl_args=trusting(certs))  # IP in the cert
    conn.close()
    conn = wspy.connect(wss(server), ssl_args={'verify': False})
    conn.close()
    context = ssl.create_default_context(cafile=str(certs.ca))
    conn = wspy.connect(wss(server), ssl_context=context)
    conn.close()
    assert_echoes(server)


def test_plain_http_to_the_tls_port_gets_a_plain_400(serve, raw_client, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs))
    client = raw_client(server)
    client.send(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    answer = client.read_to_eof()
    assert answer.startswith(b'HTTP/1.1 400 '), answer[:100]
    assert b'speaks TLS' in answer
    with pytest.raises(wspy.HandshakeError):
        wspy.connect(f'ws://127.0.0.1:{server.address[1]}/')
    assert_echoes(server)


def test_tls_to_the_plain_port(serve) -> None:
    server = serve()
    with pytest.raises(wspy.SSLError):
        wspy.connect(f'wss://127.0.0.1:{server.address[1]}/', ssl_args={'verify': False})
    assert_echoes(server)


def test_stalled_tls_handshake_times_out(serve, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs), handshake_timeout=0.3)
    sock = socket.create_connection(('127.0.0.1', server.address[1]), timeout=5)
    sock.sendall(b'\x16\x03\x01')  # the start of a ClientHello, then nothing
    start = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    assert time.monotonic() - start < 3
    sock.close()
    assert_echoes(server)


def test_data_left_inside_tls_is_read(monkeypatch, certs: Certs) -> None:
    """With a read buffer smaller than what TLS decrypts, the rest is still read
    at once, not when more bytes happen to arrive (the "one message behind" bug)."""
    monkeypatch.setattr(loop, 'RECEIVE_BUFFER_SIZE', 100)
    server = server_factory(wspy.AsyncServer, {})(ssl_args=server_tls(certs))
    server.start()
    try:
        conn = wspy.connect(wss(server), ssl_args=trusting(certs))
        frames = [wspy.Frame(wspy.OPCODE_TEXT, f'message {i}'.encode() * 5, os.urandom(4))
                  for i in range(40)]
        conn.sock.send(*frames)  # one write: a few TLS records holding 40 frames
        conn.sock.settimeout(5)
        for i in range(40):
            assert conn.recv().payload == f'message {i}' * 5
        conn.close()
    finally:
        server.shutdown()


def test_raw_websocket_over_tls(certs: Certs) -> None:
    listener = wspy.websocket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    listener.enable_ssl(server_side=True, certfile=str(certs.server_cert),
                        keyfile=str(certs.server_key))
    accepted: list[wspy.websocket] = []

    def serve_one() -> None:
        sock, _ = listener.accept()
        accepted.append(sock)
        frame = sock.recv()
        sock.send(wspy.Frame(wspy.OPCODE_TEXT, frame.payload.upper()))

    thread = threading.Thread(target=serve_one)
    thread.start()
    client = wspy.websocket(host='localhost')
    client.enable_ssl(cafile=str(certs.ca))
    client.connect(('127.0.0.1', listener.getsockname()[1]))
    assert isinstance(client, socket.socket)
    client.send(wspy.Frame(wspy.OPCODE_TEXT, b'hello', os.urandom(4)))
    assert client.recv().payload == b'HELLO'
    thread.join(10)
    assert accepted[0].ssl_object is not None
    assert client.getpeercert()['subject'][0][0][1] == 'localhost'
    with pytest.raises(wspy.InvalidState):
        client.enable_ssl()
    client.close()
    accepted[0].close()
    listener.close()


def test_ssl_args_are_checked() -> None:
    with pytest.raises(TypeError, match='certfile'):
        wspy.Server(('127.0.0.1', 0), ssl_args={'keyfile': 'x'})
    with pytest.raises(TypeError, match='unknown ssl_args: certfiel'):
        wspy.AsyncServer(('127.0.0.1', 0), ssl_args={'certfiel': 'x'})
    with pytest.raises(TypeError, match='not both'):
        wspy.Server(('127.0.0.1', 0), ssl_args={'certfile': 'x'},
                    ssl_context=ssl.create_default_context())


def test_max_connections_over_tls_disconnects_the_extra_client(serve, certs: Certs) -> None:
    server = serve(ssl_args=server_tls(certs), max_connections=1)
    first = wspy.connect(wss(server), ssl_args=trusting(certs))
    with pytest.raises((wspy.SSLError, wspy.HandshakeError, OSError)):
        wspy.connect(wss(server), ssl_args=trusting(certs))
    first.send('the first is served')
    assert first.recv().payload == 'the first is served'
    first.close()


def test_sni_is_sent(serve, certs: Certs) -> None:
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    server = serve(ssl_context=context)
    port = server.address[1]
    wspy.connect(f'wss://127.0.0.1:{port}/', ssl_args=trusting(certs),
                 server_hostname='localhost').close()
    wspy.connect(f'wss://localhost:{port}/', ssl_args=trusting(certs)).close()
    wspy.connect(f'wss://127.0.0.1:{port}/', ssl_args=trusting(certs)).close()
    assert names == ['localhost', 'localhost', None]  # no SNI for an IP address
