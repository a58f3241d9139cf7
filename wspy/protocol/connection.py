"""`Protocol`: the connection state machine of RFC 6455, with no I/O.

Bytes in (`receive_data`), messages out (`next_message`; pings, pongs,
errors and the close through the `on*` callbacks), frames out through the
driver's writing methods, and deadlines out (`run_keepalive()` tells when to
come back; `close_timeout` bounds the close handshake). Every decision of
the RFC is made here: fragmentation, UTF-8 (checked as it arrives),
message limits, control frames, close codes, the close handshake, and the
keepalive's pings and their timeout.

A driver subclasses `Protocol` and supplies the transport: the blocking
`wspy.Connection`, the event loop's `wspy.AsyncConnection`, or a test's
in-memory one. What it supplies is listed under "the driver's part" below.
"""

from __future__ import annotations

import codecs
import enum
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from wspy.errors import (ConnectionClosed, ConnectionClosedError, ConnectionClosedOK,
                         InvalidPayload, PayloadTooBig, PingError, ProtocolError, WebSocketError,
                         WriteTimeout)
from wspy.protocol.frame import (CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_NORMAL,
                                 MAX_CONTROL_PAYLOAD, OPCODE_BINARY, OPCODE_CLOSE,
                                 OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
                                 ControlFrame, Frame, FrameParser, bytes_like,
                                 close_payload, parse_close, unmasked_frame)
from wspy.protocol.extension import Hook
from wspy.protocol.message import (SENDABLE, BinaryMessage, Message, TextMessage, as_message,
                                   received_message)
from wspy.protocol.utf8 import Utf8Checker, check_utf8_tail, new_utf8_checker

logger = logging.getLogger('wspy')

#: Default time to wait for the peer's side of the close handshake, in seconds.
CLOSE_TIMEOUT = 10.0
#: Default keepalive: a ping every `PING_INTERVAL` seconds, answered within `PING_TIMEOUT`.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
# Seconds before a keepalive ping that could not be written at once is tried again.
_KEEPALIVE_RETRY = 1.0
# Seconds after a ping before the keepalive first reads for its pong (for a connection
# no thread receives on); it then looks again after half the time elapsed.
_PONG_FIRST_LOOK = 0.001

_utf8_decoder = codecs.getincrementaldecoder('utf-8')


class State(enum.IntEnum):
    """The states of a connection (RFC 6455 sections 4 and 7): `Connection.state`."""

    #: The opening handshake is under way (4.1: "A connection is defined to initially be
    #: in a CONNECTING state"); a `Connection` is made once it is over, and starts OPEN.
    CONNECTING = 0
    #: The handshake succeeded: "*The WebSocket Connection is Established*" (4.1).
    OPEN = 1
    #: A close frame has been sent or received (7.1.3: "Upon either sending or receiving a
    #: Close control frame, it is said that *The WebSocket Closing Handshake is Started*").
    CLOSING = 2
    #: The connection has ended: its TCP connection is closed (7.1.4: "*The WebSocket
    #: Connection is Closed*"), and `onclose` is called once.
    CLOSED = 3


# The states as globals: in Python 3.11, looking a member up on its enum class costs ten
# times as much, and the state is checked for every message.
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class Protocol:
    """The state of one WebSocket connection and every decision RFC 6455 asks of it.

    Received bytes go to `receive_data()`; `next_message()` applies the
    frames they complete (answering pings, running the close handshake)
    and returns each message. `send()` and the other senders frame what
    they are given (masked on the client side, through the negotiated
    extensions) and hand the frames to the driver. A protocol error fails
    the connection with its close code; `onclose` reports the end once.

    Attributes:
        state: the `State`: OPEN, then CLOSING once a close frame has gone
            or come, then CLOSED.
        close_sent: the (code, reason) of the close frame sent, once it is.
        close_received: the (code, reason) of the peer's close frame, once
            it has come (code None when it had none).
        latency: the round trip of the last answered keepalive ping, in
            seconds (None before one).
        max_message_size: the largest message accepted, in bytes (None: no
            limit).
        close_timeout: seconds the close handshake may take.
        ping_interval: seconds between keepalive pings (None: none).
        ping_timeout: seconds a keepalive ping waits for its pong (None: no
            limit).
    """

    __slots__ = ('_decoder', '_failed_code', '_fragments', '_fragments_compressed',
                 '_fragments_opcode', '_fragments_size', '_hooks', '_masks', '_next_ping',
                 '_output_must_not_wait', '_parser', '_partial_checker', '_ping_blocked_since',
                 '_ping_pending', 'close_received', 'close_sent', 'close_timeout', 'latency',
                 'max_message_size', 'ping_interval', 'ping_timeout', 'state')

    #: Whether `_message_queued` wants each message sent (for `onsent`).
    _tracks_messages = False
    #: The clock deadlines are measured on (a test may replace it).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    # -- the driver's part ------------------------------------------------------
    # A lock (acquire, release) that orders writes; see `_lock_for_write`.
    _send_lock: Any

    def _lock_for_write(self, wait: bool) -> bool:
        """Take `_send_lock` for a control frame; whether it was taken.

        With `wait`, within `close_timeout`; without, only if neither the
        lock nor the write could block.
        """
        raise NotImplementedError

    def _send_frames(self, frames: list[Frame]) -> None:
        """Write frames to the peer; called with the send lock held."""
        raise NotImplementedError

    def _send_packed_frame(self, data: bytes, payload: bytes = b'') -> None:
        """Write one frame packed already (or its header, then `payload`); send lock held."""
        raise NotImplementedError

    def _write_failed(self, error: Exception) -> ConnectionClosed:
        """A write failed or made no progress: end the transport; the error to raise."""
        raise NotImplementedError

    def _close_transport(self) -> None:
        """End the transport once the close handshake is over (or failed)."""
        raise NotImplementedError

    def _end_after_failure(self) -> None:
        """After `_fail()` from a thread that must not wait: end the transport and finish."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the transport at once."""
        raise NotImplementedError

    def _transport_broken(self) -> None:
        """The transport failed under the connection (see `_connection_lost`)."""

    def _start_keepalive(self, delay: float) -> None:
        """Arrange for `run_keepalive()` to run in `delay` seconds."""
        raise NotImplementedError

    def _receive_for_keepalive(self) -> bool:
        """Read what has arrived without waiting, for a connection nobody receives on;
        whether the driver does that (then pongs are looked for soon after a ping)."""
        return False

    def _inbox_full(self) -> bool:
        """Whether messages wait, unread by the application, up to the driver's limit."""
        return False

    def _message_queued(self, message: Message) -> None:
        """Called, with the send lock held, once a message's frames are handed on."""

    # -- set-up -------------------------------------------------------------------

    def _init_protocol(self, server_side: bool, parser: FrameParser, hooks: tuple[Hook, ...],
                       max_message_size: int | None, close_timeout: float,
                       ping_interval: float | None, ping_timeout: float | None) -> None:
        """The state of an open connection: the driver calls this from its `__init__`."""
        self._masks = not server_side
        self._parser = parser
        self._hooks = hooks
        self.max_message_size = max_message_size
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
        self._partial_checker: Utf8Checker | None = None
        # Set by a driver while it reads on a thread that must never wait to write.
        self._output_must_not_wait = False
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        #: Round-trip time of the last answered keepalive ping, in seconds.
        self.latency: float | None = None
        self._ping_pending: tuple[bytes, float] | None = None
        # Since when a due ping could not be sent without blocking (see `run_keepalive`).
        self._ping_blocked_since: float | None = None
        self._next_ping = self.clock() + (ping_interval or 0.0)

    # -- properties ---------------------------------------------------------

    @property
    def server_side(self) -> bool:
        """Whether this is the server's end of the connection."""
        return not self._masks

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed."""
        return self.state is _CLOSED

    @property
    def close_code(self) -> int:
        """The close code the connection ended with (see `onclose`), 1006 until then.

        RFC 6455 7.1.5: "the status code (Section 7.4) contained in the
        first Close control frame received", 1005 if it had none, 1006 if
        none came; or the code this side failed the connection with when
        the peer did not answer it.
        """
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

        Safe from any thread: a message goes out whole, never mixed with
        another's frames. It goes through the negotiated extensions
        (permessage-deflate compresses it).

        Args:
            message: a `str` (a text message), a bytes-like object (binary)
                or a `Message`.
            fragment_size: the most payload bytes in each frame (RFC 6455
                5.4); None sends one frame.
            mask: whether to mask the frames; by default, on the client side
                only (5.1: "a client MUST mask all frames that it sends to the
                server").

        Raises:
            TypeError: a message of another type.
            ConnectionClosed: the close handshake has begun or the connection
                has ended (5.5.1: "The application MUST NOT send any more data
                frames after sending a Close frame").
            SocketClosed: the write failed: the connection is dropped
                (`WriteTimeout` when the peer took nothing for
                `write_timeout` seconds).
        """
        if mask is None:
            mask = self._masks
        if not mask and fragment_size is None and not self._hooks:
            # The common case of a server: one frame, built without a Frame object.
            if type(message) is TextMessage:  # an echo: checked first, no isinstance()
                opcode, payload = OPCODE_TEXT, message.encode()
            elif type(message) is BinaryMessage:  # an echo: no call to encode()
                opcode, payload = OPCODE_BINARY, message.payload
            elif isinstance(message, str):
                opcode, payload = OPCODE_TEXT, message.encode()
            elif isinstance(message, Message):
                opcode, payload = message.opcode, message.encode()
            else:
                opcode, payload = OPCODE_BINARY, bytes_like(message, 'a message', SENDABLE)
            # acquire() and release(), not `with`: 1,100 instructions less a message in
            # Python 3.11 (callgrind, bench/run.py '16 B text echo, 64 x 16').
            lock = self._send_lock
            lock.acquire()
            try:
                if self.close_sent is not None or self.state is _CLOSED:
                    raise self._closed_exception()
                data, rest = unmasked_frame(opcode, payload)
                try:
                    self._send_packed_frame(data, rest)
                except (OSError, WriteTimeout) as error:
                    failure: Exception = error
                else:
                    if self._tracks_messages:
                        self._message_queued(
                            message if isinstance(message, Message) else TextMessage(message)
                            if isinstance(message, str) else BinaryMessage(payload))
                    return
            finally:
                lock.release()
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
        """Send hand-made frames as they are, atomically with respect to other sends.

        Nothing checks them (masking, fragmentation, extensions): for tests
        and protocols of your own. Raises as `send()` does.
        """
        self._send_data(list(frames))

    def send_ping(self, payload: bytes | str = b'') -> None:
        """Send a ping; `onpong` is called when its pong arrives.

        RFC 6455 5.5.2: "A Ping frame may serve either as a keepalive or as
        a means to verify that the remote endpoint is still responsive"; the
        peer answers it with a pong carrying the same payload (5.5.3).
        The keepalive (`ping_interval`) sends its own.

        Args:
            payload: at most 125 bytes (a `str` is encoded as UTF-8).

        Raises:
            PingError: a payload over 125 bytes.
            ConnectionClosed: the close handshake has begun or the
                connection has ended (see `send`).
        """
        self._send_data([self._heartbeat_frame(OPCODE_PING, payload)])

    def send_pong(self, payload: bytes | str = b'') -> None:
        """Send an unsolicited pong (a one-way heartbeat).

        RFC 6455 5.5.3: "A Pong frame MAY be sent unsolicited. This serves
        as a unidirectional heartbeat. A response to an unsolicited Pong
        frame is not expected." Pings are answered without this.

        Args:
            payload: at most 125 bytes (a `str` is encoded as UTF-8).

        Raises:
            PingError: a payload over 125 bytes.
            ConnectionClosed: the close handshake has begun or the
                connection has ended (see `send`).
        """
        self._send_data([self._heartbeat_frame(OPCODE_PONG, payload)])

    def _heartbeat_frame(self, opcode: int, payload: bytes | str) -> ControlFrame:
        frame = self._control_frame(opcode, payload)
        if len(frame.payload) > MAX_CONTROL_PAYLOAD:
            raise PingError('ping or pong payload over 125 bytes')
        return frame

    def _control_frame(self, opcode: int, payload: bytes | str) -> ControlFrame:
        return ControlFrame(opcode, payload, os.urandom(4) if self._masks else b'')

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

    def _send_close(self, code: int | None, reason: str, wait: bool = True) -> bool:
        """Send a close frame, once; the state becomes CLOSING.

        Whether a close frame has gone out (now or before); False when the
        send lock or the transport was not free in time (see `_lock_for_write`).
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

    # -- receiving ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes received from the peer; `next_message()` applies them."""
        self._parser.feed(data)

    def next_message(self) -> Message | None:
        """Apply the frames received, up to the next complete message, and return it.

        Control frames are handled on the way (pongs sent, the close
        answered). A frame that breaks the protocol fails the connection
        with its close code (`onerror`, then `onclose`). While
        `_output_must_not_wait`, the driver finishes: a `ProtocolError` is
        raised, and a close received is left for it to complete.

        Returns:
            The next message; None when more bytes are needed, or when the
            connection has ended (`closed`) or is closing (messages after
            our close frame are dropped).
        """
        parser = self._parser
        # The usual message, one frame, comes whole out of the C accelerator: no Frame made.
        whole_messages = parser.splits_messages and not self._hooks
        try:
            while self.close_received is None and self.state is not _CLOSED:
                if whole_messages and self._fragments is None:
                    whole = parser.next_whole_message(self.max_message_size)
                    if whole is not None:
                        if self.close_sent is not None:
                            continue  # after our close frame: dropped
                        return received_message(*whole)
                frame = parser.next_frame()
                if frame is None:
                    return None
                message = self._receive_frame(frame)
                if message is not None and self.close_sent is None:
                    return message
        except ProtocolError as error:
            if self._output_must_not_wait:
                raise  # the driver fails the connection without waiting
            self._fail(error)
            self._finish()
            return None
        if self.close_received is not None and not self._output_must_not_wait:
            self._finish()
        return None

    def _whole_messages(self) -> list[Message]:
        """The messages next in what was received that came whole, a frame each, made in one
        go (the C accelerator's batch; none without it, with extensions, in a fragmented
        message or once a close frame has gone or come).

        The driver hands them on, then calls `next_message()` for what follows. One that
        comes after our close frame (sent from a callback) or the end is dropped, as
        `next_message` drops it: the driver checks `close_sent` and `state` before each.
        """
        # One C call a read, not Python calls and a C call a message: 20,800 to 13,300
        # instructions per message with the messages made in C (callgrind, bench/run.py
        # '16 B text echo, 64 x 16').
        if (self._hooks or self._fragments is not None or self.close_sent is not None
                or self.close_received is not None or self.state is _CLOSED):
            return []
        return self._parser.next_whole_messages(self.max_message_size)

    def check_partial(self) -> bool:
        """Check the part of a frame received so far; whether the connection is still open.

        RFC 6455 8.1: an endpoint that finds invalid UTF-8 "MUST *Fail the
        WebSocket Connection*"; checking as bytes arrive fails at once
        instead of after the rest of a long frame.

        Returns:
            False once the connection has failed (1007), and ended.
        """
        try:
            self._check_partial(self._parser)
        except ProtocolError as error:
            self._fail(error)
            self._finish()
            return False
        return True

    def _connection_lost(self, error: Exception) -> None:
        """The transport failed or the peer went away: report it (unless closing), finish."""
        if self.close_sent is None and self.close_received is None:
            logger.info('%s: connection lost: %s', self, error)
            self._callback(self.onerror, error)
        self._transport_broken()
        self._finish()

    def _receive_frame(self, frame: Frame) -> Message | None:
        """Apply one received frame; returns the message it completes, if any.

        Raises `ProtocolError` (with the close code to fail with) when the
        frame breaks the protocol.
        """
        opcode = frame.opcode
        if opcode & 0x8:
            self._handle_control(frame)
            return None
        self._partial_checker = None
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
            if opcode != OPCODE_TEXT:
                return received_message(opcode, payload)
            try:
                text = payload.decode('utf-8')
            except UnicodeDecodeError:
                raise InvalidPayload('invalid UTF-8 in a text message') from None
            return received_message(opcode, text,
                                    None if len(text) == len(payload) else bytes(payload))
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
            if not check_utf8_tail(decoder):
                raise InvalidPayload('invalid UTF-8 in a text message')
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
        """Validate the UTF-8 of a text frame that has only partly arrived (see
        `check_partial`); `InvalidPayload` if it is not valid."""
        first = parser.pending_first_byte()
        if first is None or first & 0x40:  # not yet known, or compressed
            return
        opcode = first & 0x0F
        checker = self._partial_checker
        if checker is None:
            if opcode == OPCODE_TEXT and self._fragments is None:
                checker = new_utf8_checker()
            elif (opcode == OPCODE_CONTINUATION and self._decoder is not None
                  and not self._fragments_compressed):
                checker = new_utf8_checker()
                if not checker.feed(self._decoder.getstate()[0]):  # its unfinished character
                    raise InvalidPayload('invalid UTF-8 in a text message')
            else:
                return
            self._partial_checker = checker
        if not checker.feed(parser.peek_payload()):
            raise InvalidPayload('invalid UTF-8 in a text message')

    def _handle_control(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode == OPCODE_PING:
            # RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST
            # send a Pong frame in response", unless it already sent a close.
            if self._lock_for_write(not self._output_must_not_wait):
                try:
                    if self.close_sent is None and self.state is _OPEN:
                        self._send_frames([self._control_frame(OPCODE_PONG, frame.payload)])
                finally:
                    self._send_lock.release()
            self._callback(self.onping, frame.payload)
        elif opcode == OPCODE_PONG:
            pending = self._ping_pending
            if pending is not None and frame.payload == pending[0]:
                self.latency = self.clock() - pending[1]
                self._ping_pending = None
            self._callback(self.onpong, frame.payload)
        elif opcode == OPCODE_CLOSE:
            code, reason = parse_close(frame.payload)
            self.close_received = (code, reason)
            # RFC 6455 5.5.1: the answer "typically echos the status code it received".
            self._send_close(code, '', wait=not self._output_must_not_wait)
            self.state = _CLOSING

    # -- keepalive ------------------------------------------------------------------

    def run_keepalive(self) -> float | None:
        """Send a keepalive ping, or fail if the last went unanswered; when to come back.

        One ping is outstanding at a time: while it is, the next call is at
        its deadline; its pong (see `_handle_control`) clears it and sets
        `latency`. Nothing here blocks: a ping that cannot be written at
        once waits for the next call, and one that could not be written for
        `ping_timeout` fails the connection (1011) as an unanswered one
        would.

        Returns:
            The seconds until the driver should call again; None when there
            is no keepalive (no `ping_interval`, or the connection is
            closing or closed): nothing sent.
        """
        if self.state is not _OPEN or self.close_sent is not None or not self.ping_interval:
            return None
        reads = self._receive_for_keepalive()
        if self.state is not _OPEN or self.close_sent is not None:
            return None
        now = self.clock()
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

    def _keepalive_failed(self) -> None:
        """The peer missed its keepalive pong: fail with 1011, then end the connection."""
        self._fail(ProtocolError('keepalive ping timeout', 1011), wait=False)
        self._end_after_failure()

    # -- ending -------------------------------------------------------------------------

    def _fail(self, error: ProtocolError, wait: bool = True) -> None:
        """Fail the connection: close frame with the error's code, then end the transport.

        Without `wait`, the close frame goes only if it can at once (see
        `_lock_for_write`); the caller then ends the transport.
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
        self._callback(self.onclose, *self._close_info())

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
        """Called when `receive_forever()` starts on the open connection (on servers, once open)."""

    def onmessage(self, message: Message) -> None:
        """Called with each complete message received: a `TextMessage` or a `BinaryMessage`."""

    def onping(self, payload: bytes) -> None:
        """Called with a ping's payload when it arrives, after the automatic pong has been sent.

        RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send
        a Pong frame in response"; wspy sends none once its own close frame
        has gone.
        """

    def onpong(self, payload: bytes) -> None:
        """Called with a pong's payload when it arrives (the answer to a ping, or unsolicited)."""

    def onclose(self, code: int, reason: str) -> None:
        """Called once when the connection has closed (its socket too).

        Args:
            code: the peer's close code (1005 if its close frame had none),
                the code this side failed the connection with when the peer
                did not answer, or 1006 when the connection dropped without a
                close frame (as `close_code`).
            reason: the close reason that came with it.
        """

    def onerror(self, error: Exception) -> None:
        """Called with a protocol error, a lost connection, or an exception from a callback.

        A `ProtocolError` when the connection fails (before `onclose`); an
        `OSError` or `SocketClosed` when the connection was lost. By default
        it logs the error to the 'wspy' logger: a wspy or socket error at
        INFO, anything else (a callback's) at ERROR with its traceback.
        """
        if isinstance(error, WebSocketError | OSError):
            logger.info('%s: %s', self, error)
        else:
            logger.error('%s: error in a callback', self,
                         exc_info=(type(error), error, error.__traceback__))

