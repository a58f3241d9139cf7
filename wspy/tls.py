"""TLS for `websocket`: contexts from `ssl_args`, and a TLS session over memory buffers.

The session (`TLS`) encrypts and decrypts in memory (`ssl.MemoryBIO`); the
socket moves the bytes. So blocking and event-loop code share one
implementation, the socket stays a plain `socket.socket` underneath, and
one thread may receive while others send (OpenSSL forbids using one
`SSL` object from two threads at once: every call here holds a lock, and
no lock is held while waiting on the network).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, cast

from wspy.errors import HandshakeError

#: The most plaintext encrypted at once: bounds the ciphertext held in memory.
CHUNK_SIZE = 256 << 10
_TLS_HANDSHAKE_RECORD = 0x16

_SERVER_ARGS = frozenset({'certfile', 'keyfile', 'password', 'cafile', 'ca_certs', 'capath',
                          'cert_reqs', 'ciphers'})
_CLIENT_ARGS = frozenset({'certfile', 'keyfile', 'password', 'cafile', 'ca_certs', 'capath',
                          'cert_reqs', 'ciphers', 'check_hostname', 'verify'})


class PlainHTTPOnTLSPort(HandshakeError):
    """A client spoke plain HTTP (or anything but TLS) to a TLS port."""

    def __init__(self) -> None:
        super().__init__('this port speaks TLS: use https:// or wss://', 400)


def server_context(**ssl_args: Any) -> ssl.SSLContext:
    """A server `SSLContext` from the original wspy's `ssl_args`.

    Keys: `certfile` (required), `keyfile`, `password`; for client
    certificates `cafile` (or `ca_certs`), `capath` and `cert_reqs`
    (`ssl.CERT_REQUIRED` or `ssl.CERT_OPTIONAL`; CERT_REQUIRED when a CA is
    given); `ciphers`.
    """
    _check_args(ssl_args, _SERVER_ARGS)
    if 'certfile' not in ssl_args:
        raise TypeError('ssl_args needs a certfile')
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(context, ssl_args)
    return context


def client_context(**ssl_args: Any) -> ssl.SSLContext:
    """A client `SSLContext`: system CAs and host name checks unless told otherwise.

    Keys: `cafile` (or `ca_certs`) and `capath` for other trusted CAs;
    `certfile`, `keyfile`, `password` for a client certificate; `verify`
    False (or `cert_reqs=ssl.CERT_NONE`) to skip certificate checks;
    `check_hostname`; `ciphers`.
    """
    _check_args(ssl_args, _CLIENT_ARGS)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not ssl_args.pop('verify', True):
        ssl_args.setdefault('check_hostname', False)
        ssl_args.setdefault('cert_reqs', ssl.CERT_NONE)
    if 'check_hostname' in ssl_args:
        context.check_hostname = bool(ssl_args.pop('check_hostname'))
    _load(context, ssl_args)
    return context


def _check_args(ssl_args: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(ssl_args) - known
    if unknown:
        raise TypeError(f'unknown ssl_args: {", ".join(sorted(unknown))} '
                        f'(known: {", ".join(sorted(known))})')


def _load(context: ssl.SSLContext, ssl_args: dict[str, Any]) -> None:
    cafile = ssl_args.get('cafile') or ssl_args.get('ca_certs')
    capath = ssl_args.get('capath')
    if cafile or capath:
        context.load_verify_locations(cafile, capath)
        if context.verify_mode == ssl.CERT_NONE:  # a server given a CA checks clients
            context.verify_mode = ssl.CERT_REQUIRED
    if 'cert_reqs' in ssl_args:
        if ssl_args['cert_reqs'] == ssl.CERT_NONE:
            context.check_hostname = False
        context.verify_mode = ssl_args['cert_reqs']
    if ssl_args.get('certfile'):
        context.load_cert_chain(ssl_args['certfile'], ssl_args.get('keyfile'),
                                ssl_args.get('password'))
    if ssl_args.get('ciphers'):
        context.set_ciphers(ssl_args['ciphers'])


class TLS:
    """One TLS session: bytes from the network in, plaintext out, and back.

    `feed()` takes what the socket received; `read_into()` gives plaintext;
    `encrypt()` and `take_output()` give bytes for the socket, which the
    caller sends in the order it takes them (under `wire_lock`).
    """

    __slots__ = ('object', 'incoming', 'outgoing', 'lock', 'wire_lock', 'server_side',
                 'backlog', 'started', 'shut', 'more')

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        #: The `ssl.SSLObject`: `getpeercert()`, `cipher()`, `version()`, ...
        self.object = context.wrap_bio(self.incoming, self.outgoing, server_side,
                                       server_hostname)
        self.lock = threading.Lock()
        #: Held while taking output and sending it, so that it goes out in order.
        self.wire_lock = threading.RLock()
        self.server_side = server_side
        #: Encrypted bytes that a non-blocking socket has not taken yet.
        self.backlog = memoryview(b'')
        self.started = False
        self.shut = False
        self.more = False

    def feed(self, data: bytes) -> None:
        """Hand over bytes received from the network; b'' for end of file."""
        if not self.started and data:
            self.started = True
            if self.server_side and data[0] != _TLS_HANDSHAKE_RECORD:
                raise PlainHTTPOnTLSPort()
        with self.lock:
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def handshake(self) -> bool:
        """Advance the TLS handshake; whether it is complete. Raises `ssl.SSLError`."""
        with self.lock:
            try:
                self.object.do_handshake()
            except ssl.SSLWantReadError:
                return False
        return True

    def read_into(self, view: memoryview) -> int | None:
        """Decrypt into `view` as much as has arrived; None if nothing has, 0 at end of file."""
        count = 0
        with self.lock:
            self.more = False
            while count < len(view):
                try:
                    # Given a buffer, read() returns a count (typeshed says bytes).
                    got = cast(int, self.object.read(len(view) - count, view[count:]))
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return count  # close_notify, or the peer just closed (as ssl does)
                if not got:
                    return count
                count += got
            # A full view may have left data here that the socket will not announce.
            self.more = count == len(view)
        return count or None

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """Encrypt `data` (at most `CHUNK_SIZE` is sensible) and take the output."""
        with self.lock:
            self.object.write(data)
            return self.outgoing.read()

    def take_output(self) -> bytes:
        """Bytes TLS itself wants sent (handshake messages, alerts, close_notify)."""
        with self.lock:
            return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Start the TLS close: the close_notify alert to send."""
        with self.lock:
            if not self.shut:
                self.shut = True
                try:
                    self.object.unwrap()
                except ssl.SSLError:
                    pass  # waiting for the peer's close_notify, or no session at all
            return self.outgoing.read()

    def pending(self) -> bool:
        """Whether the last read may have left data here, readable without the network."""
        return self.more
