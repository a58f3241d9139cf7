"""`Connection`: messages over a blocking `websocket`; the driver of the protocol core.

Every decision of the protocol is `wspy.protocol.connection.Protocol`'s;
this module only moves bytes between the socket and it: thread-safe
writes (a send lock, writes bounded by the socket's `write_timeout`), a
blocking `recv()`, the close handshake's waiting, and the keepalive's
reading for a connection no thread receives on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque

from wspy.answers import HOLD_DELAY, HeldAnswers
from wspy.errors import (ConcurrencyError, ConnectionClosed, ProtocolError, SocketClosed,
                         WriteTimeout)
from wspy.keepalive import scheduler
from wspy.protocol.connection import (CLOSE_TIMEOUT, PING_INTERVAL, PING_TIMEOUT, Protocol,
                                      State)
from wspy.protocol.frame import (CLOSE_GOING_AWAY, CLOSE_NORMAL, DEFAULT_MAX_SIZE, OPCODE_CLOSE,
                                 Frame)
from wspy.protocol.handshake import Request
from wspy.protocol.message import Message
from wspy.websocket import websocket

__all__ = ['CLOSE_TIMEOUT', 'PING_INTERVAL', 'PING_TIMEOUT', 'Connection', 'State']

logger = logging.getLogger('wspy')

# The most the keepalive reads at a time for a connection no thread receives on: the work
# a flooding peer can make for the keepalive thread, which serves every connection, in one
# call (128 KiB of pings took 0.5 s of it under coverage without C).
_KEEPALIVE_READ = 16 << 10

# The states as globals: in Python 3.11, looking a member up on its enum class costs ten
# times as much, and the state is checked for every message.
_CLOSED = State.CLOSED

# Guards the lazy creation of each connection's close event.
_EVENT_LOCK = threading.Lock()


class Connection(Protocol):
    """A WebSocket connection that speaks in messages.

    It reassembles fragments, answers pings, validates UTF-8 as it arrives,
    enforces `max_message_size` (1009) and runs the close handshake with
    `close_timeout`. Sending is safe from several threads at once. Subclass
    it and override the `on*` callbacks, then call `receive_forever()`; or
    call `recv()` and `send()` directly.

    Keepalive: every `ping_interval` seconds a ping goes out, and a peer
    that has not answered it within `ping_timeout` is failed with 1011
    (None turns either off). `latency` holds the last round trip. While no
    thread is in `recv()`, the keepalive reads what has arrived (so a
    connection that only sends sees its pongs) and keeps the messages for
    `recv()`, up to `max_message_size` bytes of them (then it stops reading
    until `recv()` takes them); `onping`, `onpong`, `onerror` and `onclose`
    may then run on the keepalive thread.

    A write the peer takes nothing of for the socket's `write_timeout`
    drops the connection: `send()` raises `WriteTimeout` and `onclose`
    gets 1006. `close()` returns within about `close_timeout` whatever the
    peer does.

    Args:
        sock: a `websocket` whose opening handshake is done (from
            `accept()` or `connect()`); the connection owns it from then on.
        max_message_size: the largest message accepted, in bytes, counted
            across fragments and after decompression (None: no limit); a
            larger one fails the connection with 1009. The socket's frames
            follow it too, unless its `max_frame_size` was given.
        close_timeout: seconds to wait for the peer's side of the close
            handshake before the connection is dropped.
        ping_interval: seconds between keepalive pings (None: no keepalive).
        ping_timeout: seconds a keepalive ping waits for its pong, or to be
            written, before the connection fails with 1011 (None: no limit).

    Raises:
        ValueError: a socket whose handshake is not done.

    Attributes:
        sock: the `websocket` the connection runs on.
        remote_address: the peer's address (`websocket.peer_address()`).

    `state`, `close_sent`, `close_received` and `latency` are `Protocol`'s.
    """

    # Slots: an idle connection is small. `__dict__` keeps subclasses and
    # applications free to add attributes of their own.
    __slots__ = ('__dict__', '__weakref__', '_batch', '_closed', '_held', '_inbox', '_inbox_size',
                 '_reading_for_keepalive', '_recv_lock',
                 '_send_lock', '_transport_closed', 'remote_address', 'sock')

    def __init__(self, sock: websocket, *, max_message_size: int | None = DEFAULT_MAX_SIZE,
                 close_timeout: float = CLOSE_TIMEOUT,
                 ping_interval: float | None = PING_INTERVAL,
                 ping_timeout: float | None = PING_TIMEOUT) -> None:
        if sock.server_side is None or sock.parser is None:
            raise ValueError('the websocket has not done its handshake')
        self.sock = sock
        sock.limit_messages(max_message_size)  # frames follow, unless max_frame_size is set
        # A tuple: without extensions, the empty one, which every connection shares.
        self._init_protocol(sock.server_side, sock.parser, tuple(sock.hooks), max_message_size,
                            close_timeout, ping_interval, ping_timeout)
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        # Made when a thread first waits for the close: idle connections hold none.
        self._closed: threading.Event | None = None
        self._transport_closed = False
        # What a server thread answering a read's messages holds back, and the messages it
        # has yet to deliver of those made in one go (`_deliver_messages`).
        self._held: HeldAnswers | None = None
        self._batch: deque[Message] | None = None
        self.remote_address = sock.peer_address()
        # Messages the keepalive read while no thread was receiving, for `recv()`.
        self._inbox: deque[Message] | None = None
        self._inbox_size = 0
        # The keepalive holds, or is about to take, the receive lock (see `_take_receiving`).
        self._reading_for_keepalive = False
        if ping_interval:
            self._start_keepalive(ping_interval)

    # -- properties ---------------------------------------------------------

    @property
    def request(self) -> Request | None:
        """The client's upgrade request, on the server side."""
        return self.sock.request

    @property
    def user(self) -> str | None:
        """The user name the client authenticated as (server side, with `auth`)."""
        request = self.sock.request
        return None if request is None else request.user

    @property
    def client_address(self) -> str | None:
        """The client's IP address (server side): see `Request.client_address`."""
        request = self.sock.request
        return None if request is None else request.client_address

    @property
    def protocol(self) -> str | None:
        """The negotiated subprotocol, if any."""
        return self.sock.protocol

    # -- writing --------------------------------------------------------------

    def _send_frames(self, frames: list[Frame]) -> None:
        """Write frames to the peer; called with the send lock held.

        Held back instead, frame by frame as `_send_packed_frame` holds
        them, while this thread answers a read's messages; but for a close
        frame: the transport may end right after it.
        """
        held = self._held
        if held is not None:
            if held.thread == threading.get_ident() and frames[0].opcode != OPCODE_CLOSE:
                for frame in frames:
                    self._send_packed_frame(*frame.pack_parts())
                return
            self._write_held()
        self.sock.send(*frames)

    def _send_packed_frame(self, data: bytes, payload: bytes = b'') -> None:
        """Write one frame already packed (or its header, then `payload`); send lock held.

        Held back instead while this thread answers a read's messages.
        """
        held = self._held
        if held is not None:
            if held.holds_for_current_thread():
                held.add(data, payload)
                return
            self._write_held()
        self.sock.send_packed(data, payload)

    def _write_held(self) -> None:
        """Write the answers held back, before anything else; send lock held."""
        assert self._held is not None
        buffers = self._held.take()
        if buffers:
            self.sock.send_buffers(buffers)

    def _held_too_long(self, now: float) -> bool:
        """Whether answers have been held back since before `now - HOLD_DELAY`: a callback
        of the thread holding them blocks."""
        held = self._held
        return held is not None and bool(held.buffers) and now - held.since >= HOLD_DELAY

    def _write_held_now(self, blocking: bool = True) -> None:
        """Write the answers held back; a failed write drops the connection.

        Without `blocking` (from another thread than the one holding them),
        nothing if the send lock is taken: a write under way writes them
        first, and the holding thread only adds to them.
        """
        if not self._send_lock.acquire(blocking):
            return
        failure: Exception | None = None
        try:
            if self._held is not None:
                self._write_held()
        except (OSError, WriteTimeout) as error:
            failure = error
        finally:
            self._send_lock.release()
        if failure is not None:
            self._write_failed(failure)

    def _lock_for_write(self, wait: bool) -> bool:
        """Take the send lock for a control frame; whether it was taken.

        With `wait`, waits up to `close_timeout` for a send under way
        (itself bounded by `write_timeout`). Without, takes it only if that
        and the write cannot block: the lock is free, no answers are held
        back (which would go first) and the socket has room.
        """
        if wait:
            return bool(self._send_lock.acquire(timeout=self.close_timeout))
        if not self._send_lock.acquire(blocking=False):
            return False
        if (self._held is None or not self._held.buffers) and self.sock.writable():
            return True
        self._send_lock.release()
        return False

    def _write_failed(self, error: Exception) -> ConnectionClosed:
        """A write failed or made no progress: drop the connection; what the sender raises."""
        logger.info('%s: write failed, dropping the connection: %s', self, error)
        self._drop()
        if isinstance(error, ConnectionClosed):
            return error
        return SocketClosed(f'write failed: {error}')

    # -- ending the transport ------------------------------------------------------

    def _close_transport(self) -> None:
        """Close the TCP connection the way RFC 6455 7.1.1 asks.

        The server closes first: it shuts down its side, then waits (within
        `close_timeout`) for the client's end of file so that no unread data
        turns the close into a reset. The client waits for the server's.
        """
        server_closes_first = self.sock.server_side or self.close_received is None
        try:
            self.sock.linger(self.close_timeout, shutdown=server_closes_first)
        finally:
            self.sock.close()
            with _EVENT_LOCK:
                self._transport_closed = True
                if self._closed is not None:
                    self._closed.set()

    def abort(self) -> None:
        """Drop the TCP connection at once, waking any thread blocked on it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    _transport_broken = abort

    def _drop(self) -> None:
        """End the transport at once; finish the connection here unless a thread receives.

        A thread receiving finds the transport gone and finishes it itself.
        """
        self.abort()
        if self._take_receiving():
            try:
                self._finish()
            finally:
                self._recv_lock.release()

    _end_after_failure = _drop

    # -- receiving -------------------------------------------------------------------

    def recv(self) -> Message:
        """Receive the next message, waiting for it as long as it takes.

        Control frames are handled on the way: pings answered, pongs seen,
        the peer's close frame answered (the close handshake then ends the
        connection). A protocol error fails the connection with its close
        code (`onerror`, then `onclose`).

        Returns:
            A `TextMessage` (its payload a `str`) or a `BinaryMessage`
            (`bytes`).

        Raises:
            ConnectionClosedOK: the connection has closed with 1000, 1001 or
                1005 (`code` and `reason` say which).
            ConnectionClosedError: it has closed with another code, failed,
                or dropped (1006).
            ConcurrencyError: another thread is receiving: only one may at
                a time.
        """
        if not self._take_receiving():
            raise ConcurrencyError('another thread is already receiving on this connection')
        try:
            inbox = self._inbox
            if inbox:
                kept = inbox.popleft()
                self._inbox_size -= len(kept.payload)
                return kept
            # From a server's onmessage: the next message of its batch.
            message = self._next_in_batch() if self._batch else None
            if message is None:
                message = self._receive_one()
            if message is None:
                raise self._closed_exception()
            return message
        finally:
            self._recv_lock.release()

    def _receive_one(self, deadline: float | None = None) -> Message | None:
        """The next message, read from the socket as needed (before `deadline`, if given).

        None once the connection has ended: this finishes it.
        """
        while True:
            message = self.next_message()
            if message is not None or self.state is _CLOSED:
                return message
            if not self.check_partial():  # fail now, not when the rest arrives
                return None
            if self._held is not None:  # recv() from a callback: the peer may wait for them
                self._write_held_now()
            try:
                self.sock.read_into_parser(deadline)
            except (OSError, SocketClosed) as error:
                self._connection_lost(error)
                return None

    def _receive_ready(self, readable: bool = True,
                       holding: set[Connection] | None = None) -> bool:
        """Apply what has arrived, for a server that reads a connection once it is readable.

        One read if the socket is `readable` (and each time TLS holds more
        decrypted, or a read filled the buffer: a long frame is read through
        without a wait for readability between reads), then every message
        complete in what came, with `onmessage` called between them. The
        receive lock is held on entry and on return (not during `onmessage`,
        which may call `close()` or `recv()`). Returns whether the
        connection is open. With `holding`, the answers to a read's messages
        are held back (see `wspy.answers`) while the connection is in that
        set, where the server finds those held too long.
        """
        sock = self.sock
        if self.state is _CLOSED:
            return False
        more = False
        while True:
            if readable or more:
                try:
                    more = sock.read_into_parser(wait=readable)
                except (OSError, SocketClosed) as error:
                    self._connection_lost(error)
                    return False
                readable = False
            self._deliver_messages(holding)
            if self.state is _CLOSED:
                return False
            if sock.pending():
                readable = True
            elif not more:
                return self.check_partial()

    def _deliver_messages(self, holding: set[Connection] | None = None) -> None:
        """Call `onmessage` with every complete message received, the receive lock released.

        While more messages follow, the answers are held back in `holding`
        (`wspy.answers`): they are written together once the last has been
        delivered, in one system call rather than one each (16 B text echo,
        64 x 16: 79,400 to 95,600 messages a second, `bench/run.py`).
        """
        try:
            while True:
                message = self._next_to_deliver()
                if message is None:
                    return
                if holding is not None and self._held is None and (
                        self._batch or self._parser.buffered):
                    self._held = HeldAnswers()
                    holding.add(self)
                self._recv_lock.release()
                try:
                    self._callback(self.onmessage, message)
                finally:
                    self._recv_lock.acquire()
        finally:
            if self._held is not None:
                self._release_held(holding)

    def _next_to_deliver(self) -> Message | None:
        """The next message for `onmessage`: those the C accelerator made in one go first.

        They wait in `_batch`, where `recv()` from a callback takes them in
        order (16 B text echo, 64 x 16: 25,500 to 20,700 instructions a message,
        `bench/instructions.py wspy-Server`).
        """
        if self._batch:
            message = self._next_in_batch()
            if message is not None:
                return message
        else:
            whole = self._whole_messages()
            if whole:
                if len(whole) > 1:
                    self._batch = deque(whole[1:])
                return whole[0]
        return self.next_message()

    def _next_in_batch(self) -> Message | None:
        """The next message of `_batch`; None, and the rest dropped, after our close frame or
        the end (as `next_message` drops them). An idle connection keeps no batch."""
        batch = self._batch
        assert batch
        if self.close_sent is None and self.state is not _CLOSED:
            message = batch.popleft()
            if not batch:
                self._batch = None
            return message
        self._batch = None
        return None

    def _release_held(self, holding: set[Connection] | None) -> None:
        """Write the answers held back, and send at once again (the holding thread)."""
        if holding is not None:
            holding.discard(self)
        self._write_held_now()
        self._held = None

    def receive_forever(self) -> None:
        """Call `onopen`, then `onmessage` for every message until the connection closes.

        An exception from a callback goes to `onerror` and the loop goes on;
        it returns (without raising) once the connection has closed, after
        `onclose`.
        """
        self._callback(self.onopen)
        while True:
            try:
                message = self.recv()
            except ConnectionClosed:
                return
            self._callback(self.onmessage, message)

    def _take_receiving(self) -> bool:
        """Take the receive lock for a thread of the application; whether it was free.

        The keepalive holds it only for a read that never blocks: that is
        waited for, not taken for another receiving thread.
        """
        if self._recv_lock.acquire(blocking=False):
            return True
        return self._reading_for_keepalive and self._recv_lock.acquire(timeout=self.close_timeout)

    # -- keepalive ---------------------------------------------------------------------

    def _start_keepalive(self, delay: float) -> None:
        """Arrange for `run_keepalive()` to run in `delay` seconds, on the keepalive thread."""
        scheduler.schedule(self, delay)

    def _receive_for_keepalive(self) -> bool:
        """While no thread receives, apply what has arrived without blocking; whether it could.

        Pings are answered and pongs seen (a connection that only sends is
        kept alive); messages wait in the inbox for `recv()`. A broken
        connection is dropped; a close frame is left for `recv()` or
        `close()` to finish (the client waits for the server's end of file).
        """
        if self._inbox_full():
            return False
        self._reading_for_keepalive = True  # before the lock: see `_take_receiving`
        if not self._recv_lock.acquire(blocking=False):
            self._reading_for_keepalive = False
            return False
        # Only with the lock held: the core reads it while applying frames.
        self._output_must_not_wait = True
        broken = read = False
        try:
            while self.close_received is None and not self._inbox_full():
                message = self.next_message()
                if message is None:
                    if read or self.state is _CLOSED:  # one read a call: a flood holds up none
                        break
                    data = self.sock.recv_available(_KEEPALIVE_READ)
                    if data is None:
                        break
                    if not data:
                        raise SocketClosed('connection closed by the peer')
                    self.receive_data(data)
                    read = True
                    continue
                if self._inbox is None:
                    self._inbox = deque()
                self._inbox.append(message)
                self._inbox_size += len(message.payload)
        except ProtocolError as error:
            self._fail(error, wait=False)
            broken = True
        except (OSError, SocketClosed) as error:
            logger.debug('%s: connection lost while idle: %s', self, error)
            broken = True
        finally:
            self._output_must_not_wait = self._reading_for_keepalive = False
            self._recv_lock.release()
        if broken:
            self._drop()
        return True

    def _inbox_full(self) -> bool:
        """Whether the messages waiting for `recv()` reach the limit the keepalive reads to."""
        return self._inbox_size >= (self.max_message_size or DEFAULT_MAX_SIZE)

    # -- closing ----------------------------------------------------------------

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = '') -> None:
        """Start the close handshake and wait (up to `close_timeout`) for it to finish.

        Messages sent before `close()` go out before the close frame. If
        another thread is receiving, it sees the close through; otherwise
        this call reads (and drops) frames until the peer's close arrives.
        RFC 6455 7.1.2: "Once an endpoint has both sent and received a Close
        control frame, that endpoint SHOULD *Close the WebSocket
        Connection*": the server shuts the TCP connection down first and the
        client waits for it (7.1.1). A peer that does not answer within
        `close_timeout` is dropped. Closing a closed connection does nothing.

        Args:
            code: the close code (1000 by default; see the `CLOSE_*`
                constants, 3000-4999 for applications), or None for a close
                frame without one.
            reason: the close reason, at most 123 bytes in UTF-8.

        Raises:
            ValueError: a code that may not be sent, a reason without a code,
                or a reason too long; nothing is sent then.
        """
        deadline = time.monotonic() + self.close_timeout
        with self.sock.writes_until(deadline):
            if not self._send_close(code, reason):
                self.abort()  # a send under way has held the socket for close_timeout
        if self._take_receiving():
            try:
                while self.state is not _CLOSED:
                    if deadline <= time.monotonic():
                        self.abort()
                        self._finish()
                        break
                    self._receive_one(deadline)
            finally:
                self._recv_lock.release()
        elif not self.wait_closed(max(0.0, deadline - time.monotonic())):
            self.abort()
            self.wait_closed(self.close_timeout)

    def start_close(self, code: int | None = CLOSE_GOING_AWAY, reason: str = '') -> None:
        """Send a close frame without waiting; the receiving thread completes the handshake.

        For a connection another thread receives on: its `recv()` raises
        `ConnectionClosed` once the peer has answered. `code` (1001 by
        default) and `reason` are as for `close()`, and so is the
        `ValueError` for a bad one.
        """
        self._send_close(code, reason)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed (its socket too).

        Args:
            timeout: the most seconds to wait (None: no limit).

        Returns:
            Whether the connection is closed.
        """
        with _EVENT_LOCK:
            if self._closed is None:
                self._closed = threading.Event()
                if self._transport_closed:
                    self._closed.set()
            closed = self._closed
        return closed.wait(timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection (1000) when the `with` block ends."""
        self.close()

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.remote_address} {self.state.name}>'
