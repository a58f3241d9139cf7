"""HTTP authentication decisions: Basic (RFC 7617) and Digest (RFC 7616), as data.

Parsing `WWW-Authenticate` and `Authorization` headers (in time linear in
their length), computing Digest responses, and a client's answer to a
challenge. The servers' authenticators, which keep state between requests,
are `wspy.BasicAuth` and `wspy.DigestAuth` (`wspy.auth`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

from wspy.errors import HandshakeError

#: Digest algorithms, strongest first, and their hash functions.
DIGEST_ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    'SHA-256': hashlib.sha256, 'SHA-256-sess': hashlib.sha256,
    'MD5': hashlib.md5, 'MD5-sess': hashlib.md5,
}
# The header grammar of RFC 9110 section 11, scanned left to right. In every pattern below
# two neighbouring runs share no character (or a fixed one stands between them), so a match
# can split its text only one way and costs time linear in what it reads; the scanner tries
# a bounded number of patterns at one place before it moves past what they read or stops.
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# Spaces, then a comma and any empty list elements after it (RFC 9110 5.6.1), or the end.
_ELEMENT_END = r'[ \t]*(?:,[ \t,]*|\Z)'
# A scheme, then the end of the challenge (group 2 is not None) or the spaces before its
# parameters.
_SCHEME = re.compile(rf'({_TOKEN_CHARS})(?:({_ELEMENT_END})|[ \t]+)')
_TOKEN68 = re.compile(rf'([A-Za-z0-9\-._~+/]+=*){_ELEMENT_END}')
_PARAM = re.compile(rf'({_TOKEN_CHARS})[ \t]*=[ \t]*'
                    rf'(?:"([^"\\]*(?:\\.[^"\\]*)*)"|({_TOKEN_CHARS})){_ELEMENT_END}',
                    re.DOTALL)
_ESCAPED = re.compile(r'\\(.)', re.DOTALL)


def parse_challenges(values: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Parse WWW-Authenticate (or Authorization) values into (scheme, parameters) pairs.

    Schemes and parameter names are in lower case; a token68 (as Basic
    credentials) is the parameter ''. Several challenges may share one
    header; parsing a header stops at anything malformed, keeping what came
    before. Takes time linear in the length of the values.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    for value in values:
        challenges.extend(_parse_header(value)[0])
    return challenges


def parse_credentials(value: str) -> tuple[str, dict[str, str]]:
    """Parse an Authorization value: (scheme in lower case, parameters; token68 under '').

    `HandshakeError` if the value is not exactly one well-formed credentials.
    """
    parsed, well_formed = _parse_header(value)
    if not well_formed or len(parsed) != 1:
        raise HandshakeError('malformed Authorization header')
    return parsed[0]


def _parse_header(value: str) -> tuple[list[tuple[str, dict[str, str]]], bool]:
    """The challenges of one header value, and whether all of it was well formed."""
    challenges: list[tuple[str, dict[str, str]]] = []
    position = len(value) - len(value.lstrip(' \t,'))  # empty list elements
    while position < len(value):
        scheme = _SCHEME.match(value, position)
        if scheme is None:
            return challenges, False
        params: dict[str, str] = {}
        challenges.append((scheme.group(1).lower(), params))
        position = scheme.end()
        if scheme.group(2) is None:  # spaces: a token68 or parameters follow
            position = _parse_challenge_params(value, position, params)
            if position < 0:
                return challenges, False
    return challenges, True


def _parse_challenge_params(value: str, position: int, params: dict[str, str]) -> int:
    """Read a token68 or auth-params into `params`: where the next challenge starts (or the
    end of the value); -1 if they are malformed."""
    token68 = _TOKEN68.match(value, position)
    if token68 is not None:
        params[''] = token68.group(1)
        return token68.end()
    next_position = -1
    while (param := _PARAM.match(value, position)) is not None:
        name, quoted, token = param.groups()
        params[name.lower()] = token if quoted is None else _ESCAPED.sub(r'\1', quoted)
        position = next_position = param.end()
    return next_position


def quote_string(value: str) -> str:
    """`value` as an HTTP quoted-string (RFC 9110 5.6.4): in quotes, `"` and `\\` escaped."""
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


# -- Digest computation ---------------------------------------------------------------

def digest_response(algorithm: str, username: str, realm: str, password: str, method: str,
                    uri: str, nonce: str, nc: str, cnonce: str, qop: str = 'auth') -> str:
    """The `response` value of RFC 7616 section 3.4.1, for qop=auth."""
    hash_function = DIGEST_ALGORITHMS[algorithm]

    def h(data: str) -> str:
        """The algorithm's hex digest of `data` in UTF-8 (RFC 7616's H)."""
        return hash_function(data.encode('utf-8')).hexdigest()

    a1 = h(f'{username}:{realm}:{password}')
    if algorithm.endswith('-sess'):
        a1 = h(f'{a1}:{nonce}:{cnonce}')
    a2 = h(f'{method}:{uri}')
    return h(f'{a1}:{nonce}:{nc}:{cnonce}:{qop}:{a2}')


# -- client -------------------------------------------------------------------------------

def authorization(challenges: Iterable[tuple[str, dict[str, str]]], username: str,
                  password: str, method: str, uri: str) -> str | None:
    """The Authorization value answering the best challenge we support, or None.

    Digest with the strongest algorithm offered (SHA-256 before MD5) is
    preferred over Basic.
    """
    digests = [params for scheme, params in challenges
               if scheme == 'digest' and params.get('algorithm', 'MD5') in DIGEST_ALGORITHMS
               and 'auth' in [q.strip() for q in params.get('qop', 'auth').split(',')]
               and 'nonce' in params]
    if digests:
        order = list(DIGEST_ALGORITHMS)
        params = min(digests, key=lambda p: order.index(p.get('algorithm', 'MD5')))
        return _digest_authorization(params, username, password, method, uri)
    if any(scheme == 'basic' for scheme, _ in challenges):
        return basic_authorization(username, password)
    return None


def basic_authorization(username: str, password: str) -> str:
    """`Basic` credentials (RFC 7617, UTF-8): 'Basic ' and the base64 of 'user:password'.

    Raises:
        ValueError: a user name with a colon (RFC 7617 2: "a user-id
            containing a colon character is invalid").
    """
    if ':' in username:
        raise ValueError('a Basic user name cannot contain a colon')
    token = base64.b64encode(f'{username}:{password}'.encode()).decode('ascii')
    return f'Basic {token}'


def _digest_authorization(params: dict[str, str], username: str, password: str, method: str,
                          uri: str) -> str:
    algorithm = params.get('algorithm', 'MD5')
    realm = params.get('realm', '')
    nonce = params['nonce']
    cnonce = secrets.token_hex(16)
    nc = '00000001'  # each answer goes on a fresh connection with a fresh nonce
    response = digest_response(algorithm, username, realm, password, method, uri, nonce, nc,
                               cnonce)
    if username.isascii():
        user_param = f'username={quote_string(username)}'
    else:
        user_param = f"username*=UTF-8''{quote(username, safe='')}"
    fields = [user_param, f'realm={quote_string(realm)}', f'uri={quote_string(uri)}',
              f'algorithm={algorithm}', f'nonce={quote_string(nonce)}', f'nc={nc}',
              f'cnonce={quote_string(cnonce)}', 'qop=auth', f'response={quote_string(response)}']
    if 'opaque' in params:
        fields.append(f'opaque={quote_string(params["opaque"])}')
    return 'Digest ' + ', '.join(fields)
