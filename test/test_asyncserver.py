"""What only the event-loop server does: scale, non-blocking everything, broadcast,
timers, buffered output and onsent."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import pytest

import wspy

from conftest import (EchoServer, assert_echoes, eventually, running, server_factory,
                      upgrade_request, url)

NO_KEEPALIVE = {'ping_interval': None}


@pytest.fixture
def aserve():
    """Start AsyncServers (on the default selector) like `serve` does."""
    with running(server_factory(wspy.AsyncServer, {})) as start:
        yield start


def test_a_thousand_concurrent_clients(aserve) -> None:
    server = aserve(backlog_size=1024)
    clients = [wspy.connect(url(server, f'/{n}'), **NO_KEEPALIVE) for n in range(1000)]
    assert len(server.clients) == 1000
    for n, conn in enumerate(clients):
        conn.send(f'message {n}')
    for n, conn in enumerate(clients):
        assert conn.recv().payload == f'message {n}'
    for conn in clients:
        conn.close()
    assert len(server.wait_closes(1000, timeout=30)) == 1000


def test_idle_half_open_handshakes_do_not_delay_others(aserve) -> None:
    server = aserve(handshake_timeout=1.0, backlog_size=512)
    idle = []
    for n in range(200):
        sock = socket.create_connection(('127.0.0.1', server.address[1]))
        sock.sendall(upgrade_request()[:n % 50])  # nothing, or half a request
        idle.append(sock)
    started = time.monotonic()
    assert_echoes(server)
    assert time.monotonic() - started < 0.5
    time.sleep(1.2)
    for sock in idle:
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer.startswith(b'HTTP/1.1 408 ') or answer.startswith(b'HTTP/1.1 400 ')
        sock.close()


class Flooding(EchoServer):
    """Answers 'flood' with far more data than a client that does not read can take."""

    def onmessage(self, client, message):
        if message.payload == 'flood':
            for _ in range(400):
                client.send(b'x' * 65536)
        else:
            client.send(message)


def test_client_that_never_reads_is_closed_at_the_high_water_mark(aserve, raw_client,
                                                                 caplog) -> None:
    server = aserve(Flooding, max_buffer_size=1 << 20, close_timeout=0.5)
    slow = raw_client(server)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.handshake()
    with caplog.at_level(logging.WARNING, logger='wspy'):
        slow.send_frame(wspy.OPCODE_TEXT, b'flood')
        assert_echoes(server)  # others carry on meanwhile
        closes = server.wait_closes(1)
    assert closes[0][1] == wspy.CLOSE_POLICY_VIOLATION
    assert 'does not read' in caplog.text
    assert len(server.clients) == 0 or all(c.buffered_amount < (1 << 20) for c in server.clients)


def test_a_slow_reader_gets_every_message_whole_and_in_order(aserve) -> None:
    # The queue goes out in writes that the socket takes only part of: what is left of
    # a message begun must go first, then the rest of the queue, in order.
    sizes = [(i * 7919) % 40_000 + 1 for i in range(200)]  # 4 MB, below max_buffer_size

    class Burst(EchoServer):
        def onmessage(self, client, message):
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            for index, size in enumerate(sizes):
                client.send(bytes([index % 256]) * size)

    server = aserve(Burst)
    conn = wspy.connect(url(server), max_message_size=1 << 20, **NO_KEEPALIVE)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.send('go')
    time.sleep(0.3)  # the server's writes stall on the full socket meanwhile
    for index, size in enumerate(sizes):
        assert conn.recv().payload == bytes([index % 256]) * size
    conn.close()


@pytest.mark.parametrize('pause_at', [100, 1_500_000, 2_900_000, 3_000_013])
def test_a_long_frame_that_pauses_anywhere_is_read_and_echoed(aserve, raw_client,
                                                             pause_at: int) -> None:
    # While a long frame arrives, the socket wakes the loop only once much of it has come
    # (SO_RCVLOWAT). A sender that pauses must still be read to the end of the frame, and
    # then small messages must come through at once again.
    server = aserve(max_message_size=4 << 20, max_frame_size=4 << 20)
    client = raw_client(server)
    client.handshake()
    payload = os.urandom(3_000_000)
    data = wspy.Frame(wspy.OPCODE_BINARY, payload, b'abcd').pack()
    client.send(data[:pause_at])
    time.sleep(0.2)
    client.send(data[pause_at:])
    echo = client.recv_frame()
    assert echo is not None and echo.payload == payload
    for text in ('small', 'messages', 'at once'):
        client.send_frame(wspy.OPCODE_TEXT, text.encode())
        echo = client.recv_frame()
        assert echo is not None and echo.payload == text.encode()
    (connection,) = server.clients
    assert connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_buffered_amount_and_onsent(aserve) -> None:
    sent = []
    done = threading.Event()

    class Tracking(EchoServer):
        def onsent(self, client, message):
            sent.append((len(message.payload), client.buffered_amount))
            if len(sent) == 3:
                done.set()

        def onmessage(self, client, message):
            client.send(message)
            client.send(b'y' * 3_000_000)
            client.send('last')
            self.buffered = client.buffered_amount

    server = aserve(Tracking)
    conn = wspy.connect(url(server), max_message_size=4 << 20, max_frame_size=4 << 20)
    conn.send('first')
    assert [len(conn.recv().payload) for _ in range(3)] == [5, 3_000_000, 4]
    assert done.wait(5)
    assert [n for n, _ in sent] == [5, 3_000_000, 4]
    assert server.buffered > 3_000_000  # queued, not yet written, when send() returned
    assert sent[-1][1] == 0
    conn.close()


def test_broadcast_to_500_clients_from_another_thread(aserve) -> None:
    server = aserve(backlog_size=1024)
    clients = [wspy.connect(url(server), **NO_KEEPALIVE) for _ in range(500)]
    threading.Thread(target=server.broadcast, args=('to everyone',)).start()
    server.broadcast(b'\x00binary too')
    for conn in clients:
        received = {conn.recv().payload, conn.recv().payload}
        assert received == {'to everyone', b'\x00binary too'}
        conn.close()


def test_broadcast_skips_closing_clients_and_a_slow_one_does_not_block(aserve,
                                                                      raw_client) -> None:
    server = aserve(max_buffer_size=1 << 20, close_timeout=0.5)
    slow = raw_client(server)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.handshake()
    fast = wspy.connect(url(server), **NO_KEEPALIVE)
    fast.send('sync')
    assert fast.recv().payload == 'sync'
    # 13 MiB in all: more than the kernel's socket buffers absorb, so the slow
    # client's queue in the server passes the mark, while the fast client reads
    # each broadcast before the next is sent and so stays far below it.
    for _ in range(200):
        server.broadcast(b'z' * 65536)
        assert len(fast.recv().payload) == 65536
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_POLICY_VIOLATION
    fast.close()


def test_a_broadcast_the_socket_takes_only_in_part_arrives_whole_and_in_order(aserve) -> None:
    server = aserve()
    conn = wspy.connect(url(server), max_message_size=None,
                        **NO_KEEPALIVE)  # reads nothing until both are sent
    big = os.urandom(12 << 20)  # more than an idle loopback socket takes at once
    server.broadcast(big)
    server.broadcast('after')
    queued = []
    measured = threading.Event()
    server.call_soon_threadsafe(lambda: (queued.extend(client.buffered_amount
                                                       for client in server.clients),
                                         measured.set()))
    assert measured.wait(5) and queued[0] > 0  # the rest of the first write waits its turn
    assert conn.recv().payload == big
    assert conn.recv().payload == 'after'
    conn.close()


def test_a_slow_client_over_max_buffer_size_gets_the_begun_message_whole(aserve) -> None:
    """The rest of a broadcast the socket took only in part is never dropped: a client that
    then falls over max_buffer_size gets that message whole, then the 1008 close (not its
    truncated frame followed by the close frame's bytes, 1006)."""
    server = aserve(max_buffer_size=4 << 20)
    conn = wspy.connect(url(server), max_message_size=None, **NO_KEEPALIVE)
    big = os.urandom(8 << 20)
    server.broadcast(big)  # begun: the rest waits for the socket
    for _ in range(6):
        server.broadcast(b'x' * (1 << 20))  # not read: over max_buffer_size
    # The server gives the client up before it reads anything (reading at once, it could
    # catch up below max_buffer_size before the server looks, and never be closed).
    assert server.wait_closes(1)[0][1] == 1008
    timer = threading.Timer(10, conn.abort)  # a bound on the wait, whatever happens
    timer.start()
    try:
        assert conn.recv().payload == big
        with pytest.raises(wspy.ConnectionClosedError):
            while True:
                conn.recv()
    finally:
        timer.cancel()
    assert conn.close_code == 1008


def test_call_later_and_call_soon_threadsafe(aserve) -> None:
    server = aserve()
    fired = []
    event = threading.Event()
    server.call_later(0.05, fired.append, 'later')
    server.call_later(0.01, fired.append, 'sooner')
    cancelled = server.call_later(0.02, fired.append, 'cancelled')
    cancelled.cancel()
    server.call_later(0.1, event.set)
    server.call_soon_threadsafe(fired.append, 'soon')
    assert event.wait(5)
    assert fired == ['soon', 'sooner', 'later']


def test_timer_pushing_to_clients(aserve) -> None:
    class Ticking(EchoServer):
        def onopen(self, client):
            for n in range(3):
                self.call_later(0.01 * n, client.send, f'tick {n}')

    conn = wspy.connect(url(aserve(Ticking)))
    assert [conn.recv().payload for _ in range(3)] == ['tick 0', 'tick 1', 'tick 2']
    conn.close()


def test_recv_is_not_for_async_connections(aserve) -> None:
    errors = []

    class Receiving(EchoServer):
        def onopen(self, client):
            try:
                client.recv()
            except wspy.InvalidState as error:
                errors.append(error)
            client.send('checked')

    conn = wspy.connect(url(aserve(Receiving)))
    assert conn.recv().payload == 'checked'
    assert len(errors) == 1
    conn.close()


def test_abort_from_another_thread(aserve) -> None:
    server = aserve()
    conn = wspy.connect(url(server))
    conn.send('hi')
    conn.recv()
    next(iter(server.clients)).abort()
    with pytest.raises(wspy.ConnectionClosedError):
        conn.recv()
    assert server.wait_closes(1)[0][1] == wspy.CLOSE_ABNORMAL


def test_selector_is_chosen(aserve) -> None:
    import selectors
    server = aserve(selector=selectors.PollSelector)
    assert isinstance(server.loop.selector, selectors.PollSelector)
    assert_echoes(server)


def test_overflow_keeps_the_frame_in_flight_whole(aserve) -> None:
    # The client does not read while 26 MiB are queued for it, so the queue
    # passes the 1 MiB mark while the socket holds part of a frame. Then it
    # reads everything: up to the close frame, only whole, valid frames.
    server = aserve(Flooding, max_buffer_size=1 << 20, close_timeout=5)
    conn = wspy.connect(url(server), ping_interval=None, max_message_size=1 << 20)
    conn.send('flood')
    server.wait_closes(1)  # the server gave up on it before it read anything
    with pytest.raises(wspy.ConnectionClosedError) as info:
        for _ in range(400):
            assert conn.recv().payload == b'x' * 65536
    assert info.value.code == wspy.CLOSE_POLICY_VIOLATION  # a clean close frame, not 1006


def test_cancelled_timers_are_swept_out_of_the_heap() -> None:
    from wspy.loop import Loop

    loop = Loop()
    fired: list[int] = []
    kept = [loop.call_later(0.05, fired.append, i) for i in range(3)]
    for _ in range(5000):
        loop.call_later(60, fired.append, -1).cancel()
    loop.call_later(0.2, loop.stop)
    loop.run()
    loop.close()
    assert fired == [0, 1, 2] and all(not timer.cancelled for timer in kept)
    assert len(loop._timers) < 300  # not 5,000 cancelled timers waiting to be due


def test_closed_clients_leave_no_timers_behind(aserve) -> None:
    # Each open client has a keepalive timer; a closed one must not keep it (nor itself
    # through it) for ping_interval seconds.
    server = aserve(ping_interval=30)
    for _ in range(20):
        conns = [wspy.connect(url(server), ping_interval=None) for _ in range(50)]
        for conn in conns:
            conn.close()
    server.wait_closes(1000)
    live = []
    server.call_soon_threadsafe(lambda: live.append(len(server.loop._timers)))
    deadline = time.monotonic() + 5
    while not live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live and live[0] < 300


def test_open_clients_leave_no_handshake_timers_behind(aserve) -> None:
    # Each open client has a live keepalive timer and a cancelled handshake timer: the
    # cancelled ones are a third of the heap, never half, and must still be swept.
    server = aserve(ping_interval=30)
    conns = [wspy.connect(url(server), ping_interval=None) for _ in range(600)]
    sizes = []
    server.call_soon_threadsafe(lambda: sizes.append(len(server.loop._timers)))
    deadline = time.monotonic() + 5
    while not sizes and time.monotonic() < deadline:
        time.sleep(0.01)
    for conn in conns:
        conn.close()
    assert sizes and sizes[0] < 600 + 300  # not 1,200


def test_epoll_is_used_directly_by_default(aserve) -> None:
    import select
    server = aserve()
    if not hasattr(select, 'epoll'):
        pytest.skip('no epoll here')
    assert isinstance(server.loop.selector, select.epoll)
    assert_echoes(server)


def test_a_call_queued_while_the_loop_reads_its_wake_up_bytes_still_wakes_it() -> None:
    # Calls from other threads share the loop's wake-up bytes. Here a thread queues a call
    # (and sends a byte) while the loop reads the bytes: the loop reads that byte too, and
    # a later call must still send one (once, none did: it waited for an unrelated wake-up).
    from wspy.loop import Loop

    loop = Loop()
    wake_r = loop._wake_r
    ran: list[str] = []
    triggered: list[bool] = []

    class Reader:
        def recv(self, size: int) -> bytes:
            data = wake_r.recv(size)
            if not triggered:
                triggered.append(True)
                other = threading.Thread(target=loop.call_soon_threadsafe,
                                         args=(ran.append, 'during'))
                other.start()
                other.join()
            return data

        def close(self) -> None:
            wake_r.close()

    loop._wake_r = Reader()  # type: ignore[assignment]
    select = loop._poller.select
    sleeping: list[int] = []  # how many calls had run, each time the loop went to sleep

    def select_and_tell(timeout: float | None) -> Any:
        if timeout is None:
            sleeping.append(len(ran))
        return select(timeout)

    loop._poller.select = select_and_tell  # type: ignore[method-assign]
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        loop.call_soon_threadsafe(ran.append, 'first')
        assert eventually(lambda: ran == ['first', 'during'] and sleeping[-1] == 2)
        loop.call_soon_threadsafe(ran.append, 'after')
        assert eventually(lambda: ran == ['first', 'during', 'after'])
    finally:
        loop.stop()
        runner.join(5)
        loop.close()


class ClosingOnBye(EchoServer):
    """Records and echoes each message; closes the connection on 'bye'."""

    def onmessage(self, client, message):
        self.events.append(('message', message.payload))
        client.send(message)
        if message.payload == 'bye':
            client.close()


def test_messages_of_one_read_after_a_close_from_onmessage_are_dropped(aserve,
                                                                        raw_client) -> None:
    # The messages of a read are split in one go: those after the close are still dropped.
    server = aserve(ClosingOnBye)
    client = raw_client(server)
    client.handshake()
    client.send(b''.join(wspy.Frame(wspy.OPCODE_TEXT, text.encode(), os.urandom(4)).pack()
                         for text in ['one', 'héllo', 'bye', 'after', 'more']))
    echoed = []
    while (frame := client.recv_frame()) is not None and frame.opcode != wspy.OPCODE_CLOSE:
        echoed.append(frame.payload.decode())
    assert echoed == ['one', 'héllo', 'bye']
    assert [e[1] for e in server.events if e[0] == 'message'] == ['one', 'héllo', 'bye']
    client.send_frame(wspy.OPCODE_CLOSE, b"\x03\xe8")
    assert server.wait_closes(1)[0][1] == 1000


def test_control_frames_between_the_messages_of_one_read(aserve, raw_client) -> None:
    server = aserve(ClosingOnBye)
    client = raw_client(server)
    client.handshake()
    frames = [wspy.Frame(wspy.OPCODE_TEXT, b'one', os.urandom(4)),
              wspy.Frame(wspy.OPCODE_PING, b'p', os.urandom(4)),
              wspy.Frame(wspy.OPCODE_BINARY, b'\x00two', os.urandom(4)),
              wspy.Frame(wspy.OPCODE_TEXT, b'thr', os.urandom(4), final=False),
              wspy.Frame(wspy.OPCODE_CONTINUATION, b'ee', os.urandom(4)),
              wspy.Frame(wspy.OPCODE_TEXT, b'four', os.urandom(4))]
    client.send(b''.join(frame.pack() for frame in frames))
    got = [client.recv_frame() for _ in range(5)]
    assert [(f.opcode, f.payload) for f in got if f is not None] == [
        (wspy.OPCODE_TEXT, b'one'), (wspy.OPCODE_PONG, b'p'), (wspy.OPCODE_BINARY, b'\x00two'),
        (wspy.OPCODE_TEXT, b'three'), (wspy.OPCODE_TEXT, b'four')]
