"""Arguments and options: wrong types refused, `loglevel` shows the log, the 426 answer,
and Unix-socket clients named in logs and reprs."""

from __future__ import annotations

import array
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wspy
from wspy.protocol.frame import OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, ControlFrame, read_frame
from wspy.protocol.handshake import HeadReader, error_response, parse_response

from conftest import (TIMEOUT, EchoServer, RawClient, running, server_factory, upgrade_request,
                      url)

KINDS = {'Server': wspy.Server, 'AsyncServer': wspy.AsyncServer}
NO_KEEPALIVE = {'ping_interval': None}
ACCEPTED = r'str, a bytes-like object \(bytes, bytearray, memoryview\) or a Message'


@pytest.fixture(params=list(KINDS))
def serve(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start an echo server of each kind in turn."""
    with running(server_factory(KINDS[request.param], NO_KEEPALIVE)) as start:
        yield start


# -- (12) wrong argument types ---------------------------------------------------------


class SendsWrongTypes(EchoServer):
    """Before echoing, tries to send what is not a message; records the errors."""

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        for wrong in (123, 10**9, [1, 2, 3], None, 1.5):
            try:
                client.send(wrong)  # type: ignore[arg-type]
            except TypeError as error:
                self.events.append(('refused', str(error)))
        client.send(message)


def test_server_side_send_refuses_what_is_not_a_message(serve: Any) -> None:
    server = serve(SendsWrongTypes)
    with wspy.connect(url(server), **NO_KEEPALIVE) as conn:
        conn.send('hello')
        assert conn.recv().payload == 'hello'  # nothing else was sent before it
    refused = [event[1] for event in server.events if event[0] == 'refused']
    assert len(refused) == 5
    assert all('bytes-like' in text and 'Message' in text and 'str' in text
               for text in refused)
    assert 'not int' in refused[0] and 'not list' in refused[2]


@pytest.mark.parametrize('wrong', [123, 10**9, [1, 2, 3], None, {'a': 1}],
                         ids=['int', 'huge-int', 'list', 'None', 'dict'])
def test_client_send_refuses_what_is_not_a_message(serve: Any, wrong: Any) -> None:
    server = serve()
    with wspy.connect(url(server), **NO_KEEPALIVE) as conn:
        with pytest.raises(TypeError, match=ACCEPTED):
            conn.send(wrong)
        with pytest.raises(TypeError, match=ACCEPTED):
            conn.send(wrong, fragment_size=10)
        conn.send('still open')
        assert conn.recv().payload == 'still open'


def test_bytes_like_objects_are_sent_as_binary(serve: Any) -> None:
    server = serve()
    with wspy.connect(url(server), **NO_KEEPALIVE) as conn:
        for data in (bytearray(b'ab'), memoryview(b'cd'), array.array('B', b'ef')):
            conn.send(data)
            assert conn.recv() == wspy.BinaryMessage(bytes(data))


def test_broadcast_refuses_what_is_not_a_message() -> None:
    with running(server_factory(wspy.AsyncServer, NO_KEEPALIVE)) as start:
        server = start()
        with wspy.connect(url(server), **NO_KEEPALIVE) as conn:
            for wrong in (123, [1, 2]):
                with pytest.raises(TypeError, match=ACCEPTED):
                    server.broadcast(wrong)
            server.broadcast(bytearray(b'to all'))
            assert conn.recv() == wspy.BinaryMessage(b'to all')


def test_message_and_frame_constructors_refuse_wrong_types() -> None:
    for wrong in (5, [1, 2], None):
        with pytest.raises(TypeError, match='bytes-like'):
            wspy.BinaryMessage(wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match='bytes-like'):
            wspy.Frame(wspy.OPCODE_BINARY, wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wspy.BinaryMessage('text')  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wspy.TextMessage(b'bytes')  # type: ignore[arg-type]
    assert wspy.BinaryMessage(bytearray(b'x')).payload == b'x'


def test_control_frame_over_125_bytes_is_refused_when_built() -> None:
    for opcode in (OPCODE_PING, OPCODE_PONG):
        with pytest.raises(wspy.PingError, match='125'):
            ControlFrame(opcode, b'x' * 126)
    with pytest.raises(ValueError, match='125'):
        ControlFrame(OPCODE_CLOSE, b'\x03\xe8' + b'x' * 124)
    frame = ControlFrame(OPCODE_PING, b'x' * 125, b'abcd')
    assert read_frame(frame.pack()) == frame  # the largest one parses back


# -- (13) loglevel shows the log ---------------------------------------------------------

_SERVE_ONCE = """
import logging, sys, wspy
{setup}
server = wspy.{kind}(('127.0.0.1', 0), loglevel=logging.DEBUG)
again = wspy.{kind}(('127.0.0.1', 0), loglevel=logging.DEBUG)
again._release()
server.start()
with wspy.connect(f'ws://127.0.0.1:{{server.address[1]}}/', ping_interval=None):
    pass  # the server is running
server.shutdown()
print(len(logging.getLogger('wspy').handlers), len(logging.getLogger().handlers))
"""


def _serve_once(kind: str, setup: str = '') -> tuple[str, str]:
    result = subprocess.run([sys.executable, '-c', _SERVE_ONCE.format(kind=kind, setup=setup)],
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout, result.stderr


@pytest.mark.parametrize('kind', list(KINDS))
def test_loglevel_shows_the_log(kind: str) -> None:
    out, err = _serve_once(kind)
    assert err.count('serving on') == 1 and 'server stopped' in err
    assert out.split() == ['1', '0']  # one handler, on 'wspy' only, though two servers


@pytest.mark.parametrize('kind', list(KINDS))
def test_loglevel_adds_no_handler_to_configured_logging(kind: str) -> None:
    out, err = _serve_once(kind, 'logging.basicConfig(format="%(levelname)s %(message)s")')
    assert err.count('serving on') == 1  # shown once, by the application's handler
    assert out.split() == ['0', '1']


# -- (14) the 426 answer, and Unix-socket clients' names -------------------------------


def _plain_get(sock: socket.socket) -> tuple[int, Any]:
    sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    reader = HeadReader()
    head = None
    while head is None:
        data = sock.recv(65536)
        assert data, 'closed before a response'
        head = reader.feed(data)
    status, _, headers = parse_response(head)
    return status, headers


def test_426_says_connection_close_only(serve: Any) -> None:
    server = serve()
    with socket.create_connection(('127.0.0.1', server.address[1]), timeout=TIMEOUT) as sock:
        status, headers = _plain_get(sock)
    assert status == 426
    assert headers.get_all('Connection') == ['close']
    assert headers.get('Upgrade') == 'websocket'
    assert headers.get('Sec-WebSocket-Version') == '13'
    client = RawClient(server)
    try:
        status, headers, _ = client.handshake(upgrade_request(version='8'))
    finally:
        client.close()
    assert status == 426
    assert headers.get_all('Connection') == ['close']
    assert headers.get('Upgrade') == 'websocket'
    assert headers.get('Sec-WebSocket-Version') == '13'


def test_error_response_keeps_one_connection_header() -> None:
    response = error_response(426, 'no', [('Connection', 'Upgrade'), ('Upgrade', 'websocket')])
    assert response.headers.get_all('Connection') == ['close']
    assert response.headers.get('Upgrade') == 'websocket'


class NamesClients(EchoServer):
    """Records how each client shows in logs and reprs."""

    def onopen(self, client: wspy.ServerConnection) -> None:
        self.events.append(('names', repr(client), repr(client.sock),
                            str(client.remote_address)))


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / 'named.sock')


def test_unix_socket_client_is_named_after_the_path(serve: Any, socket_path: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = serve(NamesClients, address=socket_path)
    with wspy.connect('ws://localhost/', unix_socket=socket_path, **NO_KEEPALIVE) as conn:
        conn.send('hi')
        assert conn.recv().payload == 'hi'
    names = next(event[1:] for event in server.events if event[0] == 'names')
    assert all(f'unix:{socket_path}' in name for name in names), names
    caplog.set_level(logging.INFO, 'wspy')
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(socket_path)
        assert _plain_get(sock)[0] == 426
    rejected = [r.getMessage() for r in caplog.records if 'rejected' in r.getMessage()]
    assert rejected and f'from unix:{socket_path}:' in rejected[0]


def test_tcp_client_names_are_unchanged(serve: Any) -> None:
    server = serve(NamesClients)
    with wspy.connect(url(server), **NO_KEEPALIVE) as conn:
        conn.send('hi')
        assert conn.recv().payload == 'hi'
    names = next(event[1:] for event in server.events if event[0] == 'names')
    assert all("('127.0.0.1', " in name for name in names), names
