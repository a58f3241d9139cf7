"""HTTP authentication in the opening handshake: Basic (RFC 7617) and Digest (RFC 7616).

Server side, give a server (or a `websocket`) `auth=BasicAuth(...)` or
`auth=DigestAuth(...)`: requests without valid credentials are answered
401 with a challenge, and the user name of those let in is
`connection.user`. Client side, `wspy.connect(url, auth=(user, password))`
(or credentials in the URL) answers a 401 challenge with Basic or Digest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import hmac
import mmap
import os
import re
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO
from urllib.parse import unquote

from wspy.errors import HandshakeError, Unauthorized
from wspy.protocol.auth import DIGEST_ALGORITHMS, digest_response, parse_credentials, quote_string
from wspy.protocol.handshake import Request

try:
    import fcntl
except ImportError:  # not POSIX: no fork either, and a lock between threads is enough
    fcntl = None  # type: ignore[assignment]

#: Default lifetime of a Digest nonce, in seconds.
NONCE_LIFETIME = 300.0
#: How many used nonces a DigestAuth remembers by default (see `tracked_nonces`).
TRACKED_NONCES = 100_000


class Authenticator:
    """Checks a request's credentials during the handshake (see `BasicAuth`, `DigestAuth`).

    Args:
        realm: the protection space named in the challenges.

    Raises:
        ValueError: a realm with a quote or a backslash.
    """

    def __init__(self, realm: str = 'wspy') -> None:
        if '"' in realm or '\\' in realm:
            raise ValueError('a realm cannot contain quotes or backslashes')
        self.realm = realm

    def authenticate(self, request: Request) -> str:
        """The user name the request authenticates as.

        Raises:
            Unauthorized: no valid credentials: the request is answered 401
                with `challenges()`.
        """
        raise NotImplementedError

    def _refuse(self, why: str, stale: bool = False) -> Unauthorized:
        return Unauthorized(f'authentication required: {why}', headers=[
            ('WWW-Authenticate', challenge) for challenge in self.challenges(stale)])

    def challenges(self, stale: bool = False) -> list[str]:
        """The WWW-Authenticate values of a 401."""
        raise NotImplementedError

    def _credentials(self, request: Request, scheme: str) -> dict[str, str]:
        values = request.headers.get_all('Authorization')
        if not values:
            raise self._refuse('no credentials')
        if len(values) > 1:
            raise self._refuse('more than one Authorization header')
        try:
            got_scheme, params = parse_credentials(values[0])
        except HandshakeError:
            raise self._refuse('malformed Authorization header') from None
        if got_scheme != scheme:
            raise self._refuse(f'{got_scheme} credentials where {scheme} is asked')
        return params


class BasicAuth(Authenticator):
    """HTTP Basic authentication (RFC 7617): only over TLS is the password protected.

    RFC 7617 1: "This scheme is not considered to be a secure method of
    user authentication unless used in conjunction with some external
    secure system such as TLS [...], as the user-id and password are passed
    over the network as cleartext": serve wss:// with it. The challenge
    asks for UTF-8 (`charset="UTF-8"`, RFC 7617 2.1).

    Args:
        credentials: a mapping of user names to passwords (compared in
            constant time), or a function `check(user, password) -> bool`.
        realm: the protection space named in the challenge.

    Raises:
        ValueError: a realm with a quote or a backslash.
    """

    def __init__(self, credentials: Mapping[str, str] | Callable[[str, str], bool],
                 realm: str = 'wspy') -> None:
        super().__init__(realm)
        self.credentials = credentials

    def challenges(self, stale: bool = False) -> list[str]:
        """The WWW-Authenticate value of a 401."""
        return [f'Basic realm={quote_string(self.realm)}, charset="UTF-8"']

    def authenticate(self, request: Request) -> str:
        """The user name, if the Basic credentials are right.

        Raises:
            Unauthorized: no Basic credentials, malformed ones, or a wrong
                user name or password (401, with the challenge).
        """
        token = self._credentials(request, 'basic').get('', '')
        try:
            username, colon, password = base64.b64decode(token, validate=True).decode(
                'utf-8').partition(':')
        except (binascii.Error, UnicodeDecodeError):
            raise self._refuse('malformed Basic credentials') from None
        if not colon or not self._check(username, password):
            raise self._refuse(f'wrong user name or password for {username!r}')
        return username

    def _check(self, username: str, password: str) -> bool:
        if callable(self.credentials):
            return bool(self.credentials(username, password))
        expected = self.credentials.get(username)
        # Compare even for an unknown user, so that timing does not tell which users exist.
        matches = hmac.compare_digest((expected or '\0').encode(), password.encode())
        return expected is not None and matches


class DigestAuth(Authenticator):
    """HTTP Digest authentication (RFC 7616), qop=auth, with nonces that expire.

    The password never crosses the network, but a server must know it. A
    nonce is good for `nonce_lifetime` seconds (then the client is told
    `stale=true`, RFC 7616 3.3, and retries without asking the user) and
    each nonce count is accepted once (RFC 7616 3.4: "if the same nc value
    is seen twice, then the request is a replay"), so a captured request
    cannot be replayed: also not by another process forked after this
    object was made (the workers of `Workers` given it as `auth`), which
    shares the record of counts used.

    Args:
        credentials: a mapping of user names to passwords, or a function
            `password(user) -> str | None`.
        realm: the protection space named in the challenges.
        algorithms: the algorithms offered, in order of preference
            ('SHA-256', 'SHA-256-sess', 'MD5', 'MD5-sess'); SHA-256 and MD5
            by default (browsers know only MD5).
        nonce_lifetime: seconds a nonce is good for.
        tracked_nonces: how many nonces the record of counts used holds (20
            bytes each, allocated here); when it is full, the oldest nonce
            makes room and the nonces issued before it are refused as
            stale.

    Raises:
        ValueError: an unknown algorithm, a `tracked_nonces` under 1, or a
            realm with a quote or a backslash.
    """

    def __init__(self, credentials: Mapping[str, str] | Callable[[str], str | None],
                 realm: str = 'wspy', algorithms: Iterable[str] = ('SHA-256', 'MD5'),
                 nonce_lifetime: float = NONCE_LIFETIME,
                 tracked_nonces: int = TRACKED_NONCES) -> None:
        super().__init__(realm)
        self.credentials = credentials
        self.algorithms = list(algorithms)
        for algorithm in self.algorithms:
            if algorithm not in DIGEST_ALGORITHMS:
                raise ValueError(f'unknown Digest algorithm {algorithm!r} '
                                 f'(known: {", ".join(DIGEST_ALGORITHMS)})')
        if tracked_nonces < 1:
            raise ValueError(f'tracked_nonces must be at least 1, not {tracked_nonces}')
        self.nonce_lifetime = nonce_lifetime
        self.opaque = secrets.token_hex(16)
        self._secret = os.urandom(32)
        # Made here, before any fork: the workers of a `Workers` share the record.
        self._used = _NonceRecord(tracked_nonces, self._secret)

    def new_nonce(self) -> str:
        """A nonce that carries its own issue time, signed with this server's secret."""
        body = struct.pack('!d', time.time()) + os.urandom(8)
        signature = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + signature).decode('ascii')

    def _nonce_body(self, nonce: str) -> bytes | None:
        """The issue time and random part of a nonce of ours; None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode('ascii'))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 32:
            return None
        body, signature = raw[:16], raw[16:]
        if not hmac.compare_digest(signature,
                                   hmac.new(self._secret, body, hashlib.sha256).digest()[:16]):
            return None
        return body

    def challenges(self, stale: bool = False) -> list[str]:
        """The WWW-Authenticate values of a 401: one per algorithm, a fresh nonce each."""
        suffix = ', stale=true' if stale else ''
        return [f'Digest realm={quote_string(self.realm)}, qop="auth", algorithm={algorithm}, '
                f'nonce="{self.new_nonce()}", opaque="{self.opaque}", charset=UTF-8{suffix}'
                for algorithm in self.algorithms]

    def authenticate(self, request: Request) -> str:
        """The user name, if the Digest response is right.

        Raises:
            Unauthorized: no Digest credentials or incomplete ones, another
                realm, URI or algorithm, a nonce not of this server, a wrong
                user name or password, or a nonce count used before (401,
                with fresh challenges); `stale=true` for an expired nonce.
        """
        params = self._credentials(request, 'digest')
        username = params.get('username')
        if username is None and params.get('username*', '').lower().startswith("utf-8''"):
            try:
                username = unquote(params['username*'][7:], errors='strict')
            except UnicodeDecodeError:
                raise self._refuse('user name not in UTF-8') from None
        algorithm = params.get('algorithm', 'MD5')
        fields = ('realm', 'nonce', 'uri', 'response', 'qop', 'nc', 'cnonce')
        if username is None or any(field not in params for field in fields):
            raise self._refuse('incomplete Digest credentials')
        if algorithm not in self.algorithms:
            raise self._refuse(f'Digest algorithm {algorithm!r} not offered')
        if params['realm'] != self.realm or params.get('opaque', self.opaque) != self.opaque:
            raise self._refuse('credentials for another realm')
        if params['qop'] != 'auth' or not re.fullmatch(r'[0-9a-fA-F]{8}', params['nc']):
            raise self._refuse('unsupported qop or malformed nonce count')
        if params['uri'] != request.target:
            raise self._refuse('credentials for another URI')
        nonce = self._nonce_body(params['nonce'])
        if nonce is None:
            raise self._refuse('unknown nonce')
        issued = _issue_time(nonce)
        password = self._password(username)
        expected = digest_response(algorithm, username, self.realm, password or '',
                                   request.method, params['uri'], params['nonce'], params['nc'],
                                   params['cnonce'])
        if not hmac.compare_digest(expected.encode(), params['response'].lower().encode()) \
                or password is None:
            raise self._refuse(f'wrong user name or password for {username!r}')
        now = time.time()
        if now - issued > self.nonce_lifetime:
            raise self._refuse('nonce expired', stale=True)
        verdict = self._used.record(nonce, int(params['nc'], 16), now - self.nonce_lifetime)
        if verdict is _Verdict.REPLAYED:
            raise self._refuse('nonce count replayed')
        if verdict is _Verdict.FORGOTTEN:
            raise self._refuse('nonce no longer tracked', stale=True)
        return username

    def _password(self, username: str) -> str | None:
        if callable(self.credentials):
            return self.credentials(username)
        return self.credentials.get(username)


def _issue_time(nonce: bytes) -> float:
    """When a nonce (its body: issue time, random part) was issued."""
    issued: float = struct.unpack_from('!d', nonce)[0]
    return issued


class _Verdict(enum.Enum):
    """What the record of used nonces says of a nonce count."""

    ACCEPTED = 'accepted'
    REPLAYED = 'replayed'  # this nonce count (or a higher one) was accepted before
    FORGOTTEN = 'forgotten'  # the nonce is older than the record remembers


class _NonceRecord:
    """The highest nonce count accepted for each nonce, in memory of a fixed size.

    The memory is a shared mapping, and a file lock (which the kernel drops
    when its holder dies) guards it: processes forked from the one that made
    the record (the workers of `Workers`, restarted ones too) share both, so
    a request accepted by one is refused by all. The nonces are spread over
    buckets of `_WAYS` slots by a keyed hash. A nonce that finds its bucket
    full takes the slot of the oldest nonce there, and every nonce issued
    before that one is refused from then on (`forgotten_before`): a
    nonce leaves the record only together with its acceptance. Nonces that
    have expired anyway leave it first.
    """

    _WAYS = 16
    _HEADER = struct.Struct('!d')  # forgotten_before: nonces issued up to then are refused
    _SLOT = struct.Struct('!16sI')  # a nonce's body (issue time first), its highest count

    def __init__(self, capacity: int, hash_key: bytes) -> None:
        self._buckets = max(1, capacity // self._WAYS)
        self._bucket_size = self._WAYS * self._SLOT.size
        self._memory = mmap.mmap(-1, self._HEADER.size + self._buckets * self._bucket_size)
        self._hash_key = hash_key
        self._thread_lock = threading.Lock()
        # Open as long as the record lives; it is never written, only locked.
        self._lock_file: IO[bytes] | None = (
            None if fcntl is None else tempfile.TemporaryFile())  # noqa: SIM115

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Held by one thread of one process at a time."""
        with self._thread_lock:
            if self._lock_file is None:
                yield
                return
            fcntl.lockf(self._lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._lock_file.fileno(), fcntl.LOCK_UN)

    def record(self, nonce: bytes, count: int, expired_before: float) -> _Verdict:
        """Accept `count` for `nonce` if it is higher than any accepted before, and record it.

        Nonces issued before `expired_before` are refused by the caller, so
        their slots may be taken.
        """
        issued = _issue_time(nonce)
        bucket = self._HEADER.size + self._bucket_of(nonce) * self._bucket_size
        with self._locked():
            victim, victim_issued = bucket, float('inf')
            for slot in range(bucket, bucket + self._bucket_size, self._SLOT.size):
                held, last_count = self._SLOT.unpack_from(self._memory, slot)
                if held == nonce:
                    if count <= last_count:
                        return _Verdict.REPLAYED
                    self._SLOT.pack_into(self._memory, slot, nonce, count)
                    return _Verdict.ACCEPTED
                held_issued = _issue_time(held)  # 0 for an empty slot
                if held_issued < victim_issued:
                    victim, victim_issued = slot, held_issued
            forgotten_before: float = self._HEADER.unpack_from(self._memory)[0]
            if issued <= forgotten_before or (victim_issued >= issued
                                              and victim_issued >= expired_before):
                return _Verdict.FORGOTTEN  # older than all the bucket remembers
            if victim_issued > forgotten_before:
                self._HEADER.pack_into(self._memory, 0, victim_issued)
            self._SLOT.pack_into(self._memory, victim, nonce, count)
            return _Verdict.ACCEPTED

    def _bucket_of(self, nonce: bytes) -> int:
        digest = hashlib.blake2b(nonce, key=self._hash_key, digest_size=8).digest()
        return int.from_bytes(digest, 'big') % self._buckets
