"""`AsyncServer`: one thread, `selectors`, many connections, the same protocol core.

Each client is an `AsyncConnection`: the core `Connection` state machine,
fed with frames parsed out of non-blocking reads, whose output goes to a
queue that the loop writes when the socket can take it. Nothing a client
does (a stalled handshake, not reading, vanishing) holds up the others.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import socket
import ssl
from collections import deque
from typing import Any

from wspy.connection import _CLOSED, _OPEN
from wspy.errors import (ConnectionClosed, HandshakeError, HandshakeTimeout, InvalidState,
                         ProtocolError, SocketClosed)
from wspy.frame import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION
from wspy.loop import Loop, Timer
from wspy.message import Message, as_message
from wspy.server import BACKLOG, BUSY, SHUTDOWN_REASON, BaseServer, Callbacks, ServerConnection
from wspy.websocket import LINGER_BYTES, LINGER_TIME, websocket

logger = logging.getLogger('wspy')

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

#: Least default limit on the bytes queued for one client before it counts as not
#: reading; the default is twice `max_message_size` when that is larger.
MAX_BUFFER_SIZE = 16 << 20
# Under TLS, queued chunks smaller than this are joined into one write; larger ones go alone.
# Replies of this size are also written at once, without waiting for the end of the turn.
_JOIN_LIMIT = 64 << 10
# While a long frame arrives, the socket wakes the loop once this much of it has come.
_RCVLOWAT = 512 << 10
_SO_RCVLOWAT: int | None = getattr(socket, 'SO_RCVLOWAT', None)


def _iov_max() -> int:
    """The most buffers one sendmsg takes (IOV_MAX; at least 16)."""
    try:
        return max(os.sysconf('SC_IOV_MAX'), 16)
    except (AttributeError, ValueError, OSError):  # no sysconf, or no such name
        return 16


_IOV_MAX = _iov_max()
_plain_recv_into = socket.socket.recv_into
_plain_send = socket.socket.send
_plain_sendmsg = socket.socket.sendmsg


class Default(enum.Enum):
    """The type of `DEFAULT`: an option left to be derived from others."""

    DEFAULT = 'DEFAULT'


DEFAULT = Default.DEFAULT


class _Channel:
    """A socket on the loop: a queue of bytes to write, and a graceful close.

    Writes happen on the loop thread only; other threads append to the
    queue (under `_send_lock`) and ask the loop to flush it.
    """

    # No slots here, so that AsyncConnection can also derive from ServerConnection:
    # subclasses list these in their own.
    _CHANNEL_SLOTS = ('loop', '_out', '_out_partial', '_out_size', '_queued', '_written',
                      '_events', '_flush_scheduled', '_lingering', '_drained', '_dropped',
                      '_linger_timer')

    loop: Loop
    sock: websocket
    _send_lock: Any
    #: Whether `_wrote` wants to know of each flush (an `onsent` to call).
    _tracks_messages = False

    def _channel_init(self, loop: Loop, sock: websocket) -> None:
        self.loop = loop
        # Made on first use and dropped when empty: idle connections hold no queue.
        self._out: deque[bytes | memoryview] | None = None
        # The unsent tail of a write the socket took only part of: it goes
        # out before anything else, and is never dropped (the peer has its start).
        self._out_partial: list[bytes | memoryview] = []
        self._out_size = 0
        self._queued = 0
        self._written = 0
        self._events = READ
        self._flush_scheduled = False
        self._lingering = False
        self._drained = 0
        self._dropped = False
        self._linger_timer: Timer | None = None

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for this peer and not yet written to the socket."""
        return self._out_size

    def _queue(self, data: bytes, payload: bytes = b'') -> None:
        """Append bytes to write, then `payload`; under the send lock, or on the loop thread."""
        out = self._out
        if out is None:
            out = self._out = deque()
        out.append(data)
        size = len(data)
        if payload:
            out.append(payload)
            size += len(payload)
        self._out_size += size
        self._queued += size
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon_threadsafe(self._flush)

    def _take_tls_buffer(self) -> bytes | memoryview:
        """The next write under TLS (one buffer): small chunks joined, a large one alone."""
        out = self._out
        assert out is not None
        first = out.popleft()
        if len(first) >= _JOIN_LIMIT:
            return first
        parts = [first]
        size = len(first)
        while out and size < _JOIN_LIMIT and len(out[0]) < _JOIN_LIMIT:
            chunk = out.popleft()
            parts.append(chunk)
            size += len(chunk)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def _requeue(self, buffers: list[bytes | memoryview],
                 sent: int) -> deque[bytes | memoryview]:
        """Put back what a write did not take of `buffers`; returns the queue.

        The write took their first `sent` bytes. The rest of a chunk begun
        goes first, and is never dropped (the peer has its start); the chunks
        not begun go back to the front of the queue.
        """
        index = 0
        while index < len(buffers) and sent >= len(buffers[index]):
            sent -= len(buffers[index])
            index += 1
        if sent:
            self._out_partial = [memoryview(buffers[index])[sent:]]
            index += 1
        out = self._out
        if out is None:
            out = self._out = deque()
        out.extendleft(reversed(buffers[index:]))
        return out

    def _flush(self) -> None:
        """Write as much of the queue as the socket takes (loop thread)."""
        error = None
        sock = self.sock
        tls = sock.tls
        with self._send_lock:
            self._flush_scheduled = False
            if self._dropped:
                return
            out = self._out
            while True:
                buffers: list[bytes | memoryview]
                if self._out_partial:
                    buffers = self._out_partial
                    self._out_partial = []
                elif not out:
                    break
                elif tls is not None:
                    buffers = [self._take_tls_buffer()]
                elif len(out) <= _IOV_MAX:  # the whole queue in one write, nothing copied
                    buffers = list(out)
                    out.clear()
                else:
                    buffers = [out.popleft() for _ in range(_IOV_MAX)]
                # This write holds all that is queued, or its sizes are added up.
                size = sum(map(len, buffers)) if out else self._out_size
                try:
                    if len(buffers) != 1:  # never under TLS
                        sent = _plain_sendmsg(sock, buffers)
                    elif tls is None:
                        sent = _plain_send(sock, buffers[0])
                    else:
                        sent = sock.send_bytes(buffers[0])
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    error = exc
                    self._out = out = None
                    self._out_size = 0
                    break
                self._out_size -= sent
                self._written += sent
                if sent < size:
                    out = self._requeue(buffers, sent)
                    if tls is None or sock.unsent():
                        # A short write means a full socket, except that TLS takes at
                        # most CHUNK_SIZE a call: go on while its output all went out.
                        break
            if not out:
                self._out = None
            pending = bool(out) or bool(self._out_partial)
            if not pending and tls is not None and sock.unsent():
                try:
                    pending = not sock.send_unsent()
                except OSError as exc:
                    error = exc
        if error is not None:
            self._lost(error)
            return
        if self._tracks_messages:
            self._wrote()
        if pending:
            self._backlogged()
        if pending or self._events != READ:
            self._watch(READ | WRITE if pending else READ)
        if not pending and self._lingering:
            try:
                sock.shutdown_write()  # our side is done
            except OSError:
                self._drop()

    def _watch(self, events: int) -> None:
        if events != self._events and not self._dropped:
            self._events = events
            self.loop.modify(self.sock, events,
                             self._on_event if events & WRITE else self._on_readable)

    def _on_event(self, mask: int) -> None:
        """The loop's handler while the socket is watched for writing too."""
        if mask & WRITE:
            self._flush()
        if mask & READ and not self._dropped:
            self._on_readable()

    def _on_readable(self, mask: int = READ) -> None:
        """Read into the server's buffer; hand what came to `_received`.

        The loop's handler while the socket is watched for reading only.
        """
        sock = self.sock
        try:
            if sock.tls is None:  # the plain socket's method: one Python call less a read
                count = _plain_recv_into(sock, self.loop.buffer)
            else:
                count = sock.recv_into(self.loop.buffer)
        except (BlockingIOError, InterruptedError):
            pass  # nothing yet, though TLS may have answered a handshake message
        except HandshakeError as error:  # plain HTTP to a TLS port
            self._refused(error)
            return
        except OSError as error:
            self._lost(error)
            return
        else:
            if count and not self._lingering:
                self._received(count)
            else:
                self._got(count)
        if sock.tls is not None and self._reading():
            if sock.unsent():
                self._watch(READ | WRITE)
            if sock.pending():  # decrypted already: the socket will not tell
                self.loop.call_soon(self._resume_reading)

    def _got(self, count: int) -> None:
        """End of file (`count` 0), or bytes that arrive while closing."""
        if self._lingering:  # closing: drop what arrives; end of file ends the close
            self._drained += count
            if not count or self._drained > LINGER_BYTES:
                self._drop()
        else:
            self._lost(SocketClosed('connection closed by the peer'))

    def _reading(self) -> bool:
        """Whether this channel still reads its socket."""
        return not self._dropped

    def _resume_reading(self) -> None:
        if self._reading():
            self._on_readable()

    def _received(self, count: int) -> None:
        """`count` new bytes are at the start of the server's buffer."""
        raise NotImplementedError

    def _refused(self, error: HandshakeError) -> None:
        """The peer is refused with an HTTP error before any handshake."""
        self._lost(error)

    def _close_gracefully(self, timeout: float) -> None:
        """Write what is queued, shut our side, wait for the peer's end of file, then drop.

        Closing with unread input would make the kernel send a reset, which
        can destroy the last bytes sent before the peer reads them.
        """
        if self._lingering or self._dropped:
            return
        self._lingering = True
        self._linger_timer = self.loop.call_later(timeout, self._drop)
        self._flush()

    def _drop(self) -> None:
        """Forget the socket and close it at once (loop thread)."""
        if self._dropped:
            return
        self._dropped = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.loop.unregister(self.sock)
        self.sock.close()
        self._on_dropped()

    def _wrote(self) -> None:
        """Called after each flush, when `_tracks_messages`."""

    def _backlogged(self) -> None:
        """Called after a flush that left bytes queued (the socket took no more)."""

    def _lost(self, error: Exception) -> None:
        """The connection failed under us."""
        self._drop()

    def _on_dropped(self) -> None:
        """Called once the socket is closed."""


class AsyncConnection(_Channel, ServerConnection):
    """A client of an `AsyncServer`: the core `Connection`, driven by the loop.

    `send()` queues and returns at once, from any thread; `buffered_amount`
    tells how much is still queued. `close()` starts the close handshake
    and returns; the connection is closed when the peer answers, or after
    `close_timeout`. Messages arrive through the server's `onmessage`, so
    `recv()` is not available.
    """

    __slots__ = (*_Channel._CHANNEL_SLOTS, '_broken', '_overflowed', '_close_timer',
                 '_keepalive_timer', '_sent_markers', '_tracks_messages', '_rcvlowat')

    server: LoopClients

    def __init__(self, server: LoopClients, sock: websocket, **options: Any) -> None:
        self._channel_init(server.loop, sock)
        self._broken = False
        self._overflowed = False
        self._close_timer: Timer | None = None
        self._keepalive_timer: Timer | None = None
        self._sent_markers: deque[tuple[int, Message]] | None = (
            deque() if server._tracks_sent else None)
        self._tracks_messages = server._tracks_sent
        self._rcvlowat = 1  # the socket's SO_RCVLOWAT (see `_await_rest`)
        super().__init__(server, sock, **options)

    # -- sending ------------------------------------------------------------------

    def _send_frames(self, frames: list[Any]) -> None:
        if len(frames) != 1:
            self._send_packed_frame(b''.join([frame.pack() for frame in frames]))
        elif len(frames[0].payload) < _JOIN_LIMIT or frames[0].masking_key:
            self._send_packed_frame(frames[0].pack())
        else:  # no copy of a large payload: the header goes out with it (sendmsg)
            self._send_packed_frame(frames[0].header(), frames[0].payload)

    # A frame, or a header and its payload, goes to the queue; `_backlogged` checks its size.
    _send_packed_frame = _Channel._queue

    def _send_packed(self, data: bytes, message: Message) -> None:
        """Queue an already packed message (a broadcast); skipped unless open."""
        with self._send_lock:
            if self.close_sent is not None or self.state is not _OPEN:
                return
            self._send_packed_frame(data)
            self._message_queued(message)

    def _backlogged(self) -> None:
        limit = self.server.max_buffer_size
        if limit is not None and self._out_size > limit and not self._overflowed:
            self._overflowed = True
            self.loop.call_soon(self._overflow)

    def _overflow(self) -> None:
        if self.state is _CLOSED:
            return
        limit = self.server.max_buffer_size
        if limit is None or self._out_size <= limit:
            self._overflowed = False  # it caught up meanwhile
            return
        logger.warning('%s: %d bytes queued, over max_buffer_size %d: the client does not '
                       'read; closing with 1008', self, self._out_size,
                       self.server.max_buffer_size)
        with self._send_lock:
            self._out = None  # whole chunks not started; a partly sent one stays
            self._out_size = sum(map(len, self._out_partial))
            if self._sent_markers is not None:
                self._sent_markers.clear()
        self._fail(ProtocolError('client too slow: send buffer over max_buffer_size',
                                 CLOSE_POLICY_VIOLATION))
        self._finish()

    def _message_queued(self, message: Message) -> None:
        if self._sent_markers is not None:
            self._sent_markers.append((self._queued, message))

    def _wrote(self) -> None:
        markers = self._sent_markers
        while markers and markers[0][0] <= self._written:
            self._callback(self.server.onsent, self, markers.popleft()[1])

    # -- receiving ------------------------------------------------------------------

    def _received(self, count: int) -> None:
        parser = self.sock.parser
        assert parser is not None
        parser.lend(self.loop.view[:count])  # frames parsed out of the shared buffer
        # What the frames' callbacks send is written once they have all run.
        self._flush_scheduled = True
        try:
            self._process(parser)
        finally:
            parser.keep()
            self._flush_queued()

    def _flush_queued(self) -> None:
        """Write what was queued while `_flush_scheduled` was held.

        Now if it is large or no other socket is ready, else at the end of
        the loop's turn.
        """
        # Other threads only ever add to the queue: once it is seen to hold something,
        # it still does when `_flush` runs.
        if self._out is None and not self._out_partial:
            with self._send_lock:
                if self._out is None:
                    self._flush_scheduled = False  # a later send schedules a flush again
                    return
        if self._out_size < _JOIN_LIMIT and self.loop.events_left:
            # Small replies wait for the other sockets' reads: writing them at once
            # wakes the peer sooner, and it then sends smaller batches (measured).
            self.loop.call_soon(self._flush)
            return
        self._flush()

    def _process(self, parser: Any) -> None:
        """Apply every complete frame that has arrived, then check the partial one."""
        try:
            while True:
                frame = parser.next_frame()
                if frame is None:
                    break
                message = self._receive_frame(frame)
                if self.close_received is not None:
                    self._finish()
                    return
                if message is not None and self.close_sent is None:
                    try:
                        self.onmessage(message)
                    except Exception as error:
                        self._callback_failed(self.onmessage, error)
                if self.state is _CLOSED:
                    return
            if parser.buffered:
                self._check_partial(parser)
                self._await_rest(parser.missing())
            elif self._rcvlowat != 1:
                self._await_rest(0)
        except ProtocolError as error:
            self._fail(error)
            self._finish()

    def _await_rest(self, missing: int) -> None:
        """Set SO_RCVLOWAT for the rest of a long frame: fewer and larger reads.

        While the frame arrives, the socket wakes the loop only once a good
        part of its rest has come, never more than `missing`, the bytes still
        to come: the peer may send nothing more until it has the answer.
        """
        current = self._rcvlowat
        if current > max(missing, 1):
            lowat = max(min(missing, _RCVLOWAT), 1)
        elif (current == 1 and missing >= 2 * _RCVLOWAT and self.sock.tls is None
              and _SO_RCVLOWAT is not None):
            lowat = _RCVLOWAT
        else:
            return
        assert _SO_RCVLOWAT is not None  # it was raised, so the platform has it
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, lowat)
        except OSError:  # not on this platform, or the socket has gone
            return
        self._rcvlowat = lowat

    def _lost(self, error: Exception) -> None:
        if self.state is _CLOSED:
            self._drop()
            return
        if self.close_sent is None and self.close_received is None:
            logger.info('%s: connection lost: %s', self, error)
            self._callback(self.onerror, error)
        self._broken = True
        self._finish()

    def recv(self) -> Message:
        """Not available: an `AsyncServer` delivers messages to `onmessage`."""
        raise InvalidState('AsyncConnection delivers messages to onmessage, not recv()')

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = '') -> None:
        """Start the close handshake and return; safe from any thread."""
        self._send_close(code, reason)
        self.loop.call_soon_threadsafe(self._arm_close_timer)

    def start_close(self, code: int | None = CLOSE_GOING_AWAY, reason: str = '') -> None:
        """Start the close handshake and return (as `close`)."""
        self.close(code, reason)

    def _arm_close_timer(self) -> None:
        if self.state is not _CLOSED and self._close_timer is None:
            self._close_timer = self.loop.call_later(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if self.state is not _CLOSED:
            logger.info('%s: no close handshake within close_timeout, dropping', self)
            self._broken = True
            self._finish()

    def abort(self) -> None:
        """Drop the connection at once; safe from any thread."""
        self.loop.call_soon_threadsafe(self._abort)

    def _abort(self) -> None:
        self._broken = True
        if self.state is _CLOSED:
            self._drop()
        else:
            self._finish()

    def _close_transport(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._broken:
            self._drop()
        else:
            self._close_gracefully(self.close_timeout)

    def _on_dropped(self) -> None:
        self.server._client_gone(self)

    def _lock_for_write(self, wait: bool) -> bool:
        # Writes only go to the queue: they never block.
        self._send_lock.acquire()
        return True

    # -- keepalive ------------------------------------------------------------------------

    def _start_keepalive(self, delay: float) -> None:
        self._keepalive_timer = self.loop.call_later(delay, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        delay = self._keepalive()
        self._keepalive_timer = (None if delay is None
                                 else self.loop.call_later(delay, self._keepalive_tick))

    def _keepalive_failed(self) -> None:
        self._fail(ProtocolError('keepalive ping timeout', 1011))
        self._finish()


class _Handshake(_Channel):
    """A socket whose opening handshake is under way, read without blocking."""

    __slots__ = (*_Channel._CHANNEL_SLOTS, 'server', 'sock', 'address', '_send_lock', 'reader',
                 'timer')

    def __init__(self, server: AsyncServer, sock: websocket, address: Any) -> None:
        self._channel_init(server.loop, sock)
        self.server = server
        self.sock = sock
        self.address = address
        self._send_lock = contextlib.nullcontext()
        self.reader = sock.head_reader()
        self.timer = None
        if sock.handshake_timeout is not None:
            self.timer = self.loop.call_later(sock.handshake_timeout, self._timed_out)
        self.loop.register(sock, READ, self._on_readable)

    def _received(self, count: int) -> None:
        try:
            head = self.reader.feed(self.loop.view[:count])
            if head is None:
                return
            response = self.sock.answer(head)
        except HandshakeError as error:
            self._reject(error)
            return
        self._stop_timer()
        self.server._handshake_done(self, response)

    def _reading(self) -> bool:
        return not self._dropped and self in self.server._handshakes

    def _refused(self, error: HandshakeError) -> None:
        self._reject(error)

    def _lost(self, error: Exception) -> None:
        if isinstance(error, ssl.SSLError):
            logger.info('TLS handshake with %s failed: %s', self.address, error)
        else:
            logger.debug('handshake with %s failed: %s', self.address, error)
        self._drop()

    def _timed_out(self) -> None:
        self._reject(HandshakeTimeout(f'handshake not completed within '
                                      f'{self.sock.handshake_timeout} s'))

    def _reject(self, error: HandshakeError) -> None:
        self._stop_timer()
        self._queue(self.sock.rejection(error))
        self._close_gracefully(LINGER_TIME)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_dropped(self) -> None:
        self._stop_timer()
        self.server._handshakes.discard(self)


class LoopClients(Callbacks):
    """What `AsyncServer` and `AsyncClient` share: connections on a `Loop`, and sending to all.

    `clients` holds the open connections; `broadcast()`, `call_later()` and
    `call_soon_threadsafe()` are safe from any thread.
    """

    connection_class: type[AsyncConnection]
    clients: set[AsyncConnection]
    connection_options: dict[str, Any]
    max_join_time: float
    #: Whether stopping it stops the loop (an AsyncClient may run on a server's).
    _owns_loop = True
    #: The reason of the 1001 closes when it shuts down.
    _shutdown_reason = SHUTDOWN_REASON

    def _on_loop(self, loop: Loop, max_buffer_size: int | Default | None) -> None:
        self.loop = loop
        if max_buffer_size is DEFAULT:
            message_size = self.connection_options['max_message_size']
            max_buffer_size = None if message_size is None else max(MAX_BUFFER_SIZE,
                                                                    2 * message_size)
        self.max_buffer_size: int | None = max_buffer_size
        self._shutting_down = False
        self._force_timer: Timer | None = None
        self._tracks_sent = type(self).onsent is not LoopClients.onsent

    def _adopt(self, sock: websocket, first: bytes = b'') -> AsyncConnection:
        """A socket whose handshake is done becomes a connection on the loop; `_opened` next.

        `first` is written before anything else (a server's 101 response).
        """
        client = self.connection_class(self, sock, **self.connection_options)
        client._flush_scheduled = True  # `_opened` writes what is queued until it returns
        if first:
            with client._send_lock:
                client._queue(first)
        self.loop.modify(sock, READ, client._on_readable)
        self.clients.add(client)
        return client

    def _opened(self, client: AsyncConnection) -> None:
        """Announce a new connection (`onopen`), then handle what came with its handshake."""
        sock = client.sock
        if self._shutting_down:
            client.start_close(CLOSE_GOING_AWAY, self._shutdown_reason)
        client._callback(client.onopen)
        if sock.parser is not None and sock.parser.buffered:
            client._process(sock.parser)
        client._flush_queued()
        if sock.pending():
            self.loop.call_soon(client._resume_reading)

    def _client_gone(self, client: AsyncConnection) -> None:
        """A connection has closed and left the loop."""
        self.clients.discard(client)
        if self._shutting_down:
            self._stop_when_idle()

    def _close_clients(self) -> None:
        """Shutting down: 1001 to every client; the loop stops once all have gone.

        A client whose close handshake takes over `max_join_time` is dropped.
        """
        self._shutting_down = True
        for client in list(self.clients):
            client.start_close(CLOSE_GOING_AWAY, self._shutdown_reason)
        self._force_timer = self.loop.call_later(self.max_join_time, self._force_stop)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if not self.clients:
            if self._force_timer is not None:
                self._force_timer.cancel()
            if self._owns_loop:
                self.loop.stop()

    def _force_stop(self) -> None:
        for client in list(self.clients):
            logger.info('%s: no close handshake within max_join_time, dropping', client)
            client._abort()
            client._drop()
        if self._owns_loop:
            self.loop.stop()

    def broadcast(self, message: Message | str | bytes | bytearray | memoryview) -> None:
        """Send one message to every open client: framed once, queued to each.

        A `str` is sent as text, a bytes-like object as binary; anything else
        is a `TypeError`. A client that does not read only fills its own queue
        (and is closed at `max_buffer_size`); the others are not held up.
        """
        message = as_message(message)
        data = message.frame().pack()
        if self.loop.in_loop_thread():
            self._broadcast(data, message)
        else:
            self.loop.call_soon_threadsafe(self._broadcast, data, message)

    def _broadcast(self, data: bytes, message: Message) -> None:
        for client in self.clients:
            # Its own compression context, or a client's side (masked): framed for it.
            if client._hooks or not client.sock.server_side:
                try:
                    client.send(message)
                except ConnectionClosed:
                    pass
            else:
                client._send_packed(data, message)

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        """Run `callback(*args)` on the server's thread after `delay` seconds."""
        return self.loop.call_later(delay, callback, *args)

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        """Run `callback(*args)` on the server's thread soon; safe from any thread."""
        self.loop.call_soon_threadsafe(callback, *args)

    def onsent(self, client: AsyncConnection, message: Message) -> None:
        """Called once a message sent to `client` has been completely written."""


class AsyncServer(BaseServer, LoopClients):
    """A WebSocket server on one thread and a `selectors` event loop.

    It has the constructor and callbacks of `Server` (an echo server
    written for one runs on the other), plus `onsent(client, message)`
    once a message has been completely written to the socket.
    `selector` chooses the selector class (epoll, kqueue, poll, select);
    `max_buffer_size` is the most bytes queued for a client before it is
    closed with 1008 for not reading (by default twice `max_message_size`,
    at least 16 MiB; None for no limit). `send()`, `broadcast()`,
    `call_later()` and `shutdown()` are safe from any thread.
    """

    connection_class: type[AsyncConnection] = AsyncConnection
    clients: set[AsyncConnection]  # type: ignore[assignment]

    def __init__(self, address: tuple[Any, ...] | str, loglevel: int | None = None,
                 ssl_args: dict[str, Any] | None = None, max_join_time: float = 2.0,
                 backlog_size: int = BACKLOG, *,
                 selector: type[selectors.BaseSelector] | None = None,
                 max_buffer_size: int | Default | None = DEFAULT, **options: Any) -> None:
        super().__init__(address, loglevel, ssl_args, max_join_time, backlog_size, **options)
        self._on_loop(Loop(selector), max_buffer_size)
        self._handshakes: set[_Handshake] = set()

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Serve until `shutdown()` (or Ctrl-C), then close every client."""
        self._running = True
        self.loop.register(self.sock, READ, self._on_accept)
        logger.info('serving on %s (%s)', self.address, type(self.loop.selector).__name__)
        try:
            while True:
                try:
                    self.loop.run()
                    break
                except KeyboardInterrupt:
                    if self._shutting_down:  # a second Ctrl-C: no more waiting
                        logger.info('interrupted again, dropping every client')
                        self._force_stop()
                    else:
                        logger.info('interrupted, shutting down')
                        self._begin_shutdown()
        finally:
            for channel in [*self.clients, *self._handshakes]:
                channel._drop()
            self._close_listener()
            self.loop.close()
            self._running = False
            self._stopped.set()
            logger.info('server stopped')

    def _on_accept(self, mask: int) -> None:
        for _ in range(64):  # then let the other sockets have a turn
            try:
                sock, address = self.sock.accept(handshake=False)
            except BlockingIOError:
                return
            except OSError as error:
                logger.error('accept failed: %s', error)
                return
            sock.setblocking(False)
            busy = self._busy(len(self.clients) + len(self._handshakes))
            if busy and sock.tls is not None:
                sock.close()  # a TLS client could not read a plain 503
                continue
            handshake = _Handshake(self, sock, address)
            self._handshakes.add(handshake)
            if busy:
                handshake._reject(BUSY)

    def _handshake_done(self, handshake: _Handshake, response: bytes) -> None:
        self._handshakes.discard(handshake)
        handshake.sock.opened(True, handshake.reader.rest)
        try:
            client = self._adopt(handshake.sock, response)
        except Exception:  # a connection_class of the application's
            logger.exception('could not set up the connection from %s', handshake.address)
            handshake._drop()
            return
        self._opened(client)

    # -- for applications, from any thread ----------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting, close every client with 1001, wait up to `max_join_time`.

        From another thread it waits for `run()` to end; from the server's
        own thread (a callback, a signal handler) it returns at once. Called
        again while the clients' close handshakes are under way, it drops
        them at once.
        """
        self.loop.call_soon_threadsafe(self._begin_shutdown)
        self.loop.wake()  # from a signal handler, the loop may be inside select()
        if self._running and not self.loop.in_loop_thread():
            self._stopped.wait()

    def _begin_shutdown(self) -> None:
        if self._shutting_down:  # asked twice: drop the clients still closing
            self._force_stop()
            return
        self.loop.unregister(self.sock)
        self._close_listener()
        for handshake in list(self._handshakes):
            handshake._drop()
        self._close_clients()

    def _release(self) -> None:
        self._close_listener()
        self.loop.close()
