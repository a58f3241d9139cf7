"""`HeldAnswers`: what a server thread sends while it answers one read's messages, held back
to be written in one go.

The threaded `Server` calls `onmessage` for each message a read brought.
Written one by one, the answers cost a system call each; held until the
last message has been delivered, they cost one (`sendmsg`). A thread that
holds answers writes them when its read's messages are all delivered, when
they grow past `HOLD_SIZE`, before any frame another thread writes and
with a close frame (never held), so that frames keep their order, and
before it waits to read (`recv()` from a callback). Answers held longer
than `HOLD_DELAY` are written by another thread of the server, so that a
callback that blocks does not hold back the answers to the messages before
it.
"""

from __future__ import annotations

import threading
import time

#: The most bytes of answers held back; more are written at once.
HOLD_SIZE = 256 << 10
#: The most buffers held back (one `sendmsg` takes at most IOV_MAX, 1024 on Linux).
HOLD_BUFFERS = 512
#: Seconds after which another thread of the server writes answers still held back (the
#: ceiling the kernel puts on TCP_CORK is 0.2).
HOLD_DELAY = 0.05


class HeldAnswers:
    """Frames (packed, or a header and its payload) held back by the thread that holds them."""

    __slots__ = ('buffers', 'since', 'size', 'thread')

    def __init__(self) -> None:
        #: The thread whose sends are held back (`threading.get_ident()`).
        self.thread = threading.get_ident()
        #: What to write, in order.
        self.buffers: list[bytes | memoryview] = []
        #: Their length.
        self.size = 0
        #: When the first of them was held (`time.monotonic()`).
        self.since = 0.0

    def holds_for_current_thread(self) -> bool:
        """Whether a frame this thread sends is to be held back (and there is room: a frame
        takes up to two buffers)."""
        return (self.thread == threading.get_ident() and self.size < HOLD_SIZE
                and len(self.buffers) + 2 <= HOLD_BUFFERS)

    def add(self, data: bytes, payload: bytes = b'') -> None:
        """Hold back a frame: `data`, then `payload`."""
        if not self.buffers:
            self.since = time.monotonic()
        self.buffers.append(data)
        self.size += len(data)
        if payload:
            self.buffers.append(payload)
            self.size += len(payload)

    def take(self) -> list[bytes | memoryview]:
        """What is held, to be written now; nothing is held afterwards."""
        buffers = self.buffers
        self.buffers = []
        self.size = 0
        return buffers
