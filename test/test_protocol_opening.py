"""The opening handshakes as objects fed with bytes: `ServerOpening` and `ClientHandshake`.

No sockets and no threads: what one side decides is fed to the other.
"""

from __future__ import annotations

import base64
import logging

import pytest

import wspy
from wspy.protocol.handshake import parse_response
from wspy.protocol.opening import MAX_ERROR_BODY, ClientHandshake, ClientOpening
from wspy.protocol.server_opening import ServerOpening, OpeningSettings

from conftest import upgrade_request

RFC_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='  # RFC 6455 1.3 and 4.2.2
RFC_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
PEER = ('192.0.2.7', 50000)


def decided(data: bytes, **options: object) -> ServerOpening:
    """A server's opening with `options`, fed `data` in one piece; it must have decided."""
    opening = ServerOpening(OpeningSettings(**options), PEER)  # type: ignore[arg-type]
    assert opening.feed(data)
    return opening


def status_of(opening: ServerOpening) -> int:
    return parse_response(opening.response.split(b'\r\n\r\n')[0] + b'\r\n\r\n')[0]


def header_lines(response: bytes) -> list[bytes]:
    return response.split(b'\r\n\r\n')[0].split(b'\r\n')[1:]


# -- the server's side ------------------------------------------------------------------


def test_a_valid_request_is_answered_101_with_the_rfc_accept_key() -> None:
    opening = decided(upgrade_request('/chat?room=1', key=RFC_KEY))
    assert opening.error is None
    assert opening.response.startswith(b'HTTP/1.1 101 Switching Protocols\r\n')
    assert opening.response.endswith(b'\r\n\r\n')
    lines = header_lines(opening.response)
    assert b'Sec-WebSocket-Accept: ' + RFC_ACCEPT.encode() in lines
    assert b'Upgrade: websocket' in lines and b'Connection: Upgrade' in lines
    assert opening.request is not None and opening.request.path == '/chat'
    assert opening.request.client_address == PEER[0] and opening.request.user is None
    assert (opening.protocol, opening.hooks, opening.rest) == (None, [], b'')


def test_the_server_picks_its_preferred_subprotocol_among_those_offered() -> None:
    request = upgrade_request(extra='Sec-WebSocket-Protocol: superchat, chat\r\n')
    opening = decided(request, protocols=['chat', 'superchat'])
    assert opening.protocol == 'chat'
    assert b'Sec-WebSocket-Protocol: chat' in header_lines(opening.response)
    assert decided(request, protocols=['other']).protocol is None


def test_permessage_deflate_is_negotiated() -> None:
    request = upgrade_request(
        extra='Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n')
    opening = decided(request, extensions=[wspy.DeflateMessage()])
    assert opening.error is None and len(opening.hooks) == 1
    [accepted] = [line for line in header_lines(opening.response)
                  if line.startswith(b'Sec-WebSocket-Extensions: ')]
    assert accepted.startswith(b'Sec-WebSocket-Extensions: permessage-deflate')
    assert decided(request).hooks == []  # a server without extensions declines


def without(name: str, request: bytes | None = None) -> bytes:
    """A valid upgrade request less its `name` header."""
    lines = (request or upgrade_request()).split(b'\r\n')
    return b'\r\n'.join(line for line in lines if not line.startswith(name.encode() + b':'))


@pytest.mark.parametrize('request_bytes,options,error,status', [
    (upgrade_request(key='c2hvcnQ='), {}, wspy.InvalidRequest, 400),
    (without('Sec-WebSocket-Key'), {}, wspy.InvalidRequest, 400),
    (without('Sec-WebSocket-Version'), {}, wspy.InvalidRequest, 400),
    (without('Connection'), {}, wspy.InvalidRequest, 400),
    (without('Host'), {}, wspy.InvalidRequest, 400),
    (without('Upgrade'), {}, wspy.NotUpgrade, 426),
    (upgrade_request(extra='Origin: http://evil\r\n'), {'trusted_origins': ['http://good']},
     wspy.InvalidOrigin, 403),
    (upgrade_request('/elsewhere'), {'locations': ['/ws']}, wspy.InvalidLocation, 404),
    (upgrade_request().replace(b'GET', b'POST', 1), {}, wspy.InvalidMethod, 405),
    (upgrade_request(version='8'), {}, wspy.UnsupportedVersion, 426),
    (upgrade_request().replace(b'HTTP/1.1', b'HTTP/2.0', 1), {}, wspy.InvalidRequest, 505),
])
def test_each_rejection_is_answered_with_its_status(request_bytes: bytes, options: dict,
                                                    error: type, status: int) -> None:
    opening = decided(request_bytes, **options)
    assert isinstance(opening.error, error) and opening.error.status == status
    assert status_of(opening) == status
    assert b'Connection: close' in header_lines(opening.response)


def test_the_version_rejection_names_version_13() -> None:
    opening = decided(upgrade_request(version='8'))
    assert b'Sec-WebSocket-Version: 13' in header_lines(opening.response)


def test_auth_answers_401_with_a_challenge_and_lets_the_right_user_in() -> None:
    auth = wspy.BasicAuth({'alice': 'secret'})
    refused = decided(upgrade_request(), auth=auth)
    assert isinstance(refused.error, wspy.Unauthorized) and status_of(refused) == 401
    assert any(line.startswith(b'WWW-Authenticate: Basic realm=')
               for line in header_lines(refused.response))
    credentials = base64.b64encode(b'alice:secret').decode()
    opening = decided(upgrade_request(extra=f'Authorization: Basic {credentials}\r\n'), auth=auth)
    assert opening.error is None and opening.request is not None
    assert opening.request.user == 'alice'


def test_a_server_auth_that_is_not_an_authenticator_is_a_500() -> None:
    opening = decided(upgrade_request(), auth=('alice', 'secret'))
    assert opening.error is not None and status_of(opening) == 500


def test_process_request_may_answer_instead_of_upgrading() -> None:
    seen = []

    def health(request: wspy.Request) -> wspy.Response | None:
        seen.append(request)
        return wspy.Response(200, body=b'ok') if request.path == '/health' else None

    opening = decided(upgrade_request('/health'), process_request=health)
    assert isinstance(opening.error, wspy.AbortHandshake) and opening.error.status == 200
    assert opening.response.startswith(b'HTTP/1.1 200 OK\r\n')
    assert opening.response.endswith(b'\r\n\r\nok')
    assert {b'Content-Length: 2', b'Connection: close'} <= set(header_lines(opening.response))
    assert seen[0].client_address == PEER[0]
    assert decided(upgrade_request('/ws'), process_request=health).error is None


def test_a_failing_process_request_is_a_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: wspy.Request) -> wspy.Response | None:
        raise RuntimeError('bug')

    with caplog.at_level(logging.ERROR, logger='wspy'):
        opening = decided(upgrade_request(), process_request=broken)
    assert opening.error is not None and opening.error.status == 500
    assert status_of(opening) == 500 and b'bug' not in opening.response
    assert any(record.exc_info for record in caplog.records)


def test_a_request_in_one_byte_pieces_keeps_the_bytes_after_its_head() -> None:
    frame = wspy.Frame(wspy.OPCODE_TEXT, b'hi', masking_key=b'abcd').pack()
    data = upgrade_request(key=RFC_KEY) + frame
    opening = ServerOpening(OpeningSettings(), PEER)
    head_end = len(data) - len(frame)
    assert [opening.feed(data[i:i + 1]) for i in range(head_end - 1)] == [False] * (head_end - 1)
    assert opening.feed(data[head_end - 1:])
    assert opening.error is None and opening.rest == frame
    assert RFC_ACCEPT.encode() in opening.response


def test_a_head_read_elsewhere_is_decided_too() -> None:
    opening = ServerOpening(OpeningSettings(), PEER)
    opening.decide(upgrade_request(key=RFC_KEY), b'rest')
    assert opening.error is None and opening.rest == b'rest'
    refused = ServerOpening(OpeningSettings(), PEER)
    refused.decide(upgrade_request(version='7'))
    assert isinstance(refused.error, wspy.UnsupportedVersion)


@pytest.mark.parametrize('data,limits', [
    (upgrade_request(extra='X-A: b\r\n' * 3), {'max_headers': 7}),
    (upgrade_request(extra=f'X-A: {"b" * 200}\r\n'), {'max_line_length': 100}),
    (upgrade_request(extra=f'X-A: {"b" * 200}\r\n'), {'max_head_size': 200}),
    (b'GET /' + b'a' * 9000, {}),
])
def test_heads_over_the_limits_are_answered_431(data: bytes, limits: dict) -> None:
    opening = decided(data, **limits)
    assert isinstance(opening.error, wspy.SecurityError) and status_of(opening) == 431
    assert opening.request is None


def test_eight_kilobytes_of_spaces_are_refused_at_the_first_byte() -> None:
    opening = ServerOpening(OpeningSettings(), PEER)
    assert opening.feed(b' ')  # decided at once, not after 8 KB or a blank line
    assert status_of(opening) == 400
    assert status_of(decided(b' ' * 8192)) == 400


def test_tls_to_a_plain_port_is_told_so() -> None:
    client_hello = b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + bytes(32)
    opening = decided(client_hello)
    assert status_of(opening) == 400 and b'TLS sent to a plain HTTP port' in opening.response


def test_timed_out_is_a_408() -> None:
    opening = ServerOpening(OpeningSettings(handshake_timeout=2.5), PEER)
    assert not opening.feed(b'GET / HTTP/1.1\r\n')
    assert opening.timeout == 2.5
    answer = opening.timed_out()
    assert answer == opening.response and answer.startswith(b'HTTP/1.1 408 Request Timeout\r\n')
    assert isinstance(opening.error, wspy.HandshakeTimeout)


def test_a_trusted_proxy_gives_the_client_address() -> None:
    request = upgrade_request(extra='X-Forwarded-For: 203.0.113.9\r\n')
    trusted = wspy.TrustedProxies(['192.0.2.0/24'])
    opening = decided(request, trusted_proxies=trusted)
    assert opening.request is not None and opening.request.client_address == '203.0.113.9'
    opening = decided(request)  # not trusted: the peer's own address
    assert opening.request is not None and opening.request.client_address == PEER[0]


# -- the client's side ------------------------------------------------------------------


def test_the_client_request_names_what_it_offers() -> None:
    handshake = ClientHandshake('example.com:8000', '/chat?x=1', origin='http://example.com',
                                protocols=['chat', 'v2'], extensions=[wspy.DeflateMessage()],
                                headers=[('Cookie', 'a=b')])
    lines = handshake.request.split(b'\r\n')
    assert lines[0] == b'GET /chat?x=1 HTTP/1.1' and handshake.request.endswith(b'\r\n\r\n')
    for line in (b'Host: example.com:8000', b'Upgrade: websocket', b'Connection: Upgrade',
                 b'Sec-WebSocket-Version: 13', b'Origin: http://example.com',
                 b'Sec-WebSocket-Protocol: chat, v2', b'Cookie: a=b',
                 b'Sec-WebSocket-Key: ' + handshake.key.encode()):
        assert line in lines
    assert any(line.startswith(b'Sec-WebSocket-Extensions: permessage-deflate')
               for line in lines)
    assert len(base64.b64decode(handshake.key)) == 16
    assert ClientHandshake('example.com').key != handshake.key


def test_the_client_accepts_the_servers_101_and_keeps_what_follows() -> None:
    client = ClientHandshake('localhost', '/', protocols=['v1', 'chat'],
                             extensions=[wspy.DeflateMessage()])
    server = decided(client.request, protocols=['chat'], extensions=[wspy.DeflateMessage()])
    assert server.error is None
    frame = wspy.Frame(wspy.OPCODE_TEXT, b'welcome').pack()
    assert client.feed(server.response + frame)
    assert client.protocol == 'chat' and len(client.hooks) == 1
    assert client.rest == frame
    assert ('Sec-WebSocket-Protocol', 'chat') in client.response_headers


def test_a_response_in_pieces() -> None:
    client = ClientHandshake('localhost')
    data = decided(client.request).response + b'\x81\x00'
    last = len(data) - 3  # the head's last byte comes with the frame
    pieces = [data[i:min(i + 5, last)] for i in range(0, last, 5)]
    assert [client.feed(piece) for piece in pieces] == [False] * len(pieces)
    assert client.feed(data[last:]) and client.rest == b'\x81\x00'


def answer_101(key: str, *extra: str) -> bytes:
    lines = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade',
             f'Sec-WebSocket-Accept: {key}', *extra]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode()


def test_a_wrong_accept_key_is_refused() -> None:
    client = ClientHandshake('localhost')
    with pytest.raises(wspy.InvalidHeader, match='Sec-WebSocket-Accept'):
        client.feed(answer_101(RFC_ACCEPT))


def test_a_subprotocol_or_extension_not_offered_is_refused() -> None:
    client = ClientHandshake('localhost', protocols=['a'])
    server = decided(client.request)
    accept = next(line for line in header_lines(server.response)
                  if line.startswith(b'Sec-WebSocket-Accept: '))[22:].decode()
    with pytest.raises(wspy.InvalidHeader, match='not offered'):
        client.feed(answer_101(accept, 'Sec-WebSocket-Protocol: b'))
    client = ClientHandshake('localhost')
    server = decided(client.request)
    accept = next(line for line in header_lines(server.response)
                  if line.startswith(b'Sec-WebSocket-Accept: '))[22:].decode()
    with pytest.raises(wspy.NegotiationError):
        client.feed(answer_101(accept, 'Sec-WebSocket-Extensions: permessage-deflate'))


def test_a_redirect_is_an_invalid_status_that_the_opening_follows() -> None:
    opening = ClientOpening('ws://example.com/old')
    client = ClientHandshake(opening.host_header, opening.uri.resource)
    with pytest.raises(wspy.InvalidStatus) as info:
        client.feed(b'HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n')
    assert info.value.status == 302 and info.value.location == '/new'
    opening.refused(info.value)
    assert opening.url == 'ws://example.com/new'


def test_a_401_is_an_invalid_status_that_the_opening_answers() -> None:
    opening = ClientOpening('ws://example.com/', auth=('alice', 'secret'))
    client = ClientHandshake(opening.host_header, opening.uri.resource, headers=opening.headers)
    server = decided(client.request, auth=wspy.BasicAuth({'alice': 'secret'}))
    with pytest.raises(wspy.InvalidStatus) as info:
        client.feed(server.response)
    assert info.value.status == 401 and info.value.body == str(server.error).encode() + b'\n'
    opening.refused(info.value)
    again = ClientHandshake(opening.host_header, opening.uri.resource, headers=opening.headers)
    server = decided(again.request, auth=wspy.BasicAuth({'alice': 'secret'}))
    assert server.error is None and again.feed(server.response)


def test_an_error_body_is_waited_for_up_to_its_length() -> None:
    client = ClientHandshake('localhost')
    assert not client.feed(b'HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nabc')
    assert not client.feed(b'defg')
    with pytest.raises(wspy.InvalidStatus) as info:
        client.feed(b'hijEXTRA')
    assert (info.value.status, info.value.body) == (404, b'abcdefghij')


def test_an_error_body_cut_short_comes_with_what_arrived() -> None:
    client = ClientHandshake('localhost')
    assert not client.feed(b'HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\npart')
    with pytest.raises(wspy.InvalidStatus) as info:
        client.feed(b'')  # end of the stream
    assert info.value.body == b'part'
    client = ClientHandshake('localhost')
    assert not client.feed(b'HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\npart')
    error = client.timed_out()
    assert isinstance(error, wspy.InvalidStatus) and error.body == b'part'


def test_an_error_body_is_kept_to_its_limit() -> None:
    client = ClientHandshake('localhost')
    head = b'HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n' % (10 * MAX_ERROR_BODY)
    with pytest.raises(wspy.InvalidStatus) as info:
        client.feed(head + b'x' * (MAX_ERROR_BODY + 10))
    assert len(info.value.body) == MAX_ERROR_BODY


def test_no_answer_is_a_timeout_or_a_closed_connection() -> None:
    client = ClientHandshake('localhost')
    assert not client.feed(b'HTTP/1.1 101 Switching')
    assert isinstance(client.timed_out(), wspy.HandshakeTimeout)
    with pytest.raises(wspy.HandshakeError, match='closed'):
        client.feed(b'')

