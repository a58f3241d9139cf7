"""The socket layer: `websocket` as a `socket.socket` that speaks frames."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
import threading
import time

import pytest

import wspy

from conftest import upgrade_request


@pytest.fixture
def listener():
    sock = wspy.websocket(protocols=['chat'])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    sock.listen(5)
    yield sock
    sock.close()


def test_readme_example_raw_sockets(listener) -> None:
    result = {}

    def serve() -> None:
        client, _ = listener.accept()
        result['request'] = client.request
        result['protocol'] = client.protocol
        client.send(wspy.Frame(wspy.OPCODE_TEXT, b'Hello, Client!'))
        result['frames'] = client.recvn(2)
        client.close()

    thread = threading.Thread(target=serve)
    thread.start()
    sock = wspy.websocket(location='/path?q=1', protocols=['chat'])
    assert isinstance(sock, socket.socket)
    sock.connect(listener.getsockname())
    assert sock.protocol == 'chat' and sock.server_side is False
    frame = sock.recv()
    assert (frame.opcode, frame.payload, frame.masked) == (wspy.OPCODE_TEXT, b'Hello, Client!',
                                                           False)
    sock.send(wspy.Frame(wspy.OPCODE_TEXT, b'one', b'abcd'),
              wspy.Frame(wspy.OPCODE_BINARY, b'two', b'efgh', final=False))
    thread.join(5)
    assert result['request'].target == '/path?q=1' and result['protocol'] == 'chat'
    assert [(f.payload, f.final) for f in result['frames']] == [(b'one', True), (b'two', False)]
    with pytest.raises(wspy.SocketClosed):
        sock.recv()
    sock.close()


def test_accept_rejects_with_http_error_and_raises(listener) -> None:
    errors = []

    def serve() -> None:
        try:
            listener.accept()
        except wspy.HandshakeError as error:
            errors.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname()) as raw:
        raw.sendall(upgrade_request(version='7'))
        answer = raw.recv(4096)
    thread.join(5)
    assert answer.startswith(b'HTTP/1.1 426 ')
    assert isinstance(errors[0], wspy.UnsupportedVersion)


def test_accept_without_handshake_and_unopened_sockets(listener) -> None:
    raw = socket.create_connection(listener.getsockname())
    sock, _ = listener.accept(handshake=False)
    assert isinstance(sock, wspy.websocket) and sock.server_side is None
    assert 'raw' in repr(sock)
    with pytest.raises(wspy.InvalidState):
        sock.recv()
    with pytest.raises(ValueError):
        wspy.Connection(sock)
    assert sock.options()['protocols'] == ['chat']
    sock.close()
    raw.close()


def _no_delay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_tcp_websockets_send_without_delay() -> None:
    """Nagle's algorithm is off on both ends (else a burst of small messages to a peer
    that only reads waits for its delayed acknowledgements), made or accepted, even on
    a listener that was not made with it off; Unix sockets have no such option."""
    plain = socket.socket()
    plain.bind(('127.0.0.1', 0))
    plain.listen(1)
    assert not _no_delay(plain)
    listener = wspy.websocket(fileno=plain.detach())  # a listener handed over, left as it was
    assert not _no_delay(listener)
    client = wspy.websocket()
    assert _no_delay(client)
    client.setblocking(False)
    client.connect_ex(listener.getsockname())
    accepted, _ = listener.accept(handshake=False)
    assert _no_delay(accepted)
    for sock in (accepted, client, listener):
        sock.close()
    wspy.websocket(socket.AF_UNIX).close()


def test_accept_goes_on_where_tcp_nodelay_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and the BSDs refuse TCP_NODELAY (EINVAL) on a connection the peer has reset:
    accept() still returns the socket, whose next read or write tells."""
    def refuse(sock: socket.socket, level: int, option: int, value: int) -> None:
        raise OSError(errno.EINVAL, 'Invalid argument')

    plain = socket.socket()
    plain.bind(('127.0.0.1', 0))
    plain.listen(1)
    listener = wspy.websocket(fileno=plain.detach())
    client = socket.create_connection(listener.getsockname())
    monkeypatch.setattr(wspy.websocket, 'setsockopt', refuse)
    accepted, _ = listener.accept(handshake=False)
    assert accepted.fileno() >= 0
    for sock in (accepted, client, listener):
        sock.close()


def test_accepted_sockets_get_the_options_and_fresh_state(listener) -> None:
    listener.locations = ['/chat']
    listener.hooks.append('listener state')  # never copied to an accepted socket
    raw = socket.create_connection(listener.getsockname())
    sock, address = listener.accept(handshake=False)
    assert type(sock) is wspy.websocket and sock.fileno() >= 0
    assert (sock.family, sock.type) == (listener.family, listener.type)
    assert sock.options() == listener.options()
    assert sock.protocols is not listener.protocols  # each socket its own lists
    assert sock.locations is not listener.locations
    assert (sock.hooks, sock.request, sock.tls, sock.peer_address()) == ([], None, None, address)
    sock.close()
    raw.close()


def test_an_opened_server_socket_keeps_its_state_in_slots(listener) -> None:
    # A server holds one per client: its 31 attributes as instance attributes took
    # 1.3 KiB more each on CPython 3.11-3.13 (compact only up to 29 of them).
    raw = socket.create_connection(listener.getsockname())
    raw.sendall(upgrade_request())
    sock, _ = listener.accept()
    sock.close_timeout = 1.0  # anything else still goes to a __dict__
    assert vars(sock) == {'close_timeout': 1.0}
    sock.close()
    raw.close()


def test_a_subclass_with_its_own_init_gets_it_called_on_accept() -> None:
    class Tagged(wspy.websocket):
        def __init__(self, *args, tag: str = 'listener', **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.tag = tag if kwargs.get('fileno') is None else 'accepted'

    with Tagged(protocols=['chat']) as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()):
            sock, _ = listener.accept(handshake=False)
            assert (type(sock), sock.tag, sock.protocols) == (Tagged, 'accepted', ['chat'])
            sock.close()


def test_bytes_after_the_request_are_kept(listener) -> None:
    result = {}

    def serve() -> None:
        client, _ = listener.accept()
        result['frame'] = client.recv()
        client.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname()) as raw:
        raw.sendall(upgrade_request() + wspy.Frame(wspy.OPCODE_TEXT, b'early', b'abcd').pack())
        raw.recv(4096)
        thread.join(5)
    assert result['frame'].payload == b'early'


def test_connection_over_a_raw_accept(listener) -> None:
    class Echo(wspy.Connection):
        def onmessage(self, message):
            self.send(message)

    def serve() -> None:
        client, _ = listener.accept()
        Echo(client).receive_forever()

    thread = threading.Thread(target=serve)
    thread.start()
    conn = wspy.connect(f'ws://127.0.0.1:{listener.getsockname()[1]}/')
    conn.send('original API')
    assert conn.recv().payload == 'original API'
    conn.close()
    thread.join(5)
    assert not thread.is_alive()


def wait_until_received(sock: socket.socket, size: int) -> None:
    """Wait (5 s at most) until `size` bytes wait in the socket's receive queue."""
    deadline = time.monotonic() + 5
    while struct.unpack('i', fcntl.ioctl(sock, termios.FIONREAD, b'\0' * 4))[0] < size:
        assert time.monotonic() < deadline, 'the bytes did not arrive'
        time.sleep(0.01)


def test_read_into_parser_without_waiting_reads_only_what_has_arrived(listener) -> None:
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)  # room for it all
    accepted: list[wspy.websocket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    client = wspy.websocket()
    client.connect(listener.getsockname())
    thread.join(5)
    server = accepted[0]
    try:
        assert server.read_into_parser(wait=False) is False  # nothing yet: no wait
        payload = os.urandom(300_000)
        data = wspy.Frame(wspy.OPCODE_BINARY, payload, b'abcd').pack()
        client.sendall(data)
        wait_until_received(server, len(data))
        fills = [server.read_into_parser(wait=False) for _ in range(4)]
        assert fills == [True, True, False, False]  # two full buffers, the rest, nothing
        assert server.parser is not None
        assert server.parser.next_frame() == wspy.Frame(wspy.OPCODE_BINARY, payload, b'abcd')
        server.settimeout(5)  # with a timeout set, a read would wait for readability first
        client.sendall(b'\x82\x00')
        assert server.read_into_parser(wait=False) is False
        server.settimeout(None)
        client.close()
        assert server.read_into_parser(wait=False) is False  # the two bytes: not a full buffer
        with pytest.raises(wspy.SocketClosed):
            server.read_into_parser(wait=False)
    finally:
        server.close()


def test_nagle_goes_off_on_a_socket_class_not_built_on_the_c_socket() -> None:
    """gevent's patched socket.socket is no _socket.socket underneath: a websocket made
    from it still gets TCP_NODELAY, instead of a TypeError on every connect."""
    from wspy.websocket import send_without_delay

    class Patched:  # what gevent's socket class looks like from here
        family, type = socket.AF_INET, socket.SOCK_STREAM

        def __init__(self) -> None:
            self.options: list[tuple[int, int, int]] = []

        def setsockopt(self, level: int, option: int, value: int) -> None:
            self.options.append((level, option, value))

    sock = Patched()
    send_without_delay(sock)  # type: ignore[arg-type]
    assert sock.options == [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
