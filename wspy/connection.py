"""`Connection`: messages over a `websocket`, and the protocol state machine.

The state machine (`_receive_frame`, `_handle_control`, the close
handshake) never touches the socket itself: it sends through
`_send_frames` and ends the transport through `_close_transport`. The
blocking `Connection` implements those with the socket; the event-loop
server overrides them, so both run one implementation of the protocol.
"""

from __future__ import annotations

import codecs
import enum
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from wspy.errors import (ConcurrencyError, ConnectionClosed, ConnectionClosedError,
                         ConnectionClosedOK, InvalidPayload, PayloadTooBig, PingError,
                         ProtocolError, SocketClosed, WebSocketError, WriteTimeout)
from wspy.protocol.frame import (CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_NORMAL,
                                 DEFAULT_MAX_SIZE, MAX_CONTROL_PAYLOAD, OPCODE_BINARY, OPCODE_CLOSE,
                                 OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
                                 PACK_LIMIT, ControlFrame, Frame, FrameParser, bytes_like,
                                 close_payload, pack_unmasked, parse_close, unmasked_header)
from wspy.keepalive import scheduler
from wspy.protocol.handshake import Request
from wspy.protocol.message import SENDABLE, BinaryMessage, Message, TextMessage, as_message
from wspy.websocket import websocket

logger = logging.getLogger('wspy')

#: Default time to wait for the peer's side of the close handshake, in seconds.
CLOSE_TIMEOUT = 10.0
#: Default keepalive: a ping every `PING_INTERVAL` seconds, answered within `PING_TIMEOUT`.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
# Seconds before a keepalive ping that could not be written at once is tried again.
_KEEPALIVE_RETRY = 1.0
# The most the keepalive reads at a time for a connection no thread receives on: the work
# a flooding peer can make for the keepalive thread, which serves every connection, in one
# call (128 KiB of pings took 0.5 s of it under coverage without C).
_KEEPALIVE_READ = 16 << 10
# Seconds after a ping before the keepalive first reads for its pong (for a connection
# no thread receives on); it then looks again after half the time elapsed.
_PONG_FIRST_LOOK = 0.001

_utf8_decoder = codecs.getincrementaldecoder('utf-8')
_new_object = object.__new__


class State(enum.IntEnum):
    """The states of a connection (RFC 6455 sections 4 and 7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# The states as globals: in Python 3.11, looking a member up on its enum class costs ten
# times as much, and the state is checked for every message.
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


def _check_utf8_tail(decoder: codecs.IncrementalDecoder) -> None:
    # CPython's decoder waits for more bytes after a lead byte 0xED followed
    # by 0xA0-0xBF, although that can only become a surrogate: fail now.
    pending = decoder.getstate()[0]
    if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
        raise InvalidPayload('invalid UTF-8 in a text message')


# Guards the lazy creation of each connection's close event.
_EVENT_LOCK = threading.Lock()


class Connection:
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
    """

    # Slots: an idle connection is small. `__dict__` keeps subclasses and
    # applications free to add attributes of their own.
    __slots__ = ('__dict__', '__weakref__', '_closed', '_decoder', '_failed_code', '_fragments',
                 '_fragments_compressed', '_fragments_opcode', '_fragments_size', '_hooks',
                 '_inbox', '_inbox_size', '_next_ping', '_partial_decoder', '_ping_blocked_since',
                 '_ping_pending', '_recv_lock', '_send_lock', '_transport_closed',
                 '_reading_for_keepalive', 'close_received', 'close_sent', 'close_timeout',
                 'latency', 'max_message_size', 'ping_interval', 'ping_timeout', 'remote_address',
                 'sock', 'state')

    #: Whether `_message_queued` wants each message sent (for `onsent`).
    _tracks_messages = False

    def __init__(self, sock: websocket, *, max_message_size: int | None = DEFAULT_MAX_SIZE,
                 close_timeout: float = CLOSE_TIMEOUT,
                 ping_interval: float | None = PING_INTERVAL,
                 ping_timeout: float | None = PING_TIMEOUT) -> None:
        if sock.server_side is None:
            raise ValueError('the websocket has not done its handshake')
        self.sock = sock
        self._hooks = list(sock.hooks)
        self.max_message_size = max_message_size
        sock.limit_messages(max_message_size)  # frames follow, unless max_frame_size is set
        self.close_timeout = close_timeout
        self.state = _OPEN
        #: (code, reason) of the close frame sent and received, once they are.
        self.close_sent: tuple[int | None, str] | None = None
        self.close_received: tuple[int | None, str] | None = None
        self._failed_code: int | None = None
        self._fragments: list[Any] | None = None
        self._fragments_opcode = 0
        self._fragments_size = 0
        # Whether the message in progress arrived compressed (RSV1 on its first frame).
        self._fragments_compressed = False
        self._decoder: codecs.IncrementalDecoder | None = None
        # Validates the text of a frame that is still arriving (fail fast).
        self._partial_decoder: codecs.IncrementalDecoder | None = None
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        # Made when a thread first waits for the close: idle connections hold none.
        self._closed: threading.Event | None = None
        self._transport_closed = False
        self.remote_address = sock.peer_address()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        #: Round-trip time of the last answered keepalive ping, in seconds.
        self.latency: float | None = None
        self._ping_pending: tuple[bytes, float] | None = None
        # Since when a due ping could not be sent without blocking (see `_keepalive`).
        self._ping_blocked_since: float | None = None
        # Messages the keepalive read while no thread was receiving, for `recv()`.
        self._inbox: deque[Message] | None = None
        self._inbox_size = 0
        self._reading_for_keepalive = False
        self._next_ping = time.monotonic() + (ping_interval or 0.0)
        if ping_interval:
            self._start_keepalive(ping_interval)

    # -- properties ---------------------------------------------------------

    @property
    def server_side(self) -> bool:
        """Whether this is the server's end of the connection."""
        return bool(self.sock.server_side)

    @property
    def request(self) -> Request | None:
        """The client's upgrade request (`wspy.protocol.handshake.Request`), on the server side."""
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

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed."""
        return self.state is _CLOSED

    @property
    def close_code(self) -> int:
        """The close code the connection ended with (see `onclose`), 1006 until then."""
        return self._close_info()[0]

    @property
    def close_reason(self) -> str:
        """The close reason the connection ended with."""
        return self._close_info()[1]

    def _close_info(self) -> tuple[int, str]:
        if self.close_received is not None:
            code, reason = self.close_received
            return (CLOSE_NO_STATUS if code is None else code), reason
        if self._failed_code is not None and self.close_sent is not None:
            return self._failed_code, self.close_sent[1]
        return CLOSE_ABNORMAL, ''

    def _closed_exception(self) -> ConnectionClosed:
        code, reason = self._close_info()
        if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS):
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)

    # -- sending ------------------------------------------------------------

    def send(self, message: Message | str | bytes | bytearray | memoryview,
             fragment_size: int | None = None, mask: bool | None = None) -> None:
        """Send a message (a `str` is sent as text, a bytes-like object as binary).

        Anything else is a `TypeError`. With `fragment_size`, the message
        goes out in frames of at most that many payload bytes. Frames are
        masked on the client side unless `mask` says otherwise.
        """
        if mask is None:
            mask = not self.sock.server_side
        if not mask and fragment_size is None and not self._hooks:
            # The common case of a server: one frame, built without a Frame object.
            if type(message) is BinaryMessage:  # an echo: no call to encode()
                opcode, payload = OPCODE_BINARY, message.payload
            elif isinstance(message, str):
                opcode, payload = OPCODE_TEXT, message.encode()
            elif isinstance(message, Message):
                opcode, payload = message.opcode, message.encode()
            else:
                opcode, payload = OPCODE_BINARY, bytes_like(message, 'a message', SENDABLE)
            with self._send_lock:
                if self.close_sent is not None or self.state is _CLOSED:
                    raise self._closed_exception()
                try:
                    if len(payload) < PACK_LIMIT:
                        self._send_packed_frame(pack_unmasked(opcode, payload))
                    else:  # no copy of a large payload into one buffer with its header
                        self._send_packed_frame(unmasked_header(opcode, len(payload)), payload)
                except (OSError, WriteTimeout) as error:
                    failure: Exception = error
                else:
                    if self._tracks_messages:
                        self._message_queued(
                            message if isinstance(message, Message) else TextMessage(message)
                            if isinstance(message, str) else BinaryMessage(payload))
                    return
            raise self._write_failed(failure) from failure
        message = as_message(message)
        if self._hooks:
            self._send_data(lambda: self._frames_through_hooks(message, fragment_size, mask),
                            message)
        elif fragment_size is None:
            self._send_data([message.frame(mask)], message)
        else:
            self._send_data(message.fragment(fragment_size, mask), message)

    def send_frames(self, *frames: Frame) -> None:
        """Send hand-made frames as they are, atomically with respect to other sends."""
        self._send_data(list(frames))

    def send_ping(self, payload: bytes | str = b'') -> None:
        """Send a ping; `onpong` is called when its pong arrives."""
        self._send_data([self._heartbeat_frame(OPCODE_PING, payload)])

    def send_pong(self, payload: bytes | str = b'') -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        self._send_data([self._heartbeat_frame(OPCODE_PONG, payload)])

    def _heartbeat_frame(self, opcode: int, payload: bytes | str) -> ControlFrame:
        frame = self._control_frame(opcode, payload)
        if len(frame.payload) > MAX_CONTROL_PAYLOAD:
            raise PingError('ping or pong payload over 125 bytes')
        return frame

    def _control_frame(self, opcode: int, payload: bytes | str) -> ControlFrame:
        key = b'' if self.sock.server_side else os.urandom(4)
        return ControlFrame(opcode, payload, key)

    def _send_data(self, frames: list[Frame] | Callable[[], list[Frame]],
                   message: Message | None = None, wait: bool = True) -> bool:
        """Send frames, or the frames a function builds, under the send lock.

        Without `wait`, only if that cannot block (see `_lock_for_write`);
        whether they went.
        """
        if wait:
            self._send_lock.acquire()
        elif not self._lock_for_write(False):
            return False
        try:
            if self.close_sent is not None or self.state is _CLOSED:
                raise self._closed_exception()
            frames = frames if isinstance(frames, list) else frames()
            try:
                self._send_frames(frames)
            except (OSError, WriteTimeout) as error:
                failure: Exception = error
            else:
                if message is not None:
                    self._message_queued(message)
                return True
        finally:
            self._send_lock.release()
        raise self._write_failed(failure) from failure

    def _write_failed(self, error: Exception) -> ConnectionClosed:
        """A write failed or made no progress: drop the connection; what the sender raises."""
        logger.info('%s: write failed, dropping the connection: %s', self, error)
        self._drop()
        if isinstance(error, ConnectionClosed):
            return error
        return SocketClosed(f'write failed: {error}')

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

    def _lock_for_write(self, wait: bool) -> bool:
        """Take the send lock for a control frame; whether it was taken.

        With `wait`, waits up to `close_timeout` for a send under way
        (itself bounded by `write_timeout`). Without, takes it only if that
        and the write cannot block: the lock is free and the socket has room.
        """
        if wait:
            return self._send_lock.acquire(timeout=self.close_timeout)
        if not self._send_lock.acquire(blocking=False):
            return False
        if self.sock.writable():
            return True
        self._send_lock.release()
        return False

    def _frames_through_hooks(self, message: Message, fragment_size: int | None,
                              mask: bool) -> list[Frame]:
        """A message's frames after the negotiated extensions.

        Called under the send lock, so that compression contexts see
        messages in the order they go on the wire.
        """
        frame = Frame(message.opcode, message.encode())
        for hook in self._hooks:
            if hook.per_message:
                frame = hook.send(frame)
        frames = frame.fragment(fragment_size) if fragment_size else [frame]
        for hook in self._hooks:
            if not hook.per_message:
                frames = [hook.send(f) for f in frames]
        if mask:
            for f in frames:
                f.masking_key = os.urandom(4)
        return frames

    def _message_queued(self, message: Message) -> None:
        """Called, with the send lock held, once a message's frames are handed on."""

    def _send_close(self, code: int | None, reason: str, wait: bool = True) -> bool:
        """Send a close frame, once; the state becomes CLOSING.

        Whether a close frame has gone out (now or before); False when the
        send lock or the socket was not free in time (see `_lock_for_write`).
        """
        if not self._lock_for_write(wait):
            return self.close_sent is not None
        try:
            if self.close_sent is not None or self.state is _CLOSED:
                return self.close_sent is not None
            payload = close_payload(code, reason)
            self.close_sent = (code, reason)
            if self.state is _OPEN:
                self.state = _CLOSING
            try:
                self._send_frames([self._control_frame(OPCODE_CLOSE, payload)])
            except (OSError, WriteTimeout) as error:
                logger.debug('%s: could not send close frame: %s', self, error)
            return True
        finally:
            self._send_lock.release()

    # -- the protocol state machine -------------------------------------------

    def _receive_frame(self, frame: Frame) -> Message | None:
        """Apply one received frame; returns the message it completes, if any.

        Raises `ProtocolError` (with the close code to fail with) when the
        frame breaks the protocol.
        """
        opcode = frame.opcode
        if opcode & 0x8:
            self._handle_control(frame)
            return None
        self._partial_decoder = None
        if self._hooks:
            if frame.opcode != OPCODE_CONTINUATION:
                self._fragments_compressed = frame.rsv1
            frame = self._decode(frame)
        payload = frame.payload
        fragments = self._fragments
        if opcode == OPCODE_CONTINUATION:
            if fragments is None:
                raise ProtocolError('continuation frame without a message to continue')
            opcode = self._fragments_opcode
        elif fragments is not None:
            raise ProtocolError('new message before the fragmented one ended')
        elif frame.final:
            # The common case, an unfragmented message: no decoder, no list.
            limit = self.max_message_size
            if limit is not None and len(payload) > limit:
                raise PayloadTooBig(f'message over {limit} bytes')
            # The payload is known good: fill the slots without __init__'s checks.
            if opcode == OPCODE_TEXT:
                message: Message = _new_object(TextMessage)
                try:
                    message.payload = payload.decode('utf-8')
                except UnicodeDecodeError:
                    raise InvalidPayload('invalid UTF-8 in a text message') from None
            else:
                message = _new_object(BinaryMessage)
                message.payload = payload
            message.opcode = opcode
            return message
        else:
            fragments = self._fragments = []
            self._fragments_opcode = opcode
            self._fragments_size = 0
            self._decoder = _utf8_decoder() if opcode == OPCODE_TEXT else None
        self._fragments_size += len(payload)
        limit = self.max_message_size
        if limit is not None and self._fragments_size > limit:
            raise PayloadTooBig(f'message over {limit} bytes')
        decoder = self._decoder
        if decoder is not None:
            try:
                fragments.append(decoder.decode(payload, frame.final))
            except UnicodeDecodeError:
                raise InvalidPayload('invalid UTF-8 in a text message') from None
            _check_utf8_tail(decoder)
        else:
            fragments.append(payload)
        if not frame.final:
            return None
        self._fragments = self._decoder = None
        if opcode == OPCODE_TEXT:
            return TextMessage(''.join(fragments))
        return BinaryMessage(b''.join(fragments))

    def _decode(self, frame: Frame) -> Frame:
        """Pass a received data frame through the extensions, last negotiated first."""
        limit = self.max_message_size
        if limit is not None and frame.opcode == OPCODE_CONTINUATION:
            limit -= self._fragments_size
        for hook in reversed(self._hooks):
            frame = hook.recv(frame, limit)
        return frame

    def _check_partial(self, parser: FrameParser) -> None:
        """Validate the UTF-8 of a text frame that has only partly arrived.

        RFC 6455 8.1: an endpoint that finds invalid UTF-8 "MUST _Fail the
        WebSocket Connection_"; checking as bytes arrive fails at once
        instead of after the rest of a long frame.
        """
        first = parser.pending_first_byte()
        if first is None or first & 0x40:  # not yet known, or compressed
            return
        opcode = first & 0x0F
        decoder = self._partial_decoder
        if decoder is None:
            if opcode == OPCODE_TEXT and self._fragments is None:
                decoder = _utf8_decoder()
            elif (opcode == OPCODE_CONTINUATION and self._decoder is not None
                  and not self._fragments_compressed):
                decoder = _utf8_decoder()
                decoder.setstate(self._decoder.getstate())
            else:
                return
            self._partial_decoder = decoder
        try:
            decoder.decode(parser.peek_payload())
        except UnicodeDecodeError:
            raise InvalidPayload('invalid UTF-8 in a text message') from None
        _check_utf8_tail(decoder)

    def _handle_control(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode == OPCODE_PING:
            # RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST
            # send a Pong frame in response", unless it already sent a close.
            if self._lock_for_write(not self._reading_for_keepalive):
                try:
                    if self.close_sent is None and self.state is _OPEN:
                        self._send_frames([self._control_frame(OPCODE_PONG, frame.payload)])
                finally:
                    self._send_lock.release()
            self._callback(self.onping, frame.payload)
        elif opcode == OPCODE_PONG:
            pending = self._ping_pending
            if pending is not None and frame.payload == pending[0]:
                self.latency = time.monotonic() - pending[1]
                self._ping_pending = None
            self._callback(self.onpong, frame.payload)
        elif opcode == OPCODE_CLOSE:
            code, reason = parse_close(frame.payload)
            self.close_received = (code, reason)
            # RFC 6455 5.5.1: the answer "typically echos the status code it received".
            self._send_close(code, '', wait=not self._reading_for_keepalive)
            self.state = _CLOSING

    # -- keepalive ------------------------------------------------------------------

    def _start_keepalive(self, delay: float) -> None:
        """Arrange for `_keepalive()` to run in `delay` seconds."""
        scheduler.schedule(self, delay)

    def _keepalive(self) -> float | None:
        """Send a keepalive ping, or fail if the last went unanswered; when to come back.

        One ping is outstanding at a time: while it is, the next call is at
        its deadline; its pong (see `_handle_control`) clears it. Nothing
        here blocks: a ping that cannot be written at once waits for the
        next call, and one that could not be written for `ping_timeout`
        fails the connection as an unanswered one would.
        """
        if self.state is not _OPEN or self.close_sent is not None:
            return None
        reads = self._receive_for_keepalive()
        if self.state is not _OPEN or self.close_sent is not None:
            return None
        now = time.monotonic()
        timeout = self.ping_timeout
        pending = self._ping_pending
        if pending is not None and timeout is not None:
            due = pending[1] + timeout
            if self._inbox_full():
                return timeout  # the application is not reading: pongs cannot be seen
            if now >= due:
                self._keepalive_failed()
                return None
            if reads:  # look for the pong soon: `latency` within half of itself
                return min(due - now, max(_PONG_FIRST_LOOK, (now - pending[1]) / 2))
            return due - now
        if now < self._next_ping:
            return self._next_ping - now
        payload = os.urandom(4)
        # Pending before it goes: its pong may come back before this thread runs again.
        self._ping_pending = (payload, now)
        try:
            sent = self._send_data([self._control_frame(OPCODE_PING, payload)], wait=False)
        except ConnectionClosed:
            return None
        if not sent:
            self._ping_pending = None
            blocked_since = self._ping_blocked_since = self._ping_blocked_since or now
            if timeout is not None and now - blocked_since >= timeout:
                self._keepalive_failed()
                return None
            return min(_KEEPALIVE_RETRY, timeout or _KEEPALIVE_RETRY)
        self._ping_blocked_since = None
        interval = self.ping_interval or 0.0
        self._next_ping = now + interval
        if timeout is None:
            return interval
        return _PONG_FIRST_LOOK if reads else min(interval, timeout)

    def _receive_for_keepalive(self) -> bool:
        """While no thread receives, apply what has arrived without blocking; whether it could.

        Pings are answered and pongs seen (a connection that only sends is
        kept alive); messages wait in the inbox for `recv()`. A broken
        connection is dropped; a close frame is left for `recv()` or
        `close()` to finish (the client waits for the server's end of file).
        """
        parser = self.sock.parser
        if parser is None or self._inbox_full():
            return False
        self._reading_for_keepalive = True  # before the lock: see `_take_receiving`
        if not self._recv_lock.acquire(blocking=False):
            self._reading_for_keepalive = False
            return False
        broken = read = False
        try:
            while self.close_received is None and not self._inbox_full():
                frame = parser.next_frame()
                if frame is None:
                    if read:  # one read a call: a peer that floods holds up no other
                        break
                    data = self.sock.recv_available(_KEEPALIVE_READ)
                    if data is None:
                        break
                    if not data:
                        raise SocketClosed('connection closed by the peer')
                    parser.feed(data)
                    read = True
                    continue
                message = self._receive_frame(frame)
                if message is not None and self.close_sent is None:
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
            self._reading_for_keepalive = False
            self._recv_lock.release()
        if broken:
            self._drop()
        return True

    def _take_receiving(self) -> bool:
        """Take the receive lock for a thread of the application; whether it was free.

        The keepalive holds it only for a read that never blocks: that is
        waited for, not taken for another receiving thread.
        """
        if self._recv_lock.acquire(blocking=False):
            return True
        return self._reading_for_keepalive and self._recv_lock.acquire(timeout=self.close_timeout)

    def _inbox_full(self) -> bool:
        """Whether the messages waiting for `recv()` reach the limit the keepalive reads to."""
        return self._inbox_size >= (self.max_message_size or DEFAULT_MAX_SIZE)

    def _keepalive_failed(self) -> None:
        """The peer missed its keepalive pong: fail with 1011, then drop the connection."""
        self._fail(ProtocolError('keepalive ping timeout', 1011), wait=False)
        self._drop()

    def _fail(self, error: ProtocolError, wait: bool = True) -> None:
        """Fail the connection: close frame with the error's code, then end the transport.

        Without `wait`, the close frame goes only if it can at once (see
        `_lock_for_write`); the caller then drops the transport.
        """
        logger.info('%s: failing with %d: %s', self, error.code, error)
        if self.close_sent is None:
            self._failed_code = error.code
        reason = str(error).encode('utf-8')[:120].decode('utf-8', 'ignore')
        if not self._send_close(error.code, reason, wait):
            self.abort()
        self._callback(self.onerror, error)

    def _finish(self) -> None:
        """End the transport and report the close, once."""
        with self._send_lock:
            if self.state is _CLOSED:
                return
            self.state = _CLOSED
        self._close_transport()
        self._fragments = self._decoder = None
        with _EVENT_LOCK:
            self._transport_closed = True
            if self._closed is not None:
                self._closed.set()
        self._callback(self.onclose, *self._close_info())

    # -- transport (blocking implementation) -----------------------------------

    def _send_frames(self, frames: list[Frame]) -> None:
        """Write frames to the peer; called with the send lock held."""
        self.sock.send(*frames)

    def _send_packed_frame(self, data: bytes, payload: bytes = b'') -> None:
        """Write one frame already packed (or its header, then `payload`); send lock held."""
        self.sock.send_packed(data, payload)

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

    def abort(self) -> None:
        """Drop the TCP connection at once, waking any thread blocked on it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- receiving (blocking) -------------------------------------------------

    def recv(self) -> Message:
        """Receive the next message; `ConnectionClosed` once the connection closes.

        Control frames are handled on the way. Only one thread may receive
        at a time: a second one gets `ConcurrencyError`.
        """
        if not self._take_receiving():
            raise ConcurrencyError('another thread is already receiving on this connection')
        try:
            while True:
                inbox = self._inbox
                if inbox:
                    kept = inbox.popleft()
                    self._inbox_size -= len(kept.payload)
                    return kept
                if self.state is _CLOSED:
                    raise self._closed_exception()
                message = self._receive_one()
                if message is not None:
                    return message
        finally:
            self._recv_lock.release()

    def _receive_one(self, deadline: float | None = None) -> Message | None:
        """Read one frame (before `deadline`, if given) and apply it; finishes the
        connection when it ends."""
        if self.close_received is not None:  # the keepalive read the peer's close
            self._finish()
            return None
        try:
            frame = self.sock.recv(self._check_partial, deadline)
            message = self._receive_frame(frame)
        except ProtocolError as error:
            self._fail(error)
            self._finish()
            return None
        except (OSError, SocketClosed) as error:
            if self.close_sent is None and self.close_received is None:
                logger.info('%s: connection lost: %s', self, error)
                self._callback(self.onerror, error)
            self._finish()
            return None
        if self.close_received is not None:
            self._finish()
            return None
        if message is not None and self.close_sent is not None:
            return None  # we are closing: later messages are not delivered
        return message

    def _receive_ready(self, readable: bool = True) -> bool:
        """Apply what has arrived, for a server that reads a connection once it is readable.

        One read if the socket is `readable`, then every frame complete in
        what came, with `onmessage` called between frames. The receive lock
        is held on entry and on return (not during `onmessage`, which may
        call `close()` or `recv()`). Returns whether the connection is open.
        """
        parser = self.sock.parser
        assert parser is not None
        if self.closed:
            return False
        while readable or parser.ready() or self.sock.pending():
            readable = False
            message = self._receive_one()
            if message is not None:
                self._recv_lock.release()
                try:
                    self._callback(self.onmessage, message)
                finally:
                    self._recv_lock.acquire()
            if self.closed:
                return False
        try:
            self._check_partial(parser)  # fail now, not when the rest arrives
        except ProtocolError as error:
            self._fail(error)
            self._finish()
            return False
        return True

    def receive_forever(self) -> None:
        """Call `onopen`, then `onmessage` for every message until the connection closes."""
        self._callback(self.onopen)
        while True:
            try:
                message = self.recv()
            except ConnectionClosed:
                return
            self._callback(self.onmessage, message)

    # -- closing ----------------------------------------------------------------

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = '') -> None:
        """Start the close handshake and wait (up to `close_timeout`) for it to finish.

        Messages sent before `close()` go out before the close frame. If
        another thread is receiving, it sees the close through; otherwise
        this call reads (and drops) frames until the peer's close arrives.
        """
        deadline = time.monotonic() + self.close_timeout
        self.sock._write_deadline = deadline
        try:
            if not self._send_close(code, reason):
                self.abort()  # a send under way has held the socket for close_timeout
        finally:
            self.sock._write_deadline = None
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
        """Send a close frame without waiting; the receiving thread completes the handshake."""
        self._send_close(code, reason)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed; whether it is."""
        with _EVENT_LOCK:
            if self._closed is None:
                self._closed = threading.Event()
                if self._transport_closed:
                    self._closed.set()
            closed = self._closed
        return closed.wait(timeout)

    # -- callbacks ------------------------------------------------------------------

    def _callback(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception as error:
            self._callback_failed(callback, error)

    def _callback_failed(self, callback: Callable[..., object], error: Exception) -> None:
        """Report an exception from a callback (to `onerror`, unless it came from there)."""
        if isinstance(error, ConnectionClosed):
            logger.debug('%s: %s in %s', self, error, callback.__name__)
        elif callback == self.onerror:
            logger.exception('%s: error in onerror', self)
        else:
            logger.debug('%s: error in %s', self, callback.__name__, exc_info=True)
            self._callback(self.onerror, error)

    def onopen(self) -> None:
        """Called when `receive_forever()` starts on the open connection."""

    def onmessage(self, message: Message) -> None:
        """Called with each complete message received."""

    def onping(self, payload: bytes) -> None:
        """Called when a ping arrives, after the automatic pong has been sent."""

    def onpong(self, payload: bytes) -> None:
        """Called when a pong arrives."""

    def onclose(self, code: int, reason: str) -> None:
        """Called once when the connection has closed.

        `code` is the peer's close code (1005 if its close frame had none),
        the code this side failed the connection with when the peer did not
        answer, or 1006 when the connection dropped without a close frame.
        """

    def onerror(self, error: Exception) -> None:
        """Called with a protocol error, a lost connection, or an exception from a callback."""
        if isinstance(error, WebSocketError | OSError):
            logger.info('%s: %s', self, error)
        else:
            logger.error('%s: error in a callback', self,
                         exc_info=(type(error), error, error.__traceback__))

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection (1000) when the `with` block ends."""
        self.close()

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.remote_address} {self.state.name}>'
