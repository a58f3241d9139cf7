"""Interoperability with the `websockets` library, both ways, with and without compression."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.sync.client import connect as websockets_connect
from websockets.sync.server import serve as websockets_serve

import wspy

from conftest import EchoServer, url


@pytest.fixture
def websockets_server() -> Iterator[tuple[int, list]]:
    """A websockets echo server with permessage-deflate; yields its port and close events."""
    closes: list = []

    def echo(ws) -> None:
        try:
            for message in ws:
                ws.send(message)
        except WebsocketsClosed:
            pass
        closes.append((ws.close_code, ws.close_reason))

    server = websockets_serve(echo, '127.0.0.1', 0, compression='deflate')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.socket.getsockname()[1], closes
    server.shutdown()
    thread.join(5)


@pytest.mark.parametrize('compressed', [True, False], ids=['deflate', 'plain'])
def test_wspy_client_to_websockets_server(websockets_server, compressed: bool) -> None:
    port, closes = websockets_server
    pongs = []

    class Client(wspy.Connection):
        def onpong(self, payload: bytes) -> None:
            pongs.append(payload)

    extensions = [wspy.DeflateMessage()] if compressed else []
    conn = wspy.connect(f'ws://127.0.0.1:{port}/', extensions=extensions,
                        connection_class=Client)
    negotiated = dict(conn.sock.response_headers).get('Sec-WebSocket-Extensions', '')
    assert negotiated.startswith('permessage-deflate') == compressed
    assert len(conn.sock.hooks) == int(compressed)
    for message in ['hello', 'ünïcödé ' * 500, b'\x00\xff' * 40000, b'']:
        conn.send(message)
        assert conn.recv().payload == message
    conn.send('fragmented across frames', fragment_size=4)
    assert conn.recv().payload == 'fragmented across frames'
    conn.send_ping(b'ping?')
    conn.send('after the ping')
    assert conn.recv().payload == 'after the ping'
    assert pongs == [b'ping?']
    conn.close(4001, 'done')
    assert conn.close_code == 4001
    for _ in range(50):
        if closes:
            break
        threading.Event().wait(0.05)
    assert closes == [(4001, 'done')]


@pytest.mark.parametrize('compressed', [True, False], ids=['deflate', 'plain'])
def test_websockets_client_to_wspy_servers(serve, compressed: bool) -> None:
    server = serve(EchoServer, extensions=[wspy.DeflateMessage()])
    with websockets_connect(url(server), compression='deflate' if compressed else None) as ws:
        header = ws.response.headers.get('Sec-WebSocket-Extensions') or ''
        assert header.startswith('permessage-deflate') == compressed
        for message in ['hello', 'ünïcödé ' * 500, b'\x00\xff' * 40000, b'']:
            ws.send(message)
            assert ws.recv() == message
        ws.send(['frag', 'men', 'ted'])  # one message in three frames
        assert ws.recv() == 'fragmented'
        assert ws.ping(b'ping!').wait(5)
        ws.close(4002, 'bye')
    assert server.wait_closes(1) == [('close', 4002, 'bye')]
    assert ('ping', b'ping!') in server.events


def test_websockets_client_gets_wspy_close_codes(serve) -> None:
    class Closing(EchoServer):
        def onmessage(self, client, message):
            client.close(4003, 'server says goodbye')

    server = serve(Closing)
    with websockets_connect(url(server)) as ws:
        ws.send('close me')
        with pytest.raises(WebsocketsClosed):
            ws.recv()
        assert (ws.close_code, ws.close_reason) == (4003, 'server says goodbye')


def test_wss_both_ways(serve, certs) -> None:
    """TLS against another implementation: websockets' client to wspy's servers, and
    wspy's client to a websockets server, each checking the other's certificate."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)
    client_context = ssl.create_default_context(cafile=str(certs.ca))
    server = serve(ssl_context=server_context, max_message_size=None, max_frame_size=None)
    big = bytes(range(256)) * 8192
    with websockets_connect(f'wss://localhost:{server.address[1]}/', ssl=client_context,
                            max_size=None) as ws:
        ws.send('secure text')
        assert ws.recv() == 'secure text'
        ws.send(big)
        assert ws.recv() == big
    websockets_server = websockets_serve(lambda ws: [ws.send(m) for m in ws], '127.0.0.1', 0,
                                         ssl=server_context)
    thread = threading.Thread(target=websockets_server.serve_forever, daemon=True)
    thread.start()
    try:
        port = websockets_server.socket.getsockname()[1]
        conn = wspy.connect(f'wss://localhost:{port}/', ssl_context=client_context)
        conn.send('to websockets over TLS')
        assert conn.recv().payload == 'to websockets over TLS'
        conn.close()
    finally:
        websockets_server.shutdown()
        thread.join(5)
