"""`Connection` on its own: close handshake variants, callbacks, states."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

import wspy
from wspy.connection import State


def websocket_pair(**options) -> tuple[wspy.websocket, wspy.websocket]:
    """A server-side and a client-side websocket, connected and past the handshake."""
    a, b = socket.socketpair()
    server = wspy.websocket(fileno=a.detach(), **options)
    client = wspy.websocket(fileno=b.detach(), host='test', **options)
    thread = threading.Thread(target=server.server_handshake)
    thread.start()
    client.client_handshake()
    thread.join()
    return server, client


class Recorder(wspy.Connection):
    """Records its callbacks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def onopen(self):
        self.calls.append(('open',))

    def onmessage(self, message):
        self.calls.append(('message', message.payload))
        if message.payload == 'raise':
            raise ValueError('from onmessage')

    def onclose(self, code, reason):
        self.calls.append(('close', code, reason))

    def onerror(self, error):
        self.calls.append(('error', type(error).__name__))
        if isinstance(error, ValueError):
            raise RuntimeError('onerror itself fails')


def test_close_handshake_initiated_by_the_client() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    client = Recorder(client_sock)
    thread = threading.Thread(target=server.receive_forever)
    thread.start()
    client.send('hi')
    client.close(1000, 'bye')
    thread.join(5)
    assert server.calls == [('open',), ('message', 'hi'), ('close', 1000, 'bye')]
    assert client.calls == [('close', 1000, '')]
    assert server.state is State.CLOSED and client.state is State.CLOSED
    assert client.close_sent == (1000, 'bye') and client.close_received == (1000, '')


def test_close_without_answer_times_out_with_1006() -> None:
    server_sock, client_sock = websocket_pair()
    client = Recorder(client_sock, close_timeout=0.3)
    started = time.monotonic()
    client.close()
    assert 0.25 < time.monotonic() - started < 3
    assert client.calls == [('close', 1006, '')]
    assert server_sock.recv().unpack_close() == (1000, '')
    server_sock.close()


def test_close_from_another_thread_while_receiving() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    client = Recorder(client_sock)
    threads = [threading.Thread(target=server.receive_forever),
               threading.Thread(target=client.receive_forever)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    server.close(4000, 'from a third thread')
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert client.calls[-1] == ('close', 4000, 'from a third thread')
    assert server.calls[-1] == ('close', 4000, '')
    server.close()  # a second close does nothing
    assert server.calls.count(('close', 4000, '')) == 1


def test_close_from_another_thread_with_a_silent_peer() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock, close_timeout=0.3)
    thread = threading.Thread(target=server.receive_forever)
    thread.start()
    time.sleep(0.1)
    server.close()
    thread.join(5)
    assert not thread.is_alive() and server.calls[-1] == ('close', 1006, '')
    client_sock.close()


def test_errors_in_callbacks_do_not_stop_the_connection(caplog) -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    client = wspy.Connection(client_sock)
    thread = threading.Thread(target=server.receive_forever)
    thread.start()
    with caplog.at_level(logging.ERROR, logger='wspy'):
        client.send('raise')
        client.send('after')
        client.close()
        thread.join(5)
    assert server.calls[1:] == [('message', 'raise'), ('error', 'ValueError'),
                                ('message', 'after'), ('close', 1000, '')]
    assert 'error in onerror' in caplog.text


def test_peer_dropping_reports_1006() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    client_sock.close()
    with pytest.raises(wspy.ConnectionClosedError) as info:
        server.recv()
    assert info.value.code == 1006
    assert server.calls == [('error', 'SocketClosed'), ('close', 1006, '')]
    with pytest.raises(wspy.ConnectionClosedError):
        server.send('nobody listens')


def test_failing_reports_our_code_when_the_peer_does_not_answer() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock, close_timeout=0.3)
    client_sock.send(wspy.Frame(wspy.OPCODE_TEXT, b'\xff', b'abcd'))
    with pytest.raises(wspy.ConnectionClosedError) as info:
        server.recv()
    assert info.value.code == 1007
    assert server.calls[-1] == ('close', 1007, 'invalid UTF-8 in a text message')
    client_sock.close()


def test_message_size_limit_counts_fragments() -> None:
    server_sock, client_sock = websocket_pair()
    server = wspy.Connection(server_sock, max_message_size=10, close_timeout=0.3)
    client = wspy.Connection(client_sock)
    client.send('x' * 10)
    assert server.recv().payload == 'x' * 10
    client.send('y' * 11, fragment_size=4)
    with pytest.raises(wspy.ConnectionClosedError) as info:
        server.recv()
    assert info.value.code == wspy.CLOSE_MESSAGE_TOO_BIG


def test_unsolicited_pong_and_hand_made_frames() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    pongs = []
    server.onpong = pongs.append
    client = wspy.Connection(client_sock)
    client.send_pong(b'heartbeat')
    client.send_frames(wspy.Frame(wspy.OPCODE_TEXT, b'hand', b'abcd', final=False),
                       wspy.Frame(wspy.OPCODE_CONTINUATION, b'made', b'efgh'))
    assert server.recv().payload == 'handmade'
    assert pongs == [b'heartbeat']
    with pytest.raises(wspy.PingError):
        client.send_pong(b'x' * 200)
    client.abort()


def test_properties_and_repr() -> None:
    server_sock, client_sock = websocket_pair(protocols=['p'])
    server = wspy.Connection(server_sock)
    assert server.server_side and server.protocol == 'p'
    assert server.request.path == '/'
    assert 'OPEN' in repr(server) and server.close_code == 1006
    assert 'server' in repr(server_sock)
    server.abort()
    client_sock.close()


def test_messages_after_our_close_are_not_delivered() -> None:
    server_sock, client_sock = websocket_pair()
    server = Recorder(server_sock)
    server.start_close(1001, 'going')
    client_sock.send(wspy.Frame(wspy.OPCODE_TEXT, b'late', b'abcd'),
                     wspy.ControlFrame.close(1001, '', b'abcd'))
    client_sock.close()
    server.receive_forever()
    assert server.calls == [('open',), ('close', 1001, '')]
    assert server.wait_closed(1)


class _WatchedLock:
    """A receive lock that records the connection's must-not-wait flag at each acquire."""

    def __init__(self, connection: wspy.Connection, held: bool) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        self.flags: list[bool] = []
        if held:
            self.lock.acquire()

    def acquire(self, *args, **kwargs) -> bool:
        self.flags.append(self.connection._output_must_not_wait)
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()


@pytest.mark.parametrize('held', [True, False])
def test_the_keepalive_changes_how_frames_are_applied_only_while_it_holds_the_lock(
        held: bool) -> None:
    # While another thread receives, the keepalive must not make that thread's frames be
    # applied as if nobody could wait (a close left unfinished, an error not handled).
    server, client = websocket_pair()
    connection = Recorder(client, ping_interval=None)
    try:
        watched = connection._recv_lock = _WatchedLock(connection, held)
        read = connection._receive_for_keepalive()
        assert read is not held
        assert watched.flags and not any(watched.flags)
        assert connection._output_must_not_wait is False
        if held:
            watched.release()
    finally:
        connection._recv_lock = threading.Lock()
        server.close()
        connection.abort()
        client.close()


def test_a_server_reading_a_closed_connection_reports_nothing_more() -> None:
    server, client = websocket_pair()
    connection = Recorder(server, ping_interval=None, close_timeout=0.5)
    client.close()
    connection._recv_lock.acquire()
    assert connection._receive_ready() is False  # the peer went: 1006
    calls = list(connection.calls)
    assert calls[-1] == ('close', 1006, '')
    assert connection._receive_ready() is False
    assert connection.calls == calls


def test_credentials_in_a_url_stay_out_of_errors_and_reprs() -> None:
    from wspy.protocol.opening import without_credentials
    assert without_credentials('wss://user:secret@example.com:8443/a?b') == \
        'wss://example.com:8443/a?b'
    with pytest.raises(wspy.InvalidURI) as info:
        wspy.connect('http://user:secret@example.com/')
    assert 'secret' not in str(info.value)
    client = wspy.AsyncClient()
    try:
        connecting = wspy.Connecting(client, 'ws://user:secret@127.0.0.1:1/',
                                     wspy.protocol.opening.ClientOpening(
                                         'ws://user:secret@127.0.0.1:1/'), {})
        assert 'secret' not in repr(connecting)
    finally:
        client.loop.close()


def test_the_keepalive_of_blocking_connections_runs_on_a_loop() -> None:
    from wspy.keepalive import scheduler
    from wspy.loop import Loop
    server, client = websocket_pair()
    answering = Recorder(server, ping_interval=None)
    pinging = Recorder(client, ping_interval=0.05, ping_timeout=5)
    thread = threading.Thread(target=answering.receive_forever)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while pinging.latency is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pinging.latency is not None  # its pong was read by the keepalive itself
        assert isinstance(scheduler._loop, Loop)
        assert any(t.name == 'wspy-keepalive' for t in threading.enumerate())
    finally:
        pinging.close()
        thread.join(5)
    assert answering.calls[-1] == ('close', 1000, '')
