"""Size limits: frames follow `max_message_size`, compressed frames are judged inflated."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.sync.client import connect as websockets_connect
from websockets.sync.server import serve as websockets_serve

import wspy
from wspy.asyncclient import AsyncClient
from wspy.protocol.deflate_message import DeflateHook
from wspy.protocol.frame import (DEFAULT_MAX_SIZE, MESSAGE_LIMIT, OPCODE_BINARY, Frame, FrameParser,
                                 compressed_size_bound)

from conftest import TIMEOUT, running, server_factory, url

MiB = 1 << 20
# One of each kind of server is enough here: the limits are set where both share code.
KINDS = {'Server': wspy.Server, 'AsyncServer': wspy.AsyncServer}
NO_KEEPALIVE = {'ping_interval': None}


@pytest.fixture(params=list(KINDS))
def serve(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start an echo server of each kind in turn."""
    with running(server_factory(KINDS[request.param], NO_KEEPALIVE)) as start:
        yield start


# -- (10) the frame limit follows the message limit -------------------------------------


def test_raised_message_limit_raises_the_frame_limit(serve: Any) -> None:
    server = serve(max_message_size=4 * MiB)
    message = os.urandom(2 * MiB)  # one frame over the default 1 MiB
    with wspy.connect(url(server), max_message_size=4 * MiB, **NO_KEEPALIVE) as conn:
        conn.send(message)
        assert conn.recv().payload == message  # the client's frame limit followed too


def test_no_message_limit_means_no_frame_limit(serve: Any) -> None:
    server = serve(max_message_size=None)
    message = os.urandom(2 * MiB)
    with wspy.connect(url(server), max_message_size=None, **NO_KEEPALIVE) as conn:
        conn.send(message)
        assert conn.recv().payload == message


def test_a_given_max_frame_size_still_applies(serve: Any) -> None:
    server = serve(max_message_size=4 * MiB, max_frame_size=MiB)
    message = os.urandom(2 * MiB)
    with wspy.connect(url(server), max_message_size=4 * MiB, **NO_KEEPALIVE) as conn:
        conn.send(message, fragment_size=MiB)  # frames within the limit: accepted
        assert conn.recv().payload == message
        conn.send(message)
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()
        assert conn.close_code == 1009
    assert server.wait_closes(1)[0][1] == 1009


def test_a_client_sending_a_frame_far_over_the_limit_reads_1009(serve: Any) -> None:
    """The server reads and drops the rest of a refused frame while it closes (within
    close_timeout), so the client's write ends and it reads the 1009, not a reset."""
    server = serve(max_message_size=MiB)
    message = bytes(8 * MiB)  # more than the kernel's buffers of both sides hold
    with wspy.connect(url(server), max_message_size=None, **NO_KEEPALIVE) as conn:
        conn.send(message)
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()
        assert conn.close_code == 1009
    assert server.wait_closes(1)[0][1] == 1009


def test_default_limits_still_refuse_a_big_frame(serve: Any) -> None:
    server = serve()
    with wspy.connect(url(server), max_message_size=None, **NO_KEEPALIVE) as conn:
        conn.send(bytes(DEFAULT_MAX_SIZE + 1))
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()
        assert conn.close_code == 1009


class BigReceiver(AsyncClient):
    """Records the first message's size and the close."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: list[tuple[Any, ...]] = []
        self.done = threading.Event()

    def onopen(self, client: wspy.AsyncConnection) -> None:
        client.send(b'x' * (2 * MiB))

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        self.events.append(('message', len(message.payload)))
        client.close()

    def onclose(self, client: wspy.AsyncConnection, code: int, reason: str) -> None:
        self.events.append(('close', code))
        self.done.set()

    def onconnecterror(self, connecting: Any, error: Exception) -> None:
        self.events.append(('failed', error))
        self.done.set()


def test_async_client_frame_limit_follows_its_message_limit(serve: Any) -> None:
    server = serve(max_message_size=4 * MiB)
    client = BigReceiver(max_message_size=4 * MiB, **NO_KEEPALIVE)
    client.start()
    try:
        client.connect(url(server))
        assert client.done.wait(TIMEOUT)
    finally:
        client.shutdown()
    assert client.events == [('message', 2 * MiB), ('close', 1000)]


def test_plain_connection_over_a_websocket() -> None:
    listener = wspy.websocket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    message = os.urandom(2 * MiB)
    received: list[bytes] = []

    def serve_one() -> None:
        sock, _ = listener.accept()
        conn = wspy.Connection(sock, max_message_size=4 * MiB, **NO_KEEPALIVE)
        received.append(conn.recv().payload)
        conn.close()

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        client = wspy.websocket()
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        conn = wspy.Connection(client, **NO_KEEPALIVE)
        conn.send(message)
        thread.join(TIMEOUT)
        assert received == [message]
    finally:
        listener.close()


def test_raw_websocket_keeps_the_default_frame_limit() -> None:
    a, b = socket.socketpair()
    sock = wspy.websocket(fileno=a.detach())
    try:
        sock.opened(False)
        assert sock.parser is not None and sock.parser.max_frame_size == DEFAULT_MAX_SIZE
        assert sock.max_frame_size is MESSAGE_LIMIT
    finally:
        sock.close()
        b.close()


# -- (11) compressed frames are judged by what they inflate to ----------------------------


def test_parser_bounds_a_compressed_frame_by_deflate_growth() -> None:
    limit = 1000
    bound = compressed_size_bound(limit)
    assert limit + 5 * (limit // 128 + 1) <= bound <= 2 * limit  # memory level 1 still fits

    def parse(size: int, rsv1: bool, rsv_allowed: int = 0x40) -> Frame | None:
        parser = FrameParser(max_frame_size=limit, rsv_allowed=rsv_allowed)
        parser.feed(Frame(OPCODE_BINARY, bytes(size), rsv1=rsv1).pack())
        return parser.next_frame()

    frame = parse(bound, rsv1=True)
    assert frame is not None and frame.rsv1 and len(frame.payload) == bound
    with pytest.raises(wspy.PayloadTooBig):
        parse(bound + 1, rsv1=True)
    with pytest.raises(wspy.PayloadTooBig):
        parse(limit + 1, rsv1=False)  # not compressed: the limit itself
    with pytest.raises(wspy.ProtocolError):
        parse(limit + 1, rsv1=True, rsv_allowed=0)  # RSV1 without an extension


def test_incompressible_message_is_sent_uncompressed() -> None:
    def hook() -> DeflateHook:
        return DeflateHook(compress_bits=15, compress_reset=False, decompress_bits=15,
                           decompress_reset=False, threshold=32, level=6, mem_level=5)
    sender, receiver = hook(), hook()
    noise = os.urandom(100000)
    frame = sender.send(Frame(OPCODE_BINARY, noise))
    assert not frame.rsv1 and frame.payload == noise
    # The context goes on without the noise: later messages still inflate right.
    for _ in range(2):
        text = b'words that repeat, words that repeat ' * 50
        frame = sender.send(Frame(OPCODE_BINARY, text))
        assert frame.rsv1 and receiver.recv(frame, None).payload == text


@pytest.mark.parametrize('size', [MiB - 1000, MiB], ids=['1MiB-1000', 'max_message_size'])
def test_compressed_random_message_within_the_limit_is_echoed(serve: Any, size: int) -> None:
    server = serve(extensions=[wspy.DeflateMessage()])
    message = os.urandom(size)
    with websockets_connect(url(server), open_timeout=TIMEOUT) as ws:  # compresses
        assert 'permessage-deflate' in ws.response.headers['Sec-WebSocket-Extensions']
        ws.send(message)
        assert ws.recv(TIMEOUT) == message
    assert server.wait_closes(1)[0][1] == 1000


def test_compressed_message_inflating_over_the_limit_is_refused(serve: Any) -> None:
    server = serve(extensions=[wspy.DeflateMessage()])
    with websockets_connect(url(server), open_timeout=TIMEOUT, max_size=None) as ws:
        ws.send(bytes(MiB + 1))  # compresses to about 1 KiB
        with pytest.raises(WebsocketsClosed):
            ws.recv(TIMEOUT)
        assert ws.close_code == 1009
    assert server.wait_closes(1)[0][1] == 1009


@pytest.fixture
def websockets_sender() -> Iterator[tuple[int, list[bytes]]]:
    """A websockets server (permessage-deflate) sending each message queued, on connect."""
    outgoing: list[bytes] = []

    def handler(ws: Any) -> None:
        try:
            for message in outgoing:
                ws.send(message)
            for _ in ws:
                pass
        except WebsocketsClosed:
            pass

    server = websockets_serve(handler, '127.0.0.1', 0, compression='deflate', max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.socket.getsockname()[1], outgoing
    server.shutdown()
    thread.join(TIMEOUT)


def test_client_receives_a_compressed_random_message(websockets_sender: Any) -> None:
    port, outgoing = websockets_sender
    message = os.urandom(MiB)
    outgoing.append(message)
    with wspy.connect(f'ws://127.0.0.1:{port}/', extensions=[wspy.DeflateMessage()],
                      **NO_KEEPALIVE) as conn:
        assert conn.sock.hooks
        assert conn.recv().payload == message


def test_client_refuses_a_message_inflating_over_the_limit(websockets_sender: Any) -> None:
    port, outgoing = websockets_sender
    outgoing.append(bytes(MiB + 1))
    with wspy.connect(f'ws://127.0.0.1:{port}/', extensions=[wspy.DeflateMessage()],
                      **NO_KEEPALIVE) as conn:
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()
        assert conn.close_code == 1009
