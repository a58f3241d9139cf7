"""An in-memory driver of the protocol core, for tests: bytes in, bytes out, a fake clock.

`MemoryConnection` is a `wspy.protocol.connection.Protocol` whose transport
is a bytearray: what it writes is kept in `written` (`sent()` parses it back
into frames), what the peer sends is handed to `feed()`. No socket, no
thread, no waiting: time is a `FakeClock` the test moves forward.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from wspy.errors import ConnectionClosed, SocketClosed
from wspy.protocol.connection import Protocol
from wspy.protocol.extension import Extension, Hook, accept_response, negotiate, offer_header
from wspy.protocol.frame import DEFAULT_MAX_SIZE, Frame, FrameParser
from wspy.protocol.message import Message


class FakeClock:
    """A clock that only moves when told to (`advance`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the time forward."""
        self.now += seconds


class FakeLock:
    """A lock for one thread that refuses to be taken twice (a deadlock in a real driver)."""

    def __init__(self) -> None:
        self.held = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        assert not self.held, 'the send lock taken again while held: a real driver would hang'
        self.held = True
        return True

    def release(self) -> None:
        assert self.held, 'the send lock released while not held'
        self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class MemoryConnection(Protocol):
    """A `Protocol` driven in memory: records what it writes and every callback.

    - `written`: the bytes written to the peer; `sent()` parses them into frames;
    - `events`: ('ping', payload), ('pong', payload), ('error', exception),
      ('close', code, reason), in the order the callbacks ran;
    - `transport_closed`, `aborted`: whether the driver was told to end the transport;
    - `writable`: set it False to make every write that must not wait find no room;
    - `write_error`: an exception every write raises (a broken transport);
    - `keepalive_delays`: the delays `_start_keepalive` was asked for.
    """

    def __init__(self, *, server_side: bool = True, hooks: Sequence[Hook] = (),
                 max_message_size: int | None = DEFAULT_MAX_SIZE,
                 max_frame_size: int | str | None = 'message',
                 close_timeout: float = 10.0, ping_interval: float | None = None,
                 ping_timeout: float | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self._send_lock = FakeLock()
        self.written = bytearray()
        self.events: list[tuple[Any, ...]] = []
        self.transport_closed = False
        self.aborted = False
        self.writable = True
        self.write_error: Exception | None = None
        self.keepalive_delays: list[float] = []
        # The state each write happened in; (state, transport_closed) when onclose ran.
        self.write_states: list[Any] = []
        self.onclose_saw: tuple[Any, bool] | None = None
        rsv_allowed = 0
        for hook in hooks:
            rsv_allowed |= hook.rsv_bits
        # As `websocket.limit_messages`: frames are limited as messages are by default.
        frame_limit = max_message_size if max_frame_size == 'message' else max_frame_size
        assert not isinstance(frame_limit, str)
        parser = FrameParser(require_mask=server_side, max_frame_size=frame_limit,
                             rsv_allowed=rsv_allowed)
        self._init_protocol(server_side, parser, tuple(hooks), max_message_size, close_timeout,
                            ping_interval, ping_timeout)
        if ping_interval:
            self._start_keepalive(ping_interval)

    # -- the driver's part ----------------------------------------------------------

    def _lock_for_write(self, wait: bool) -> bool:
        if not wait and not self.writable:
            return False
        return bool(self._send_lock.acquire())

    def _write(self, data: bytes) -> None:
        assert self._send_lock.held, 'a write without the send lock'
        if self.write_error is not None:
            raise self.write_error
        self.written += data
        self.write_states.append(self.state)

    def _send_frames(self, frames: list[Frame]) -> None:
        self._write(b''.join(frame.pack() for frame in frames))

    def _send_packed_frame(self, data: bytes, payload: bytes = b'') -> None:
        self._write(data + payload)

    def _write_failed(self, error: Exception) -> ConnectionClosed:
        self.events.append(('write failed', error))
        self.abort()
        self._finish()
        return error if isinstance(error, ConnectionClosed) else SocketClosed(str(error))

    def _close_transport(self) -> None:
        self.transport_closed = True

    def _end_after_failure(self) -> None:
        self.abort()
        self._finish()

    def abort(self) -> None:
        self.aborted = True

    def _start_keepalive(self, delay: float) -> None:
        self.keepalive_delays.append(delay)

    # -- callbacks ------------------------------------------------------------------

    def onping(self, payload: bytes) -> None:
        self.events.append(('ping', payload))

    def onpong(self, payload: bytes) -> None:
        self.events.append(('pong', payload))

    def onerror(self, error: Exception) -> None:
        self.events.append(('error', error))

    def onclose(self, code: int, reason: str) -> None:
        self.events.append(('close', code, reason))
        self.onclose_saw = (self.state, self.transport_closed)

    # -- what a test does -----------------------------------------------------------------

    def feed_bytes(self, data: bytes) -> list[Message]:
        """Hand raw bytes to the core and collect the messages they complete."""
        self.receive_data(data)
        messages: list[Message] = []
        while True:
            message = self.next_message()
            if message is None:
                return messages
            messages.append(message)

    def feed(self, *frames: Frame, mask: bool | None = None) -> list[Message]:
        """Send frames from the peer; the messages they complete.

        Frames are masked with a random key when the peer is a client
        (unless `mask` says otherwise); a frame with a key keeps it.
        """
        if mask is None:
            mask = self.server_side
        data = b''
        for frame in frames:
            if mask and not frame.masking_key:
                frame = Frame(frame.opcode, frame.payload, os.urandom(4), frame.final,
                              frame.rsv1, frame.rsv2, frame.rsv3)
            elif not mask and frame.masking_key:
                frame = Frame(frame.opcode, frame.payload, b'', frame.final,
                              frame.rsv1, frame.rsv2, frame.rsv3)
            data += frame.pack()
        return self.feed_bytes(data)

    def sent(self) -> list[Frame]:
        """Every frame written so far, parsed back (masking keys kept, payloads unmasked)."""
        parser = FrameParser(max_frame_size=None, rsv_allowed=0x70)
        parser.feed(bytes(self.written))
        frames = list(parser)
        assert not parser.buffered, 'a partial frame was written'
        return frames

    def take_sent(self) -> list[Frame]:
        """The frames written since the last call."""
        frames = self.sent()
        self.written.clear()
        return frames

    def close(self, code: int | None = 1000, reason: str = '') -> bool:
        """Start the close handshake (send our close frame), as a driver's `close()` does."""
        return self._send_close(code, reason)

    def keepalive(self) -> float | None:
        """Run the keepalive as the driver's timer would; when it wants to run again."""
        return self.run_keepalive()

    def lose(self, error: Exception) -> None:
        """The transport broke under the connection."""
        self._connection_lost(error)

    def codes(self) -> list[int | None]:
        """The close codes of the close frames written."""
        return [frame.unpack_close()[0] for frame in self.sent() if frame.opcode == 0x8]

    def closes(self) -> list[tuple[Any, ...]]:
        """The onclose events."""
        return [event for event in self.events if event[0] == 'close']

    def errors(self) -> list[Exception]:
        """The exceptions onerror got."""
        return [event[1] for event in self.events if event[0] == 'error']


def negotiated_hooks(extensions: Sequence[Extension],
                     client_extensions: Sequence[Extension] | None = None,
                     ) -> tuple[list[Hook], list[Hook]]:
    """(server hooks, client hooks) as the opening handshake negotiates them."""
    client_extensions = extensions if client_extensions is None else client_extensions
    response, server_hooks = negotiate(offer_header(client_extensions), extensions)
    return server_hooks, accept_response(response, client_extensions)


def connected_pair(extensions: Sequence[Extension] = (), **options: Any,
                   ) -> tuple[MemoryConnection, MemoryConnection]:
    """A server and a client end with the extensions negotiated, sharing one clock."""
    server_hooks, client_hooks = negotiated_hooks(extensions)
    clock = options.pop('clock', None) or FakeClock()
    server = MemoryConnection(server_side=True, hooks=server_hooks, clock=clock, **options)
    client = MemoryConnection(server_side=False, hooks=client_hooks, clock=clock, **options)
    return server, client


def transfer(source: MemoryConnection, target: MemoryConnection) -> list[Message]:
    """Move what `source` wrote to `target`; the messages it completes there."""
    data = bytes(source.written)
    source.written.clear()
    return target.feed_bytes(data)


__all__ = ['FakeClock', 'FakeLock', 'MemoryConnection', 'connected_pair', 'negotiated_hooks',
           'transfer']
