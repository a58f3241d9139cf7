"""End to end over real sockets: the servers with wspy's client and raw clients."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wspy
import wspy.keepalive
import wspy.loop

from conftest import (SERVERS, EchoServer, assert_echoes, in_threads, running, server_factory,
                      upgrade_request, url)

BIG = 32 << 20


@pytest.mark.parametrize('size', [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20])
def test_binary_echo(serve, size: int) -> None:
    server = serve(max_message_size=BIG, max_frame_size=BIG)
    payload = os.urandom(size)
    with_limits = {'max_message_size': BIG, 'max_frame_size': BIG}
    conn = wspy.connect(url(server), **with_limits)
    conn.send(payload)
    message = conn.recv()
    assert isinstance(message, wspy.BinaryMessage) and message.payload == payload
    conn.close()


@pytest.mark.parametrize('size', [0, 1, 126, 70000, 4 << 20])
def test_text_echo(serve, size: int) -> None:
    server = serve(max_message_size=BIG, max_frame_size=BIG)
    text = ('aé€😀' * (size // 10 + 1))[:size]
    conn = wspy.connect(url(server), max_message_size=BIG, max_frame_size=BIG)
    conn.send(text)
    message = conn.recv()
    assert isinstance(message, wspy.TextMessage) and message.payload == text
    conn.close()


def test_fragmented_messages_both_ways(serve) -> None:
    class Fragmenting(EchoServer):
        def onmessage(self, client, message):
            client.send(message, fragment_size=5)

    server = serve(Fragmenting)
    conn = wspy.connect(url(server))
    text = 'fragments with multibyte ☃☃☃ characters split across frames'
    conn.send(text, fragment_size=3)
    assert conn.recv().payload == text
    conn.send(b'\x00' * 1000, fragment_size=7)
    assert conn.recv().payload == b'\x00' * 1000
    conn.close()


def test_pings_between_fragments(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    assert client.handshake()[0] == 101
    client.send_frame(wspy.OPCODE_TEXT, b'Hello, ', final=False)
    client.send_frame(wspy.OPCODE_PING, b'ping-1')
    client.send_frame(wspy.OPCODE_CONTINUATION, b'fragmented ', final=False)
    client.send_frame(wspy.OPCODE_PING, b'ping-2')
    client.send_frame(wspy.OPCODE_CONTINUATION, b'world')
    frames = [client.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in frames] == [
        (wspy.OPCODE_PONG, b'ping-1'), (wspy.OPCODE_PONG, b'ping-2'),
        (wspy.OPCODE_TEXT, b'Hello, fragmented world')]
    assert all(not f.masked for f in frames)
    assert ('ping', b'ping-1') in server.events


def test_client_ping_gets_pong(serve) -> None:
    server = serve()
    pongs = []

    class Recording(wspy.Connection):
        def onpong(self, payload):
            pongs.append(payload)

    conn = wspy.connect(url(server), connection_class=Recording)
    conn.send_ping(b'are you there')
    conn.send('after the ping')
    assert conn.recv().payload == 'after the ping'
    assert pongs == [b'are you there']
    with pytest.raises(wspy.PingError):
        conn.send_ping(b'x' * 126)
    conn.close()


def test_close_from_the_client(serve) -> None:
    server = serve()
    conn = wspy.connect(url(server))
    conn.close(4001, 'done here')
    assert conn.closed and conn.close_code == 4001 and conn.close_reason == ''
    assert server.wait_closes(1) == [('close', 4001, 'done here')]
    with pytest.raises(wspy.ConnectionClosed):
        conn.send('too late')
    with pytest.raises(wspy.ConnectionClosedError):
        conn.recv()


def test_close_from_the_server(serve) -> None:
    class Closing(EchoServer):
        def onmessage(self, client, message):
            client.close(wspy.CLOSE_POLICY_VIOLATION, 'go away')

    server = serve(Closing)
    conn = wspy.connect(url(server))
    conn.send('please close')
    with pytest.raises(wspy.ConnectionClosedError) as info:
        conn.recv()
    assert (info.value.code, info.value.reason) == (1008, 'go away')
    assert server.wait_closes(1) == [('close', 1008, '')]


def test_normal_close_raises_connection_closed_ok(serve) -> None:
    class Closing(EchoServer):
        def onmessage(self, client, message):
            client.close()

    conn = wspy.connect(url(serve(Closing)))
    conn.send('bye')
    with pytest.raises(wspy.ConnectionClosedOK):
        conn.recv()


def test_messages_sent_before_close_arrive_first(serve) -> None:
    class Burst(EchoServer):
        def onmessage(self, client, message):
            for i in range(100):
                client.send(str(i))
            client.close(1000, 'after the burst')

    conn = wspy.connect(url(serve(Burst)))
    conn.send('go')
    received = []
    with pytest.raises(wspy.ConnectionClosedOK):
        while True:
            received.append(conn.recv().payload)
    assert received == [str(i) for i in range(100)]
    assert conn.close_reason == 'after the burst'


def test_many_concurrent_clients(serve) -> None:
    server = serve()

    def client(n: int) -> None:
        conn = wspy.connect(url(server, f'/client/{n}'))
        for i in range(20):
            conn.send(f'{n}:{i}')
            assert conn.recv().payload == f'{n}:{i}'
        conn.close()

    in_threads(client, 50)
    assert len(server.wait_closes(50)) == 50
    assert sorted(e[1] for e in server.events if e[0] == 'open') == \
        sorted(f'/client/{n}' for n in range(50))


def test_sends_from_many_threads_arrive_intact(serve) -> None:
    server = serve(max_message_size=BIG)
    conn = wspy.connect(url(server), max_message_size=BIG)
    senders, per_sender = 8, 40

    def sender(n: int) -> None:
        for i in range(per_sender):
            conn.send(chr(65 + n) * (5000 + i), fragment_size=1000)
            if i % 10 == 0:
                conn.send_ping(b'x')

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    received = [conn.recv().payload for _ in range(senders * per_sender)]
    for thread in threads:
        thread.join()
    for text in received:
        assert text == text[0] * len(text)  # no frames of another message inside
    assert sorted((t[0], len(t)) for t in received) == sorted(
        (chr(65 + n), 5000 + i) for n in range(senders) for i in range(per_sender))
    conn.close()


def test_server_sends_from_worker_threads(serve) -> None:
    class Pushing(EchoServer):
        def onopen(self, client):
            def push(n):
                for i in range(50):
                    client.send(f'{n}-{i}')
            for n in range(4):
                threading.Thread(target=push, args=(n,)).start()

    conn = wspy.connect(url(serve(Pushing)))
    received = {conn.recv().payload for _ in range(200)}
    assert received == {f'{n}-{i}' for n in range(4) for i in range(50)}
    conn.close()


def test_second_receiving_thread_gets_concurrency_error(serve) -> None:
    conn = wspy.connect(url(serve()))
    def receive() -> None:
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()

    receiver = threading.Thread(target=receive)
    receiver.start()
    time.sleep(0.2)
    with pytest.raises(wspy.ConcurrencyError):
        conn.recv()
    conn.close()
    receiver.join(5)
    assert not receiver.is_alive()


def test_client_vanishing_mid_frame_leaves_others_served(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    client.send(wspy.Frame(wspy.OPCODE_BINARY, b'x' * 1000, b'abcd').pack()[:500])
    client.close()
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_ABNORMAL
    assert_echoes(server)


def test_client_reset_is_handled(serve, raw_client) -> None:
    server = serve()
    client = raw_client(server)
    client.handshake()
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    client.close()
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_ABNORMAL
    assert_echoes(server)


def test_exception_in_callback_goes_to_onerror(serve) -> None:
    class Broken(EchoServer):
        def onmessage(self, client, message):
            if message.payload == 'boom':
                raise RuntimeError('application bug')
            client.send(message)

    server = serve(Broken)
    conn = wspy.connect(url(server))
    conn.send('boom')
    conn.send('fine')
    assert conn.recv().payload == 'fine'
    errors = [e[1] for e in server.events if e[0] == 'error']
    assert len(errors) == 1 and str(errors[0]) == 'application bug'
    conn.close()


def test_request_details_and_subprotocol(serve) -> None:
    seen = {}

    class Inspecting(EchoServer):
        def onopen(self, client):
            seen.update(path=client.request.path, query=client.request.query_params,
                        cookie=client.request.headers.get('Cookie'), protocol=client.protocol)

    server = serve(Inspecting, protocols=['v2', 'v1'], headers={'X-Served-By': 'wspy'})
    conn = wspy.connect(url(server, '/room?name=a&name=b'), protocols=['v1', 'v2'],
                        headers=[('Cookie', 'session=42')])
    assert conn.protocol == 'v2'
    assert ('X-Served-By', 'wspy') in conn.sock.response_headers
    conn.send('x')
    conn.recv()
    assert seen == {'path': '/room', 'query': {'name': ['a', 'b']}, 'cookie': 'session=42',
                    'protocol': 'v2'}
    conn.close()


def test_shutdown_closes_clients_with_1001(serve) -> None:
    server = serve()
    conns = [wspy.connect(url(server)) for _ in range(5)]
    codes = []

    def receive(conn: wspy.Connection) -> None:
        try:
            conn.recv()
        except wspy.ConnectionClosedOK as closed:
            codes.append(closed.code)

    threads = [threading.Thread(target=receive, args=(conn,)) for conn in conns]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 1.5  # close handshakes done, not max_join_time
    for thread in threads:
        thread.join(5)
    assert codes == [wspy.CLOSE_GOING_AWAY] * 5
    assert server.wait_closes(5) == [('close', 1001, '')] * 5
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', server.address[1]), timeout=1)


def test_shutdown_drops_clients_that_never_answer(serve, raw_client) -> None:
    server = serve(max_join_time=0.5)
    client = raw_client(server)
    client.handshake()  # and never answers the close
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 5
    assert client.recv_close() == (1001, 'server shutting down')
    # RFC 6455 7.1.5: no close frame received means close code 1006.
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_ABNORMAL


def test_shutdown_from_a_callback(serve) -> None:
    class Stopping(EchoServer):
        def onmessage(self, client, message):
            self.shutdown()

    server = serve(Stopping)
    conn = wspy.connect(url(server))
    conn.send('stop')
    with pytest.raises(wspy.ConnectionClosedOK):
        conn.recv()
    assert server._stopped.wait(5)


def test_stalled_handshake_times_out_without_blocking_others(serve, raw_client) -> None:
    server = serve(handshake_timeout=0.5)
    stalled = raw_client(server)
    stalled.send(upgrade_request()[:20])
    assert_echoes(server)
    started = time.monotonic()
    answer = stalled.read_to_eof()
    assert answer.startswith(b'HTTP/1.1 408 ') and time.monotonic() - started < 3


def test_context_manager_and_port_zero(make_server) -> None:
    with make_server() as server:
        assert server.address[1] > 0
        server.start()
        assert_echoes(server)
    with make_server() as unused:
        port = unused.address[1]
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', port), timeout=1)


def test_ipv6(make_server) -> None:
    if not socket.has_ipv6:
        pytest.skip('no IPv6 on this machine')
    try:
        server = make_server(address=('::1', 0))
    except OSError:
        pytest.skip('cannot bind ::1 here')
    server.start()
    try:
        conn = wspy.connect(f'ws://[::1]:{server.address[1]}/v6')
        conn.send('over IPv6')
        assert conn.recv().payload == 'over IPv6'
        conn.close()
    finally:
        server.shutdown()


def test_keepalive_closes_a_silent_peer_with_1011(serve, raw_client) -> None:
    server = serve(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)
    client = raw_client(server)
    client.handshake()
    started = time.monotonic()
    first = client.recv_frame()
    assert first.opcode == wspy.OPCODE_PING and len(first.payload) == 4
    assert client.recv_close()[0] == 1011  # never answered
    assert time.monotonic() - started < 2
    client.close()
    assert server.wait_closes(1)[0][1] == 1011


def test_keepalive_keeps_a_live_peer_and_measures_latency(serve) -> None:
    server = serve(ping_interval=0.1, ping_timeout=0.5)
    conn = wspy.connect(url(server), ping_interval=None)
    def receive() -> None:
        with pytest.raises(wspy.ConnectionClosed):
            conn.recv()

    receiver = threading.Thread(target=receive)
    receiver.start()  # a receiving connection answers pings
    deadline = time.monotonic() + 5  # the first pings go out after 0.1 s; a busy machine is slow
    while time.monotonic() < deadline and not any(c.latency is not None for c in server.clients):
        time.sleep(0.05)
    (client,) = server.clients
    assert client.state is wspy.State.OPEN and client.latency is not None
    assert 0 <= client.latency < 0.5
    conn.close()
    receiver.join(5)


def test_process_request_answers_plain_http(serve, raw_client) -> None:
    class Guarded(EchoServer):
        def process_request(self, request):
            if request.path == '/health':
                return wspy.Response(200, {'Content-Type': 'text/plain'}, b'ok\n')
            if request.headers.get('Cookie') != 'token=secret':
                return wspy.Response(403, [('Content-Type', 'text/plain')], b'no token\n')
            return None

    server = serve(Guarded)
    health = raw_client(server)
    health.send(b'GET /health HTTP/1.1\r\nHost: a\r\n\r\n')
    answer = health.read_to_eof()
    assert answer.startswith(b'HTTP/1.1 200 OK\r\n') and answer.endswith(b'\r\n\r\nok\n')
    assert b'Content-Length: 3\r\n' in answer and b'Connection: close\r\n' in answer
    assert raw_client(server).handshake(upgrade_request())[0] == 403
    conn = wspy.connect(url(server), headers={'Cookie': 'token=secret'})
    conn.send('let in')
    assert conn.recv().payload == 'let in'
    conn.close()


def _reset_after_echo(server: wspy.BaseServer, count: int) -> None:
    """`count` clients, one after another: upgrade, one echo, then a reset (no close)."""
    frame = wspy.Frame(wspy.OPCODE_TEXT, b'hi', b'abcd').pack()
    for _ in range(count):
        sock = socket.create_connection(server.address[:2], timeout=10)
        sock.sendall(upgrade_request() + frame)
        received = b''
        while not received.endswith(b'\x81\x02hi'):
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()


def test_clients_reset_under_load_are_all_forgotten(serve) -> None:
    # Many clients finishing at once: each must be seen through to onclose, none
    # left waiting (a lost wake-up of the Server's selector once left some so).
    server = serve(ping_interval=None)
    in_threads(lambda _: _reset_after_echo(server, 150), 8)
    assert len(server.wait_closes(8 * 150)) == 8 * 150
    assert not server.clients
    assert_echoes(server)


def test_idle_clients_hold_no_thread() -> None:
    server = server_factory(*SERVERS['Server'])()
    server._pool.idle_timeout = 0.2
    server.start()
    try:
        before = set(threading.enumerate())
        conns = [wspy.connect(url(server)) for _ in range(100)]
        deadline = time.monotonic() + 5
        while server._pool.threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server._pool.threads == 0
        new = [t for t in threading.enumerate() if t not in before]
        assert all(t.name == 'wspy-keepalive' for t in new), new  # 100 clients, no thread
        for i, conn in enumerate(conns):
            conn.send(f'still here {i}')
        assert [conn.recv().payload for conn in conns] == [f'still here {i}' for i in range(100)]
        for conn in conns:
            conn.close()
    finally:
        server.shutdown()


def test_a_blocking_callback_holds_up_only_its_own_client() -> None:
    # Server only: an AsyncServer's callbacks run on its loop, so blocking one blocks all.
    release = threading.Event()

    class Blocking(EchoServer):
        def onmessage(self, client, message):
            if message.payload == 'wait':
                release.wait(10)
            client.send(message)

    with running(server_factory(*SERVERS['Server'])) as start:
        server = start(Blocking)
        slow, fast = wspy.connect(url(server)), wspy.connect(url(server))
        slow.send('wait')
        slow.send('after')
        for i in range(20):
            fast.send(str(i))
            assert fast.recv().payload == str(i)
        release.set()
        assert [slow.recv().payload, slow.recv().payload] == ['wait', 'after']
        slow.close()
        fast.close()


def test_close_from_another_thread_while_the_client_is_idle(serve) -> None:
    server = serve()
    conn = wspy.connect(url(server))
    conn.send('hello')
    assert conn.recv().payload == 'hello'
    (client,) = server.clients
    received: list[BaseException] = []

    def receive() -> None:
        try:
            conn.recv()
        except wspy.ConnectionClosed as error:
            received.append(error)

    receiver = threading.Thread(target=receive)
    receiver.start()
    start = time.monotonic()
    client.close(4000, 'bye')  # returns at once on an AsyncServer, once closed on Server
    assert server.wait_closes(1)[0][1] == 4000
    assert time.monotonic() - start < 2, 'the close waited for close_timeout'
    assert client.closed and client.close_code == 4000
    receiver.join(5)
    assert received and (received[0].code, received[0].reason) == (4000, 'bye')


def test_a_connection_class_that_fails_costs_only_its_client(serve, caplog) -> None:
    server = serve()

    class Picky(server.connection_class):
        def __init__(self, owner, sock, **options):
            if sock.request.path == '/bad':
                raise RuntimeError('no thanks')
            super().__init__(owner, sock, **options)

    server.connection_class = Picky
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, logger='wspy'), \
            pytest.raises((wspy.WebSocketError, OSError)):
        wspy.connect(url(server, '/bad'), timeout=5).recv()
    assert time.monotonic() - start < 2, 'the client was left waiting'
    assert 'could not set up the connection' in caplog.text
    assert_echoes(server)
    assert not getattr(server, '_handshaking', None) and not getattr(server, '_handshakes', None)


# -- the threaded Server on its Loop -------------------------------------------------------

def watched_fds(loop: wspy.loop.Loop) -> set[int]:
    """The file descriptors a loop's epoll watches (read from /proc/self/fdinfo)."""
    with open(f'/proc/self/fdinfo/{loop.selector.fileno()}') as info:
        return {int(line.split()[1]) for line in info if line.startswith('tfd:')}


def wait_for(condition: Any, timeout: float = 5.0) -> bool:
    """Whether `condition()` turns true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_server_reads_upgrade_requests_on_its_loop_with_no_thread() -> None:
    with running(server_factory(*SERVERS['Server'])) as start:
        server = start(handshake_timeout=1, backlog_size=1024)
        assert isinstance(server.loop, wspy.loop.Loop)
        threads_before = threading.active_count()
        silent = [socket.create_connection(server.address) for _ in range(500)]
        try:
            began = time.monotonic()
            assert wait_for(lambda: len(watched_fds(server.loop)) >= 500)  # the loop has them
            assert server._pool.threads == 0
            assert threading.active_count() - threads_before < 3
            for sock in silent:
                sock.settimeout(max(0.1, began + 2.5 - time.monotonic()))
                assert sock.recv(4096).startswith(b'HTTP/1.1 408 ')
            assert 1 <= time.monotonic() - began < 2.5
        finally:
            for sock in silent:
                sock.close()


def test_server_watches_idle_clients_on_its_loop() -> None:
    with running(server_factory(*SERVERS['Server'])) as start:
        server = start(ping_interval=None)
        conns = [wspy.connect(url(server), ping_interval=None) for _ in range(20)]
        try:
            for conn in conns:
                conn.send('hello')
                assert conn.recv().payload == 'hello'
            client_fds = {client.sock.fileno() for client in server.clients}
            assert len(client_fds) == 20
            assert wait_for(lambda: client_fds <= watched_fds(server.loop))
        finally:
            for conn in conns:
                conn.close()


def test_server_keepalive_runs_on_its_loop_not_on_the_keepalive_thread(monkeypatch,
                                                                         raw_client) -> None:
    scheduled: list[Any] = []
    monkeypatch.setattr(wspy.keepalive.Scheduler, 'schedule',
                        lambda self, connection, delay: scheduled.append(connection))
    with running(server_factory(*SERVERS['Server'])) as start:
        server = start(ping_interval=0.1, ping_timeout=0.5)
        client = raw_client(server)
        assert client.handshake()[0] == 101
        assert wait_for(lambda: len(server.clients) == 1)
        assert scheduled == []  # not handed to the shared keepalive thread...
        frame = client.recv_frame()  # ...yet pinged
        assert frame is not None and frame.opcode == wspy.OPCODE_PING
        client.send_frame(wspy.OPCODE_PONG, frame.payload)
        frame = client.recv_frame()  # the next ping: the pong was seen
        assert frame is not None and frame.opcode == wspy.OPCODE_PING
        (connection,) = server.clients
        assert connection.latency is not None
        assert server.wait_closes(1)[0][1] == 1011  # the next ping goes unanswered
        assert scheduled == []


def test_server_clients_that_closed_leave_no_timers_on_its_loop() -> None:
    # Each client has a keepalive timer on the loop: a closed one must not keep it (nor
    # itself through it) for ping_interval seconds.
    with running(server_factory(*SERVERS['Server'])) as start:
        server = start(ping_interval=30)
        for _ in range(8):
            conns = [wspy.connect(url(server), ping_interval=None) for _ in range(50)]
            for conn in conns:
                conn.close()
        server.wait_closes(400)
        sizes: list[int] = []
        server.loop.call_soon_threadsafe(lambda: sizes.append(len(server.loop._timers)))
        assert wait_for(lambda: bool(sizes))
        assert sizes[0] < 300  # not 400 keepalive timers waiting to be due


def test_answers_to_a_burst_are_not_held_back(serve) -> None:
    """A read of many messages: the threaded Server holds their answers back to write them
    together, and must write them once all are delivered, even when the read ends in the
    middle of a frame."""
    conn = wspy.connect(url(serve()))
    try:
        for burst in range(5):
            frames = b''.join(wspy.Frame(wspy.OPCODE_TEXT, f'{burst}-{i}'.encode(),
                                         os.urandom(4)).pack() for i in range(20))
            last = wspy.Frame(wspy.OPCODE_TEXT, b'last', os.urandom(4)).pack()
            start = time.monotonic()
            conn.sock.sendall(frames + last[:3])  # ends inside a frame
            answers = [conn.recv().payload for _ in range(20)]
            elapsed = time.monotonic() - start
            assert answers == [f'{burst}-{i}' for i in range(20)]
            assert elapsed < 0.15, f'answers held back {elapsed:.3f} s'
            conn.sock.sendall(last[3:])
            assert conn.recv().payload == 'last'
    finally:
        conn.close()


def _burst(*texts: str) -> bytes:
    """Text frames as a client sends them, to be written in one go (one read for the server)."""
    return b''.join(wspy.Frame(wspy.OPCODE_TEXT, text.encode(), os.urandom(4)).pack()
                    for text in texts)


@pytest.fixture
def start_threaded() -> Iterator[Callable[..., Any]]:
    """`start(handler, **options)`: a threaded `Server` with `handler`'s callbacks."""
    with running(server_factory(*SERVERS['Server'])) as start:
        yield start


@pytest.mark.parametrize('tls', [False, True], ids=['ws', 'wss'])
def test_an_answer_held_back_is_written_while_a_later_callback_blocks(start_threaded, certs,
                                                                      tls: bool) -> None:
    # The answer to 'a' is held back while 'b' is delivered; 'b''s callback blocks: another
    # thread writes the answer within HOLD_DELAY, not once the callback returns.
    release = threading.Event()

    class Blocking(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)
            if message.payload == 'b':
                release.wait(5)

    if tls:
        server = start_threaded(Blocking, ssl_args={'certfile': str(certs.server_cert),
                                                    'keyfile': str(certs.server_key)})
        conn = wspy.connect(f'wss://localhost:{server.address[1]}/',
                            ssl_args={'cafile': str(certs.ca)})
    else:
        server = start_threaded(Blocking)
        conn = wspy.connect(url(server))
    try:
        conn.sock.sendall(_burst('a', 'b'))
        start = time.monotonic()
        assert conn.recv().payload == 'a'
        assert time.monotonic() - start < 1.0
        release.set()
        assert conn.recv().payload == 'b'
    finally:
        release.set()
        conn.close()


def test_a_frame_from_another_thread_goes_after_the_answers_held_back(start_threaded) -> None:
    # 'a''s callback answers, then has another thread send and waits for it: what that
    # thread sent after the answer must arrive after it.
    class OtherThread(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)
            if message.payload == 'a':
                other = threading.Thread(target=client.send, args=('from another thread',))
                other.start()
                other.join()

    server = start_threaded(OtherThread)
    conn = wspy.connect(url(server))
    try:
        conn.sock.sendall(_burst('a', 'b'))
        assert [conn.recv().payload for _ in range(3)] == ['a', 'from another thread', 'b']
    finally:
        conn.close()


def test_a_close_from_a_callback_goes_after_the_answers_held_back(start_threaded) -> None:
    # ...and the messages after it in the same read are dropped (RFC 6455 5.5.1: no data
    # frames after a close frame; none delivered either).
    delivered: list[str] = []

    class Closing(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            delivered.append(message.payload)
            client.send(message)
            if message.payload == 'b':
                client.close(wspy.CLOSE_NORMAL, 'done')

    server = start_threaded(Closing)
    conn = wspy.connect(url(server))
    conn.sock.sendall(_burst('a', 'b', 'c'))
    assert [conn.recv().payload for _ in range(2)] == ['a', 'b']
    with pytest.raises(wspy.ConnectionClosedOK) as closed:
        conn.recv()
    assert (closed.value.code, closed.value.reason) == (wspy.CLOSE_NORMAL, 'done')
    server.wait_closes(1)  # the server is done with the client
    assert delivered == ['a', 'b']


def test_more_answers_than_one_write_takes_all_arrive_in_order(start_threaded) -> None:
    # Over HOLD_BUFFERS answers to one read (and over IOV_MAX buffers of one sendmsg).
    server = start_threaded()
    conn = wspy.connect(url(server))
    try:
        texts = [str(i) for i in range(3000)]
        conn.sock.sendall(_burst(*texts))
        assert [conn.recv().payload for _ in texts] == texts
    finally:
        conn.close()


def test_recv_from_a_callback_takes_the_next_message_of_the_same_read(start_threaded) -> None:
    # The messages of one read are made in one go: recv() must take the next of them.
    class Pairs(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(f'{message.payload}+{client.recv().payload}')

    server = start_threaded(Pairs)
    conn = wspy.connect(url(server))
    conn.sock.settimeout(5)  # a server that waits for 'b' on the socket answers nothing
    try:
        conn.sock.sendall(_burst('a', 'b', 'c', 'd'))
        assert [conn.recv().payload for _ in range(2)] == ['a+b', 'c+d']
    finally:
        conn.close()


def _close_frame(code: int = wspy.CLOSE_NORMAL) -> bytes:
    """A close frame as a client sends it."""
    return wspy.ControlFrame(wspy.OPCODE_CLOSE, code.to_bytes(2, 'big'), os.urandom(4)).pack()


def test_a_message_and_a_close_in_one_read_get_the_answer_and_the_close(start_threaded) -> None:
    # The close frame that answers the client's must not be held back behind the answer:
    # the transport ends right after it, and both were lost (the client saw 1006).
    server = start_threaded()
    conn = wspy.connect(url(server), close_timeout=1)
    conn.sock.settimeout(5)
    conn.sock.sendall(_burst('a') + _close_frame())
    assert conn.recv().payload == 'a'
    with pytest.raises(wspy.ConnectionClosedOK) as closed:
        conn.recv()
    assert closed.value.code == wspy.CLOSE_NORMAL


def test_recv_from_a_callback_after_start_close_drops_the_rest_of_the_read(
        start_threaded) -> None:
    # Messages after our close frame are dropped, those of the same read made in one go too.
    received: list[str] = []
    done = threading.Event()

    class Closing(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.start_close()
            try:
                received.append(client.recv().payload)
            except wspy.ConnectionClosedOK:
                received.append('closed')
            done.set()

    server = start_threaded(Closing)
    conn = wspy.connect(url(server), close_timeout=1)
    conn.sock.settimeout(5)
    conn.sock.sendall(_burst('a', 'b', 'c'))
    with pytest.raises(wspy.ConnectionClosedOK):
        conn.recv()
    assert done.wait(5)
    assert received == ['closed']


def test_a_message_in_many_fragments_from_a_callback_arrives(start_threaded) -> None:
    # Over IOV_MAX frames sent at once while answers are held back: they are not held
    # (one sendmsg cannot take them all).
    class Fragments(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message.payload * 3000, fragment_size=2)

    server = start_threaded(Fragments)
    conn = wspy.connect(url(server), close_timeout=1)
    conn.sock.settimeout(5)
    try:
        conn.sock.sendall(_burst('a', 'b'))
        assert [conn.recv().payload for _ in range(2)] == ['a' * 3000, 'b' * 3000]
    finally:
        conn.close()


def test_recv_from_a_callback_first_writes_what_the_callback_sent(start_threaded,
                                                                   monkeypatch) -> None:
    # The client answers the question only once it has it: recv() must not wait with the
    # question held back (here the loop would not write it for 30 s).
    monkeypatch.setattr(wspy.connection, 'HOLD_DELAY', 30.0)

    class Asking(EchoServer):
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send('question')
            client.send(f'the answer is {client.recv().payload}')

    server = start_threaded(Asking)
    conn = wspy.connect(url(server), close_timeout=1)
    conn.sock.settimeout(5)
    try:
        # A ping after the message: more to read, so the answers are held back.
        conn.sock.sendall(_burst('a') + wspy.ControlFrame(wspy.OPCODE_PING, b'',
                                                          os.urandom(4)).pack())
        assert conn.recv().payload == 'question'
        conn.send('42')
        assert conn.recv().payload == 'the answer is 42'
    finally:
        conn.close()


def test_the_loop_never_waits_to_write_answers_held_back(start_threaded, monkeypatch) -> None:
    # A 1001 (or a keepalive ping) from the loop goes after the answers held back: the
    # loop must not wait for a client that does not read to take them.
    monkeypatch.setattr(wspy.connection, 'HOLD_DELAY', 30.0)  # the loop's sweep aside
    blocked, release = threading.Event(), threading.Event()

    class Blocking(EchoServer):
        def onopen(self, client: wspy.ServerConnection) -> None:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            if message.payload == 'a':
                client.send('x' * 200_000)
            else:
                blocked.set()
                release.wait(5)

    server = start_threaded(Blocking, write_timeout=3)
    client = wspy.websocket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(('127.0.0.1', server.address[1]))
    shutting_down = threading.Thread(target=server.shutdown)
    try:
        client.sendall(_burst('a', 'b'))  # and reads nothing
        assert blocked.wait(5)
        shutting_down.start()  # the loop sends the 1001, where it can
        ticked = threading.Event()
        server.loop.call_soon_threadsafe(ticked.set)
        assert ticked.wait(1), 'the loop is blocked'
    finally:
        release.set()
        client.close()
        shutting_down.join(5)


def test_cork_takes_effect_on_tcp_only() -> None:
    listener = socket.create_server(('127.0.0.1', 0))
    with listener, wspy.websocket() as tcp, wspy.websocket(socket.AF_UNIX) as unix:
        tcp.connect_ex(listener.getsockname())  # no handshake: cork is a socket matter
        assert tcp.cork(True) and tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
        assert tcp.cork(False) and tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        assert unix.cork(True) is False
