"""HTTP Basic and Digest authentication, both sides, on every server kind."""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from collections.abc import Callable

import pytest

import wspy
from wspy.auth import _NonceRecord, _Verdict
from wspy.protocol.auth import (authorization, basic_authorization, digest_response,
                                parse_challenges, parse_credentials)
from wspy.protocol.handshake import Headers, Request

from conftest import TIMEOUT, EchoServer, upgrade_request, url

USERS = {'alice': 'wonder land', 'bob': 'b0b', 'zoë': 'ünïcode'}


def test_rfc_7617_example() -> None:
    assert basic_authorization('Aladdin', 'open sesame') == 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='
    with pytest.raises(ValueError):
        basic_authorization('a:b', 'c')


@pytest.mark.parametrize('algorithm,expected', [
    ('MD5', '8ca523f5e9506fed4657c9700eebdbec'),
    ('SHA-256', '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1'),
])
def test_rfc_7616_examples(algorithm: str, expected: str) -> None:
    assert digest_response(algorithm, 'Mufasa', 'http-auth@example.org', 'Circle of Life', 'GET',
                           '/dir/index.html', '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v',
                           '00000001', 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ') == expected


def test_challenge_parsing() -> None:
    parsed = parse_challenges([
        'Digest realm="a, \\"b\\"", qop="auth, auth-int", algorithm=SHA-256, nonce="n1", '
        'Basic realm="x", Negotiate',
        'Bearer', 'Basic dXNlcjpw=='])
    assert parsed == [('digest', {'realm': 'a, "b"', 'qop': 'auth, auth-int',
                                  'algorithm': 'SHA-256', 'nonce': 'n1'}),
                      ('basic', {'realm': 'x'}), ('negotiate', {}), ('bearer', {}),
                      ('basic', {'': 'dXNlcjpw=='})]
    assert parse_credentials('Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==') == (
        'basic', {'': 'QWxhZGRpbjpvcGVuIHNlc2FtZQ=='})
    assert parse_challenges(['"garbage']) == []


def test_client_prefers_the_strongest_digest() -> None:
    challenges = parse_challenges(['Basic realm="r"', 'Digest realm="r", nonce="n", qop="auth", '
                                   'algorithm=MD5', 'Digest realm="r", nonce="m", qop="auth", '
                                   'algorithm=SHA-256, opaque="o"'])
    value = authorization(challenges, 'u', 'p', 'GET', '/')
    assert value is not None
    scheme, params = parse_credentials(value)
    assert (scheme, params['algorithm'], params['nonce'], params['opaque']) == (
        'digest', 'SHA-256', 'm', 'o')
    assert authorization(parse_challenges(['Basic realm="r"']), 'u', 'p', 'GET', '/') == \
        basic_authorization('u', 'p')
    assert authorization(parse_challenges(['Bearer realm="r"']), 'u', 'p', 'GET', '/') is None


class Recorder:
    """Remembers which user each connection authenticated as."""

    def onopen(self, client: wspy.ServerConnection) -> None:
        self.users.append(client.user)  # type: ignore[attr-defined]

    def process_request(self, request: Request) -> wspy.Response | None:
        self.users_seen_first.append(request.user)  # type: ignore[attr-defined]
        return None


def recording(serve, auth: wspy.BasicAuth | wspy.DigestAuth) -> wspy.BaseServer:
    server = serve(type('AuthServer', (Recorder, EchoServer), {}),
                   auth=auth)
    server.users = []
    server.users_seen_first = []
    return server


@pytest.mark.parametrize('scheme', ['basic', 'digest-SHA-256', 'digest-MD5'])
def test_right_and_wrong_credentials(serve, scheme: str) -> None:
    if scheme == 'basic':
        auth = wspy.BasicAuth(USERS, realm='chat')
    else:
        auth = wspy.DigestAuth(USERS, realm='chat', algorithms=[scheme[len('digest-'):]])
    server = recording(serve, auth)
    port = server.address[1]
    for user, password in USERS.items():
        conn = wspy.connect(url(server), auth=(user, password))
        conn.send('in')
        assert conn.recv().payload == 'in'
        conn.close()
    conn = wspy.connect(f'ws://bob:b0b@127.0.0.1:{port}/')  # credentials in the URL
    conn.close()
    deadline = time.monotonic() + 5
    while len(server.users) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.users == [*USERS, 'bob']
    assert server.users_seen_first == [*USERS, 'bob']
    with pytest.raises(wspy.InvalidStatus, match='refused the credentials') as info:
        wspy.connect(url(server), auth=('alice', 'wrong'))
    assert info.value.status == 401
    with pytest.raises(wspy.InvalidStatus) as info:
        wspy.connect(url(server))  # no credentials at all
    assert info.value.status == 401
    challenge = dict(info.value.headers)['WWW-Authenticate']
    assert challenge.lower().startswith('basic' if scheme == 'basic' else 'digest')
    assert 'realm="chat"' in challenge
    assert_echoes_with(server, ('alice', 'wonder land'))


def assert_echoes_with(server: wspy.BaseServer, credentials: tuple[str, str]) -> None:
    conn = wspy.connect(url(server), auth=credentials)
    conn.send('still serving')
    assert conn.recv().payload == 'still serving'
    conn.close()


def test_credential_check_functions(serve) -> None:
    basic = serve(auth=wspy.BasicAuth(lambda user, password: password == user[::-1]))
    wspy.connect(url(basic), auth=('abc', 'cba')).close()
    with pytest.raises(wspy.InvalidStatus):
        wspy.connect(url(basic), auth=('abc', 'abc'))
    digest = serve(auth=wspy.DigestAuth(lambda user: user.upper() if user != 'x' else None))
    wspy.connect(url(digest), auth=('abc', 'ABC')).close()
    with pytest.raises(wspy.InvalidStatus):
        wspy.connect(url(digest), auth=('x', 'X'))


def raw_handshake(raw_client, server: wspy.BaseServer, extra: str = '') -> tuple[int, Headers]:
    client = raw_client(server)
    status, headers, _ = client.handshake(upgrade_request('/', extra))
    client.close()
    return status, headers


def digest_for(challenge: str, nc: str = '00000001', user: str = 'alice') -> str:
    params = parse_challenges([challenge])[0][1]
    response = digest_response(params['algorithm'], user, params['realm'], USERS[user], 'GET',
                               '/', params['nonce'], nc, 'c0ffee')
    return (f'Authorization: Digest username="{user}", realm="{params["realm"]}", uri="/", '
            f'algorithm={params["algorithm"]}, nonce="{params["nonce"]}", nc={nc}, '
            f'cnonce="c0ffee", qop=auth, response="{response}", opaque="{params["opaque"]}"\r\n')


def test_replayed_nonce_count_is_refused(serve, raw_client) -> None:
    server = serve(auth=wspy.DigestAuth(USERS))
    status, headers = raw_handshake(raw_client, server)
    assert status == 401
    challenge = headers.get_all('WWW-Authenticate')[0]
    assert raw_handshake(raw_client, server, digest_for(challenge))[0] == 101
    assert raw_handshake(raw_client, server, digest_for(challenge))[0] == 401  # replayed
    assert raw_handshake(raw_client, server, digest_for(challenge, '00000002'))[0] == 101
    assert raw_handshake(raw_client, server, digest_for(challenge, '00000002'))[0] == 401


def test_a_forked_process_shares_the_record_of_used_nonces() -> None:
    auth = wspy.DigestAuth(USERS)
    header = digest_for(auth.challenges()[0])
    name, _, value = header.strip().partition(': ')
    request = Request('GET', '/', Headers([(name, value)]))

    def accept() -> None:
        assert auth.authenticate(request) == 'alice'

    child = multiprocessing.get_context('fork').Process(target=accept)
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == 0
    with pytest.raises(wspy.Unauthorized, match='replayed'):
        auth.authenticate(request)  # here, after the child accepted it


def test_the_record_of_used_nonces_is_bounded() -> None:
    record = _NonceRecord(16, os.urandom(32))  # one bucket of 16 slots
    now = time.time()
    nonces = [struct.pack('!d', now + seconds) + os.urandom(8) for seconds in range(18)]
    unexpired = now - 300
    for nonce in nonces[1:17]:
        assert record.record(nonce, 1, unexpired) is _Verdict.ACCEPTED
    assert len(record._memory) == 8 + 16 * 20  # as big as it was made, full now
    # Older than all it remembers: refused (stale), and nothing is forgotten for it.
    assert record.record(nonces[0], 1, unexpired) is _Verdict.FORGOTTEN
    # A newer nonce takes the oldest's place; the oldest is refused from then on.
    assert record.record(nonces[17], 1, unexpired) is _Verdict.ACCEPTED
    assert record.record(nonces[1], 2, unexpired) is _Verdict.FORGOTTEN
    # The others are remembered: each count once, in increasing order.
    assert record.record(nonces[2], 1, unexpired) is _Verdict.REPLAYED
    assert record.record(nonces[2], 3, unexpired) is _Verdict.ACCEPTED
    assert record.record(nonces[2], 2, unexpired) is _Verdict.REPLAYED
    assert record.record(nonces[17], 1, unexpired) is _Verdict.REPLAYED


def test_stale_nonce(serve, raw_client) -> None:
    server = serve(auth=wspy.DigestAuth(USERS, nonce_lifetime=0.2))
    challenge = raw_handshake(raw_client, server)[1].get_all('WWW-Authenticate')[0]
    time.sleep(0.3)
    status, headers = raw_handshake(raw_client, server, digest_for(challenge))
    assert status == 401
    assert all('stale=true' in value for value in headers.get_all('WWW-Authenticate'))
    # The client answers a stale challenge again without giving up.
    conn = wspy.connect(url(server), auth=('alice', USERS['alice']))
    conn.close()


@pytest.mark.parametrize('header', [
    'Authorization: Basic !!!notbase64\r\n',
    'Authorization: Basic \r\n',
    'Authorization: Digest username="alice"\r\n',
    'Authorization: Digest username="alice", realm="wspy", uri="/", nonce="forged", nc=00000001, '
    'cnonce="c", qop=auth, response="00"\r\n',
    'Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\nAuthorization: Basic eDp5\r\n',
    'Authorization: Bearer token\r\n',
])
def test_malformed_credentials_get_401(serve, raw_client, header: str) -> None:
    server = serve(auth=wspy.DigestAuth(USERS) if 'Digest' in header else wspy.BasicAuth(USERS))
    assert raw_handshake(raw_client, server, header)[0] == 401
    assert_echoes_with(server, ('bob', 'b0b'))


def test_credentials_not_sent_to_another_host_after_a_redirect(serve) -> None:
    target = serve(auth=wspy.BasicAuth(USERS))

    class Redirect:
        def process_request(self, request: Request) -> wspy.Response:
            return wspy.Response(302, [('Location', f'ws://localhost:{target.address[1]}/')])

    redirector = serve(type('R', (Redirect, EchoServer), {}))
    with pytest.raises(wspy.InvalidStatus) as info:
        wspy.connect(url(redirector), auth=('bob', 'b0b'))
    assert info.value.status == 401
    wspy.connect(url(target), auth=('bob', 'b0b')).close()


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match='unknown Digest algorithm'):
        wspy.DigestAuth(USERS, algorithms=['SHA-1'])
    with pytest.raises(ValueError, match='realm'):
        wspy.BasicAuth(USERS, realm='a"b')
    with pytest.raises(ValueError, match='tracked_nonces'):
        wspy.DigestAuth(USERS, tracked_nonces=0)


# -- hostile header values: parsed in linear time ------------------------------------------

N = 1_000_000  # far over any head limit: a parser quadratic in this takes hours
HOSTILE_VALUES = {
    'spaces before a quote': 'Digest a=b,' + ' ' * N + '"',
    'leading spaces': ' ' * N + '"',
    'commas and spaces': 'Digest a=b' + ', ' * (N // 2) + '"',
    'commas then spaces': ',' * N + ' ' * N + '"',
    'unterminated quote': 'Digest a="' + 'x' * N,
    'backslashes': 'Digest a="' + '\\' * N,
    'escaped quotes': 'Digest a="' + '\\"' * (N // 2),
    'spaces, no equals': 'Digest a' + ' ' * N + 'x',
    'spaces around equals': 'Digest a' + ' ' * N + '=' + ' ' * N,
    'token68 then spaces': 'Basic ' + 'A' * N + ' ' * N + '!',
    'many parameters': 'Digest ' + 'a=b, ' * (N // 5) + '"',
    'many schemes': 'Basic, ' * (N // 20) + '"',
}


def runs_within(seconds: float, function: Callable[[], None]) -> bool:
    """Whether `function` returns (without an exception) within `seconds`, run in a child
    process that is killed when it overstays (a regular expression cannot be interrupted)."""
    child = multiprocessing.get_context('fork').Process(target=function)
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        return False
    return child.exitcode == 0


@pytest.mark.parametrize('shape', HOSTILE_VALUES)
def test_hostile_header_values_are_parsed_in_linear_time(shape: str) -> None:
    value = HOSTILE_VALUES[shape]

    def parse_both_ways() -> None:
        parse_challenges([value])  # as the client reads WWW-Authenticate
        request = Request('GET', '/', Headers([('Authorization', value)]))
        with pytest.raises(wspy.Unauthorized, match='malformed'):
            wspy.DigestAuth(USERS).authenticate(request)

    # About 0.1 s here; a parser quadratic in the length would take hours.
    assert runs_within(2.0, parse_both_ways)


def test_slow_to_parse_authorizations_get_quick_401s(serve, raw_client) -> None:
    server = serve(auth=wspy.DigestAuth(USERS))
    # As long as a header line may be: the former parser spent 0.7 s of CPU on each.
    hostile = 'Authorization: Digest a=b,' + ' ' * 8100 + '"\r\n'
    started = time.monotonic()
    for _ in range(12):
        assert raw_handshake(raw_client, server, hostile)[0] == 401
    assert time.monotonic() - started < 4.0  # some milliseconds each
    assert_echoes_with(server, ('alice', 'wonder land'))


def test_a_malformed_challenge_is_a_clear_client_error(serve) -> None:
    class Hostile:
        def process_request(self, request: Request) -> wspy.Response:
            return wspy.Response(401, [('WWW-Authenticate', 'Digest a=b,' + ' ' * 8000 + '"'),
                                       ('WWW-Authenticate', '"junk')])

    server = serve(type('Hostile', (Hostile, EchoServer), {}))
    with pytest.raises(wspy.InvalidStatus, match='scheme wspy does not speak') as info:
        wspy.connect(url(server), auth=('alice', 'wonder land'))
    assert info.value.status == 401


def test_challenge_parsing_edge_cases() -> None:
    # Empty list elements are skipped; a token68 and parameters may share one header.
    assert parse_challenges([' , Basic abc== , ,Digest a = "x\\\\y" ,, b=c, , Bearer,']) == [
        ('basic', {'': 'abc=='}), ('digest', {'a': 'x\\y', 'b': 'c'}), ('bearer', {})]
    # What follows something malformed is not read.
    for value in ['Digest a=b x, Basic realm="r"', 'Digest a="b, Basic realm="r"',
                  'Basic=x, Basic realm="r"', 'Digest a=b c=d, Basic realm="r"']:
        assert ('basic', {'realm': 'r'}) not in parse_challenges([value])
        with pytest.raises(wspy.HandshakeError):
            parse_credentials(value)
    assert parse_credentials('DIGEST Username="a", NC=00000001') == (
        'digest', {'username': 'a', 'nc': '00000001'})
