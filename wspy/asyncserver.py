"""`AsyncServer`: one thread, `selectors`, many connections, the same protocol core.

Each client is an `AsyncConnection`: the core `Connection` state machine,
fed with frames parsed out of non-blocking reads, whose output goes to a
queue that the loop writes when the socket can take it. Nothing a client
does (a stalled handshake, not reading, vanishing) holds up the others.
"""

from __future__ import annotations

import enum
import logging
import selectors
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wspy.channel import Channel
from wspy.connection import State
from wspy.errors import ConnectionClosed, InvalidState, ProtocolError
from wspy.protocol.frame import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION
from wspy.loop import READ, Loop, Timer
from wspy.protocol.message import Message, as_message
from wspy.handshaking import Handshake
from wspy.server import BACKLOG, SHUTDOWN_REASON, Address, BaseServer, Callbacks, ServerConnection
from wspy.websocket import websocket

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    from wspy.options import ConnectionOptions, ServerOptions, ServerSSLArgs

    _Args = TypeVarTuple('_Args')

logger = logging.getLogger('wspy')

# The states as globals: in Python 3.11, looking a member up on its enum class costs ten
# times as much, and the state is checked for every message.
_OPEN, _CLOSED = State.OPEN, State.CLOSED

#: Least default limit on the bytes queued for one client before it counts as not
#: reading; the default is twice `max_message_size` when that is larger.
MAX_BUFFER_SIZE = 16 << 20
# While a long frame arrives, the socket wakes the loop once this much of it has come.
_RCVLOWAT = 512 << 10
_SO_RCVLOWAT: int | None = getattr(socket, 'SO_RCVLOWAT', None)


class Default(enum.Enum):
    """The type of `DEFAULT`: an option left to be derived from others."""

    DEFAULT = 'DEFAULT'


DEFAULT = Default.DEFAULT


class AsyncConnection(Channel, ServerConnection):
    """A client of an `AsyncServer` or `AsyncClient`: the core `Connection`, driven by the loop.

    `send()` queues and returns at once, from any thread; `buffered_amount`
    tells how much is still queued, and a client with more than the
    server's `max_buffer_size` queued is closed with 1008. `close()` starts
    the close handshake and returns; the connection is closed when the peer
    answers, or after `close_timeout`. Messages arrive through the server's
    `onmessage`, so `recv()` is not available.
    """

    __slots__ = (*Channel.SLOTS, '_broken', '_overflowed', '_close_timer', '_sent_markers',
                 '_tracks_messages', '_rcvlowat')

    server: LoopClients

    def __init__(self, server: LoopClients, sock: websocket,
                 **options: Unpack[ConnectionOptions]) -> None:
        self._channel_init(server.loop, sock)
        self._broken = False
        self._overflowed = False
        self._close_timer: Timer | None = None
        self._sent_markers: deque[tuple[int, Message]] | None = (
            deque() if server._tracks_sent else None)
        self._tracks_messages = server._tracks_sent
        self._rcvlowat = 1  # the socket's SO_RCVLOWAT (see `_await_rest`)
        super().__init__(server, sock, **options)

    # -- sending ------------------------------------------------------------------

    def _send_frames(self, frames: list[Any]) -> None:
        if len(frames) != 1:
            self._send_packed_frame(b''.join([frame.pack() for frame in frames]))
        elif len(frames[0].payload) < self._join_limit or frames[0].masking_key:
            self._send_packed_frame(frames[0].pack())
        else:  # no copy of a large payload: the header goes out with it (sendmsg)
            self._send_packed_frame(frames[0].header(), frames[0].payload)

    # A frame, or a header and its payload, goes to the queue; `_backlogged` checks its size.
    _send_packed_frame = Channel._queue

    def _send_packed(self, data: bytes, message: Message) -> None:
        """Send an already packed message (a broadcast; loop thread); skipped unless open.

        Unless `onsent` tracks it, it is written at once to a client with
        nothing else to write (`Channel._write_or_queue`): a broadcast to
        100,000 idle clients then costs each one system call and little
        more (a third less CPU, measured).
        """
        with self._send_lock:
            if self.close_sent is not None or self.state is not _OPEN:
                return
            if self._tracks_messages:
                self._send_packed_frame(data)
                self._message_queued(message)
            else:
                self._write_or_queue(data)

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
        if self._out_size < self._join_limit and self.loop.events_left:
            # Small replies wait for the other sockets' reads: writing them at once
            # wakes the peer sooner, and it then sends smaller batches (measured).
            self.loop.call_soon(self._flush)
            return
        self._flush()

    def _process(self, parser: Any) -> None:
        """Apply every complete frame that has arrived, then check the partial one."""
        while True:
            for whole in self._whole_messages():
                if self.close_sent is not None or self.state is _CLOSED:
                    break  # after our close frame, or the end: dropped (see next_message)
                try:
                    self.onmessage(whole)
                except Exception as error:
                    self._callback_failed(self.onmessage, error)
            if not parser.buffered:
                break  # the usual read, all whole messages: nothing left for next_message
            message = self.next_message()
            if message is None:
                break
            try:
                self.onmessage(message)
            except Exception as error:
                self._callback_failed(self.onmessage, error)
        if self.state is _CLOSED:
            return
        if parser.buffered:
            if self.check_partial():
                self._await_rest(parser.missing())
        elif self._rcvlowat != 1:
            self._await_rest(0)

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
        else:
            self._connection_lost(error)

    def _transport_broken(self) -> None:
        self._broken = True  # nothing to wait for: the close drops the socket

    def recv(self) -> Message:
        """Not available: an `AsyncServer` delivers messages to `onmessage`."""
        raise InvalidState('AsyncConnection delivers messages to onmessage, not recv()')

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = '') -> None:
        """Start the close handshake and return; safe from any thread.

        What was sent before goes out before the close frame. `onclose`
        follows once the peer has answered, or after `close_timeout` (the
        connection is then dropped).

        Args:
            code: the close code (1000 by default), or None for none.
            reason: the close reason, at most 123 bytes in UTF-8.

        Raises:
            ValueError: a code that may not be sent, a reason without a code,
                or a reason too long.
        """
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
        self._stop_keepalive()
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

    # -- a failure from the loop (a missed keepalive pong: the keepalive is the timers
    # of every ServerConnection) ------------------------------------------------------

    def _end_after_failure(self) -> None:
        self._finish()  # the close frame is queued: the loop writes it, then closes


class _Handshake(Handshake):
    """A client's opening handshake on an `AsyncServer`: answered on the loop once read."""

    __slots__ = ('server',)

    def __init__(self, server: AsyncServer, sock: websocket, address: Any) -> None:
        self.server = server
        super().__init__(server.loop, sock, address)

    def _received(self, count: int) -> None:
        opening = self.opening
        if not opening.feed(self.loop.view[:count]):
            return
        if opening.error is not None:
            self.answer_and_close(opening.response)
            return
        self.server._handshake_done(self)

    def _on_dropped(self) -> None:
        super()._on_dropped()
        self.server._handshakes.discard(self)


class LoopClients(Callbacks[AsyncConnection]):
    """What `AsyncServer` and `AsyncClient` share: connections on a `Loop`, and sending to all.

    `clients` holds the open connections; `broadcast()`, `call_later()` and
    `call_soon_threadsafe()` are safe from any thread.
    """

    connection_class: type[AsyncConnection]
    clients: set[AsyncConnection]
    connection_options: ConnectionOptions
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
        for client in self.clients:
            logger.info('%s: no close handshake within max_join_time, dropping', client)
        self._drop_clients()
        if self._owns_loop:
            self.loop.stop()

    def _drop_clients(self) -> None:
        """Drop every connection at once (loop thread)."""
        for client in list(self.clients):
            client._abort()
            client._drop()

    def broadcast(self, message: Message | str | bytes | bytearray | memoryview) -> None:
        """Send one message to every open client: framed once, queued to each.

        Safe from any thread. A client that does not read only fills its own
        queue (and is closed at `max_buffer_size`); the others are not held
        up. A client with an extension of its own (compression) gets the
        message framed for it.

        Args:
            message: a `str` (sent as text), a bytes-like object (binary) or
                a `Message`.

        Raises:
            TypeError: a message of another type.
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

    def call_later(self, delay: float, callback: Callable[[Unpack[_Args]], object],
                   *args: Unpack[_Args]) -> Timer:
        """Run `callback(*args)` on the server's thread after `delay` seconds; safe from any thread.

        Returns:
            A `wspy.loop.Timer`: `cancel()` it to stop it from running.
        """
        return self.loop.call_later(delay, callback, *args)

    def call_soon_threadsafe(self, callback: Callable[[Unpack[_Args]], object],
                             *args: Unpack[_Args]) -> None:
        """Run `callback(*args)` on the server's thread soon; safe from any thread."""
        self.loop.call_soon_threadsafe(callback, *args)

    def onsent(self, client: AsyncConnection, message: Message) -> None:
        """Called once a message sent to `client` has been completely written to its socket.

        Only when overridden: tracking each message costs a little.

        Args:
            client: the connection it was sent on.
            message: the message, as `send()` or `broadcast()` made it (a
                `TextMessage` or a `BinaryMessage`).
        """


class AsyncServer(BaseServer[AsyncConnection], LoopClients):
    """A WebSocket server on one thread and a `selectors` event loop.

    It has the constructor and callbacks of `Server` (an echo server
    written for one runs on the other), plus `onsent(client, message)`
    once a message has been completely written to the socket. Every
    callback runs on the server's one thread: one that blocks holds up
    every client. `send()`, `broadcast()`, `call_later()` and `shutdown()`
    are safe from any thread.

    Args:
        selector: the `selectors.BaseSelector` subclass to wait with
            (epoll, kqueue, poll, select); by default the platform's best
            (epoll, used directly, on Linux).
        max_buffer_size: the most bytes queued for a client before it is
            closed with 1008 for not reading (by default twice
            `max_message_size`, at least 16 MiB; None: no limit).

    The other arguments are `BaseServer`'s.
    """

    connection_class: type[AsyncConnection] = AsyncConnection

    def __init__(self, address: Address, loglevel: int | None = None,
                 ssl_args: ServerSSLArgs | None = None, max_join_time: float = 2.0,
                 backlog_size: int = BACKLOG, *,
                 selector: type[selectors.BaseSelector] | None = None,
                 max_buffer_size: int | Default | None = DEFAULT,
                 **options: Unpack[ServerOptions]) -> None:
        super().__init__(address, loglevel, ssl_args, max_join_time, backlog_size, **options)
        self._on_loop(Loop(selector), max_buffer_size)
        self._handshakes: set[_Handshake] = set()

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Serve until `shutdown()` (or Ctrl-C), then close every client."""
        self._running = True
        self.loop.register(self.sock, READ, self._accept_ready)
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
            for client in list(self.clients):
                client._drop()
            for handshake in list(self._handshakes):
                handshake.drop()
            self._close_listener()
            self.loop.close()
            self._running = False
            self._stopped.set()
            logger.info('server stopped')

    def _serving(self) -> int:
        return len(self.clients) + len(self._handshakes)

    def _start_handshake(self, sock: websocket, address: Any) -> Handshake:
        handshake = _Handshake(self, sock, address)
        self._handshakes.add(handshake)
        return handshake

    def _handshake_done(self, handshake: _Handshake) -> None:
        self._handshakes.discard(handshake)
        sock = handshake.release()
        sock.finish_handshake(handshake.opening)
        try:
            client = self._adopt(sock, handshake.opening.response)
        except Exception:  # a connection_class of the application's
            logger.exception('could not set up the connection from %s', handshake.address)
            handshake.drop()
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
            handshake.drop()
        self._close_clients()

    def _release(self) -> None:
        self._close_listener()
        self.loop.close()
