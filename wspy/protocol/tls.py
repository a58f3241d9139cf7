"""TLS over memory buffers: one session, network bytes in, plaintext out, and back.

The session (`TLS`) encrypts and decrypts in memory (`ssl.MemoryBIO`); a
driver moves the bytes. So blocking and event-loop code share one
implementation, and the socket stays a plain `socket.socket` underneath.
OpenSSL forbids using one `SSL` object from two threads at once: a driver
where one thread receives while others send gives the session its locks
(every call here holds `lock`; no lock is held while waiting on the network).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any, cast

from wspy.errors import HandshakeError

#: The most plaintext encrypted at once: bounds the ciphertext held in memory.
CHUNK_SIZE = 256 << 10
_TLS_HANDSHAKE_RECORD = 0x16


class PlainHTTPOnTLSPort(HandshakeError):
    """A client spoke plain HTTP (or anything but TLS) to a TLS port."""

    def __init__(self) -> None:
        super().__init__('this port speaks TLS: use https:// or wss://', 400)


class TLS:
    """One TLS session: bytes from the network in, plaintext out, and back.

    `feed()` takes what the socket received; `read_into()` gives plaintext;
    `encrypt()` and `take_output()` give bytes for the socket, which the
    caller sends in the order it takes them (under `wire_lock`).
    """

    __slots__ = ('object', 'incoming', 'outgoing', 'lock', 'wire_lock', 'server_side',
                 'backlog', 'started', 'shut', 'more')

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None = None, *,
                 lock: Any = None, wire_lock: Any = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        #: The `ssl.SSLObject`: `getpeercert()`, `cipher()`, `version()`, ...
        self.object = context.wrap_bio(self.incoming, self.outgoing, server_side,
                                       server_hostname)
        # Without locks (one thread), a context that does nothing stands for them.
        self.lock = contextlib.nullcontext() if lock is None else lock
        #: Held while taking output and sending it, so that it goes out in order.
        self.wire_lock = contextlib.nullcontext() if wire_lock is None else wire_lock
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
