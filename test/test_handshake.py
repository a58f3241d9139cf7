"""The opening handshake, without sockets: parsing, limits, checks, answers."""

from __future__ import annotations

import pytest

import wspy
from wspy.protocol.opening import parse_uri, redirect_target
from wspy.protocol.handshake import (Headers, HeadReader, Request, ServerHandshake, accept_key,
                                     check_header_items, check_response, client_request,
                                     error_response, format_host, new_key, parse_request,
                                     parse_response)

from conftest import upgrade_request


def test_accept_key_from_rfc_6455() -> None:
    assert accept_key('dGhlIHNhbXBsZSBub25jZQ==') == 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    assert len(new_key()) == 24 and new_key() != new_key()


def test_headers_are_case_insensitive_and_combined() -> None:
    headers = Headers([('Sec-WebSocket-Protocol', 'a'), ('sec-websocket-protocol', 'b, c')])
    assert headers['SEC-WEBSOCKET-PROTOCOL'] == 'a, b, c'
    assert headers.get_all('Sec-WebSocket-Protocol') == ['a', 'b, c']
    assert headers.tokens('sec-websocket-protocol') == ['a', 'b', 'c']
    assert 'Sec-Websocket-Protocol' in headers and 'Origin' not in headers
    assert headers.get('Origin') is None and len(headers) == 2
    assert list(headers) == ['Sec-WebSocket-Protocol', 'sec-websocket-protocol']
    with pytest.raises(KeyError):
        headers['Origin']
    assert Headers({'A': 'b'}).items() == [('A', 'b')]


def test_head_reader_byte_by_byte_keeps_the_rest() -> None:
    data = upgrade_request() + b'\x81\x00'
    reader = HeadReader()
    heads = [reader.feed(data[i:i + 1]) for i in range(len(data) - 2)]
    assert heads[:-1] == [None] * (len(heads) - 1)
    assert heads[-1] == data[:-2]
    reader = HeadReader()
    assert reader.feed(data) == data[:-2] and reader.rest == b'\x81\x00'


@pytest.mark.parametrize('data,limit', [
    (b'GET /' + b'a' * 9000, {}),
    (b'GET / HTTP/1.1\r\n' + b'X-A: b\r\n' * 129, {}),
    (b'GET / HTTP/1.1\r\n' + b'X-A: ' + b'b' * 100 + b'\r\n', {'max_head_size': 100}),
    (b'GET / HTTP/1.1\r\nA: b\r\nA: b\r\n', {'max_headers': 1}),
])
def test_head_reader_limits(data: bytes, limit: dict) -> None:
    reader = HeadReader(**limit)
    with pytest.raises(wspy.SecurityError) as info:
        for i in range(0, len(data), 7):
            reader.feed(data[i:i + 7])
    assert info.value.status == 431


def test_head_reader_accepts_exactly_the_limits() -> None:
    head = b'GET / HTTP/1.1\r\n' + b'X-A: b\r\n' * 128 + b'\r\n'
    assert HeadReader().feed(head) == head


def test_parse_request() -> None:
    request = parse_request(upgrade_request('/chat?room=1&x=2', 'Origin: http://a\r\n'))
    assert request.method == 'GET' and request.path == '/chat'
    assert request.query == 'room=1&x=2' and request.query_params == {'room': ['1'], 'x': ['2']}
    assert request.headers['origin'] == 'http://a'


@pytest.mark.parametrize('head,status', [
    (b'\r\n\r\n', 400),
    (b'GET /\r\n\r\n', 400),
    (b'GET / HTTP/2.0\r\n\r\n', 505),
    (b'GET / HTTP/1.1\r\nno colon\r\n\r\n', 400),
    (b'GET / HTTP/1.1\r\nbad name: x\r\n\r\n', 400),
    (b'GET / HTTP/1.1\r\n folded: x\r\n\r\n', 400),
    (b'GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n', 400),
])
def test_malformed_requests(head: bytes, status: int) -> None:
    with pytest.raises(wspy.InvalidRequest) as info:
        parse_request(head)
    assert info.value.status == status


def request_with(**changes: str | None) -> Request:
    request = parse_request(upgrade_request())
    headers = Headers([(n, v) for n, v in request.headers.items() if n not in changes])
    for name, value in changes.items():
        if value is not None:
            headers.add(name, value)
    return Request(request.method, request.target, headers, request.version)


@pytest.mark.parametrize('changes,error,status', [
    ({'Upgrade': None}, wspy.NotUpgrade, 426),
    ({'Upgrade': 'h2c'}, wspy.NotUpgrade, 426),
    ({'Connection': 'keep-alive'}, wspy.InvalidRequest, 400),
    ({'Host': None}, wspy.InvalidRequest, 400),
    ({'Sec-WebSocket-Version': None}, wspy.InvalidRequest, 400),
    ({'Sec-WebSocket-Version': '8'}, wspy.UnsupportedVersion, 426),
    ({'Sec-WebSocket-Key': None}, wspy.InvalidRequest, 400),
    ({'Sec-WebSocket-Key': 'c2hvcnQ='}, wspy.InvalidRequest, 400),
    ({'Sec-WebSocket-Key': 'not base64!!!!!!!!!!!!=='}, wspy.InvalidRequest, 400),
])
def test_server_rejects(changes: dict, error: type, status: int) -> None:
    with pytest.raises(error) as info:
        ServerHandshake().check(request_with(**changes))
    assert info.value.status == status


def test_version_rejection_names_version_13() -> None:
    with pytest.raises(wspy.UnsupportedVersion) as info:
        ServerHandshake().check(request_with(**{'Sec-WebSocket-Version': '8'}))
    assert ('Sec-WebSocket-Version', '13') in info.value.headers
    response = error_response(info.value.status, str(info.value), info.value.headers)
    assert response.to_bytes().startswith(b'HTTP/1.1 426 Upgrade Required\r\n')
    assert b'Sec-WebSocket-Version: 13\r\n' in response.to_bytes()


def test_method_duplicate_host_and_key() -> None:
    with pytest.raises(wspy.InvalidMethod) as info:
        ServerHandshake().check(Request('POST', '/', request_with().headers))
    assert info.value.status == 405
    request = request_with()
    request.headers.add('Host', 'other')
    with pytest.raises(wspy.InvalidRequest):
        ServerHandshake().check(request)
    request = request_with()
    request.headers.add('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==')
    with pytest.raises(wspy.InvalidRequest):
        ServerHandshake().check(request)
    with pytest.raises(wspy.InvalidRequest):
        ServerHandshake().check(Request('GET', '/', request_with().headers, 'HTTP/1.0'))


def test_origins_and_locations() -> None:
    handshake = ServerHandshake(trusted_origins=['http://good'], locations=['/ws'])
    with pytest.raises(wspy.InvalidOrigin) as info:
        handshake.check(request_with(Origin='http://evil'))
    assert info.value.status == 403
    with pytest.raises(wspy.InvalidOrigin):
        handshake.check(request_with())
    with pytest.raises(wspy.InvalidLocation) as info2:
        handshake.check(request_with(Origin='http://good'))
    assert info2.value.status == 404
    ok = parse_request(upgrade_request('/ws?x=1', 'Origin: http://good\r\n'))
    assert handshake.check(ok)[1] is None
    assert ServerHandshake(trusted_origins=[None]).check(request_with())[1] is None


def test_subprotocol_selection() -> None:
    handshake = ServerHandshake(protocols=['v2', 'v1'])
    assert handshake.check(request_with(**{'Sec-WebSocket-Protocol': 'v1, v2'}))[1] == 'v2'
    assert handshake.check(request_with(**{'Sec-WebSocket-Protocol': 'v1'}))[1] == 'v1'
    assert handshake.check(request_with(**{'Sec-WebSocket-Protocol': 'v3'}))[1] is None
    assert handshake.check(request_with())[1] is None
    picky = ServerHandshake(protocols=['v1'], select_protocol=lambda offered, ours: offered[-1])
    assert picky.check(request_with(**{'Sec-WebSocket-Protocol': 'a, b'}))[1] == 'b'
    wrong = ServerHandshake(protocols=['v1'], select_protocol=lambda offered, ours: 'zzz')
    with pytest.raises(wspy.InvalidRequest) as info:
        wrong.check(request_with(**{'Sec-WebSocket-Protocol': 'a'}))
    assert info.value.status == 500


def test_accept_response() -> None:
    handshake = ServerHandshake(protocols=['chat'], headers=[('X-Server', 'wspy')])
    request = request_with(**{'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
                              'Sec-WebSocket-Protocol': 'chat'})
    response, protocol, hooks = handshake.accept(request)
    assert hooks == []
    raw = response.to_bytes()
    assert protocol == 'chat'
    assert raw.startswith(b'HTTP/1.1 101 Switching Protocols\r\n') and raw.endswith(b'\r\n\r\n')
    for line in (b'Upgrade: websocket', b'Connection: Upgrade', b'X-Server: wspy',
                 b'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
                 b'Sec-WebSocket-Protocol: chat'):
        assert line + b'\r\n' in raw


def test_client_request_round_trips_through_the_server_check() -> None:
    key = new_key()
    raw = client_request('[::1]:8000', '/a?b=c', key, origin='http://o', protocols=['p1', 'p2'],
                         headers=[('Cookie', 'x=y')])
    request = parse_request(raw)
    assert request.headers['Host'] == '[::1]:8000' and request.headers['Cookie'] == 'x=y'
    assert request.target == '/a?b=c' and request.headers['Origin'] == 'http://o'
    assert ServerHandshake(protocols=['p2']).check(request) == (key, 'p2')


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        check_header_items([('X-A', 'b\r\nEvil: yes')])
    with pytest.raises(ValueError):
        check_header_items({'Bad Name': 'x'})


def response_headers(key: str, **extra: str) -> Headers:
    headers = Headers([('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                       ('Sec-WebSocket-Accept', accept_key(key))])
    for name, value in extra.items():
        headers.add(name.replace('_', '-'), value)
    return headers


def test_check_response() -> None:
    key = new_key()
    assert check_response(101, response_headers(key), key) == (None, [])
    assert check_response(101, response_headers(key, Sec_WebSocket_Protocol='b'), key,
                          ['a', 'b']) == ('b', [])
    with pytest.raises(wspy.InvalidStatus) as info:
        check_response(200, response_headers(key), key)
    assert info.value.status == 200
    with pytest.raises(wspy.InvalidHeader):
        check_response(101, response_headers(new_key()), key)
    with pytest.raises(wspy.InvalidHeader):
        check_response(101, response_headers(key, Sec_WebSocket_Protocol='c'), key, ['a'])
    with pytest.raises(wspy.NegotiationError):
        check_response(101, response_headers(key, Sec_WebSocket_Extensions='x'), key)
    bad = Headers([(n, v) for n, v in response_headers(key).items() if n != 'Upgrade'])
    with pytest.raises(wspy.InvalidHeader):
        check_response(101, bad, key)
    bad = Headers([(n, v) for n, v in response_headers(key).items() if n != 'Connection'])
    with pytest.raises(wspy.InvalidHeader):
        check_response(101, bad, key)


def test_parse_response() -> None:
    status, reason, headers = parse_response(b'HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n')
    assert (status, reason, headers['location']) == (302, 'Found', '/x')
    with pytest.raises(wspy.InvalidResponse):
        parse_response(b'HTTP/1.1 abc\r\n\r\n')
    with pytest.raises(wspy.InvalidResponse):
        parse_response(b'HTTP/1.1 200 OK\r\nbroken\r\n\r\n')


def test_format_host() -> None:
    assert format_host('example.com', 80) == 'example.com'
    assert format_host('example.com', 443, secure=True) == 'example.com'
    assert format_host('example.com', 8080) == 'example.com:8080'
    assert format_host('::1', 8000) == '[::1]:8000'
    assert format_host('::1', 80) == '[::1]'


def test_parse_uri() -> None:
    uri = parse_uri('ws://[::1]:9000/chat?x=1')
    assert (uri.secure, uri.host, uri.port, uri.resource) == (False, '::1', 9000, '/chat?x=1')
    assert uri.host_header == '[::1]:9000'
    assert parse_uri('wss://example.com').port == 443
    assert parse_uri('ws://example.com').resource == '/'
    for bad in ('http://x', 'ws://', 'ws://x:notaport/', 'ws://x/#frag'):
        with pytest.raises(wspy.InvalidURI):
            parse_uri(bad)


def test_redirect_targets() -> None:
    assert redirect_target('ws://a:1/x/y', '/z') == 'ws://a:1/z'
    assert redirect_target('ws://a:1/x/y', 'z?q=1') == 'ws://a:1/x/z?q=1'
    assert redirect_target('wss://a/x', 'http://b:2/c') == 'ws://b:2/c'
    assert redirect_target('ws://a/x', 'https://b/c') == 'wss://b/c'
    assert redirect_target('ws://a/x', 'wss://b/c') == 'wss://b/c'
    with pytest.raises(wspy.RedirectError):
        redirect_target('ws://a/x', 'ftp://b/c')
