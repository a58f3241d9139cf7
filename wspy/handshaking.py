"""`Handshake`: a client's opening handshake read on a `Loop` without blocking.

What both servers do with a new connection before it is a WebSocket: the
upgrade request (and the TLS handshake before it) is read as it arrives, so
a silent or trickling client holds no thread; one that takes longer than
`handshake_timeout` (a loop timer) or sends a request to refuse gets its
HTTP error, and the socket then lingers (up to LINGER_TIME) for the
client's end of file before it is closed (the core's `ServerOpening`
decides these answers). What is done with the bytes is the server's:
`AsyncServer` feeds them to the `ServerOpening`, which answers on the loop;
`Server` reads the head only, and hands it with the socket to a thread of
its pool, which answers it (`process_request` may take its time there).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

from wspy.channel import Channel
from wspy.errors import HandshakeError
from wspy.loop import WRITE, Loop, Timer
from wspy.websocket import LINGER_BYTES, LINGER_TIME, websocket

logger = logging.getLogger('wspy')

# What `Channel` takes its send lock with: only the loop thread writes a handshake.
_NO_LOCK = contextlib.nullcontext()


class Handshake(Channel):
    """A client's socket on a loop while its upgrade request arrives.

    `start()` it once made. `opening` (the core's `ServerOpening`) gives
    the time allowed and the HTTP answers of refusals; subclasses feed what
    arrives (`_received`) to it, or to a head reader of their own, and
    either refuse the request (`reject`, `answer_and_close`) or `release()`
    the socket to go on elsewhere. `_on_dropped()` is called once the socket
    is closed here.
    """

    __slots__ = (*Channel.SLOTS, 'sock', 'address', '_send_lock', 'opening', 'timer',
                 'released', 'registered')

    #: Whether `start()` reads what has arrived before it registers the socket. Not by
    #: default: an event-loop server answers the requests read in one turn together,
    #: their 101s written at the end of it (see `AsyncConnection._flush_queued`);
    #: answered one by one as they are accepted, a handshake costs a sixth more there.
    read_at_once = False

    def __init__(self, loop: Loop, sock: websocket, address: Any) -> None:
        self._channel_init(loop, sock)
        self.sock = sock
        #: The client's address, as `accept()` gave it.
        self.address = address
        self._send_lock = _NO_LOCK
        #: The opening handshake as the core decides it.
        self.opening = sock.server_opening()
        self.timer: Timer | None = None
        #: Whether the socket has gone on to its connection (see `release`).
        self.released = False
        #: Whether the socket is registered on the loop (see `start`).
        self.registered = False
        timeout = self.opening.timeout
        if timeout is not None:
            self.timer = loop.call_later(timeout, self._timed_out)

    def start(self) -> None:
        """Watch the socket for the request; with `read_at_once`, read what has arrived
        first, and only then watch it for the rest, if any.

        A client sends its request as soon as it is connected: under load it
        has nearly always arrived by the time the connection is accepted, and
        a socket whose request is read at once need never be registered.
        """
        if self.read_at_once and not self._dropped:
            self._on_readable()
        if not self._dropped and not self.released:
            self.registered = True
            self.loop.register(self.sock, self._events,
                               self._on_event if self._events & WRITE else self._on_readable)

    def _watch(self, events: int) -> None:
        if self.registered:
            super()._watch(events)
        else:  # for `start()` to register
            self._events = events

    def release(self) -> websocket:
        """Stop reading and timing the handshake here; the socket, for its new owner
        (still registered on the loop if `registered`)."""
        self.stop_timer()
        self.released = True
        return self.sock

    def reject(self, error: HandshakeError) -> None:
        """Refuse the request for `error`: its HTTP answer, then close (see
        `answer_and_close`)."""
        self.answer_and_close(self.opening.reject(error))

    def answer_and_close(self, answer: bytes) -> None:
        """Send a refusal's HTTP `answer`, then close once the client has read it
        (LINGER_TIME at most).

        A client whose TLS handshake is not done could not read it: it is
        disconnected at once.
        """
        self.stop_timer()
        tls = self.sock.tls
        if tls is not None and tls.object.version() is None:
            self._drop()
            return
        self._queue(answer)
        self._close_gracefully(LINGER_TIME, LINGER_BYTES)

    def drop(self) -> None:
        """Close the socket at once (loop thread)."""
        self._drop()

    def stop_timer(self) -> None:
        """Cancel the handshake timeout."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _reading(self) -> bool:
        return not self._dropped and not self.released

    def _refused(self, error: HandshakeError) -> None:
        self.reject(error)

    def _lost(self, error: Exception) -> None:
        if isinstance(error, ssl.SSLError):
            logger.info('TLS handshake with %s failed: %s', self.address, error)
        else:
            logger.debug('handshake with %s failed: %s', self.address, error)
        self._drop()

    def _timed_out(self) -> None:
        self.timer = None
        self.answer_and_close(self.opening.timed_out())

    def _on_dropped(self) -> None:
        self.stop_timer()
