"""`Channel`: a socket on the event loop, with a queue of bytes to write and a graceful
close.

What every socket an event-loop driver owns shares, whatever it carries
(an opening handshake, a connection's frames): other threads append to the
queue, the loop writes it when the socket can take it, with as few system
calls as it can, and a close waits for the peer's end of file.
"""

from __future__ import annotations

import os
import socket
import sys
from collections import deque
from typing import Any

from wspy.errors import HandshakeError, SocketClosed
from wspy.loop import READ, WRITE, Loop, Timer
from wspy.websocket import websocket

# Under TLS, queued chunks smaller than this are joined into one write; larger ones go alone.
# Replies of this size are also written at once, without waiting for the end of the turn.
_JOIN_LIMIT = 64 << 10


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



class Channel:
    """A socket on the loop: a queue of bytes to write, and a graceful close.

    Writes happen on the loop thread only; other threads append to the
    queue (under `_send_lock`) and ask the loop to flush it.
    """

    # No slots here, so that AsyncConnection can also derive from ServerConnection:
    # subclasses list these (SLOTS) in their own.
    SLOTS = ('loop', '_out', '_out_partial', '_out_size', '_queued', '_written',
                      '_events', '_flush_scheduled', '_lingering', '_drain_left', '_dropped',
                      '_linger_timer')

    loop: Loop
    sock: websocket
    _send_lock: Any
    #: Whether `_wrote` wants to know of each flush (an `onsent` to call).
    _tracks_messages = False
    # Subclasses decide with it when to join a header to its payload and when to write
    # at once (see _JOIN_LIMIT).
    _join_limit = _JOIN_LIMIT

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
        self._drain_left = 0
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

    def _write_or_queue(self, data: bytes) -> None:
        """Write `data` at once if nothing waits to be written, else queue it (under the send
        lock, on the loop thread). The rest of a partial write is kept as a begun chunk
        (`_out_partial`), never dropped, and flushed when the socket takes more."""
        if (self._flush_scheduled or self._out is not None or self._out_partial
                or self.sock.tls is not None):
            self._queue(data)
            return
        try:
            sent = _plain_send(self.sock, data)
        except OSError:  # full, or gone: the flush of the queued bytes finds out which
            sent = 0
        self._queued += sent
        self._written += sent
        if sent == len(data):
            return
        if not sent:
            self._queue(data)
            return
        rest = memoryview(data)[sent:]
        self._out_partial = [rest]
        self._out_size += len(rest)
        self._queued += len(rest)
        self._flush_scheduled = True
        self.loop.call_soon(self._flush)

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
                 sent: int, begun: bool = False) -> deque[bytes | memoryview]:
        """Put back what a write did not take of `buffers`; returns the queue.

        The write took their first `sent` bytes. The rest of a chunk begun
        goes first, and is never dropped (the peer has its start); the chunks
        not begun go back to the front of the queue.
        """
        index = 0
        while index < len(buffers) and sent >= len(buffers[index]):
            sent -= len(buffers[index])
            index += 1
        if sent or (begun and index == 0):
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
                begun = bool(self._out_partial)
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
                    out = self._requeue(buffers, sent, begun)
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
            self._drain_left -= count
            if not count or self._drain_left < 0:
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

    def _close_gracefully(self, timeout: float, max_bytes: int | None = None) -> None:
        """Write what is queued, shut our side, wait for the peer's end of file, then drop.

        Closing with unread input would make the kernel send a reset, which
        can destroy the last bytes sent before the peer reads them (a close
        frame's code, say, behind the rest of a frame too big to take). What
        arrives meanwhile is read and dropped, for `timeout` seconds at most
        and, with `max_bytes`, up to that many bytes.
        """
        if self._lingering or self._dropped:
            return
        self._lingering = True
        self._drain_left = sys.maxsize if max_bytes is None else max_bytes
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
