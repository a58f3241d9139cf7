"""`Loop`: one thread, a `selectors` selector, timers and calls from other threads.

The event-loop server runs on it; anything that owns sockets registered
on it runs on its thread. Other threads reach it only through
`call_soon_threadsafe` (and `call_later`, which routes through it), which
wake the loop with a byte on a socketpair.
"""

from __future__ import annotations

import heapq
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger('wspy')

Handler = Callable[[int], None]
#: Size of the receive buffer that the sockets on one loop share.
RECEIVE_BUFFER_SIZE = 1 << 20


def _nothing(*args: Any) -> None:
    """What a cancelled timer holds instead of its callback."""


class Timer:
    """A callback scheduled on a `Loop`; `cancel()` it to stop it from running."""

    __slots__ = ('when', 'callback', 'args', 'cancelled')

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (safe from any thread)."""
        self.cancelled = True
        # The timer waits in the heap until it is due: let go of what it would have called.
        self.callback = _nothing
        self.args = ()

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Loop:
    """A single-threaded event loop over `selectors`.

    `selector` is a `selectors.BaseSelector` subclass (epoll, kqueue, poll,
    select); the platform's best one by default. Handlers registered for a
    socket are called with the ready event mask. Exceptions from handlers
    and callbacks are logged; they never stop the loop.
    """

    def __init__(self, selector: type[selectors.BaseSelector] | None = None) -> None:
        self.selector = (selector or selectors.DefaultSelector)()
        self._timers: list[Timer] = []
        self._ready: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._threadsafe: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._thread: int | None = None
        self._stopping = False
        #: One receive buffer for every socket on this loop: a handler parses what it
        #: read before it returns, so the next handler can read into it again.
        self.buffer = bytearray(RECEIVE_BUFFER_SIZE)
        self.view = memoryview(self.buffer)

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's thread (True before the loop starts)."""
        return self._thread is None or self._thread == threading.get_ident()

    # -- sockets --------------------------------------------------------------

    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Call `handler(mask)` when `sock` is ready for `events`."""
        self.selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Change what `sock` is watched for, and its handler."""
        self.selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching `sock` (no error if it is not watched)."""
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    # -- callbacks ------------------------------------------------------------

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback(*args)` on the loop after the current events (loop thread only)."""
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback(*args)` on the loop soon; safe from any thread."""
        if self._thread == threading.get_ident():
            self._ready.append((callback, args))
            return
        self._threadsafe.append((callback, args))
        self.wake()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run `callback(*args)` on the loop after `delay` seconds; safe from any thread."""
        timer = Timer(time.monotonic() + delay, callback, args)
        if self.in_loop_thread():
            heapq.heappush(self._timers, timer)
        else:
            self.call_soon_threadsafe(heapq.heappush, self._timers, timer)
        return timer

    def wake(self) -> None:
        """Make a `select` under way return; safe from a signal handler."""
        try:
            self._wake_w.send(b'\0')
        except (BlockingIOError, OSError):
            pass

    def _drain_wake(self, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- running ----------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop()`; each turn handles ready sockets, due timers, then callbacks."""
        self._thread = threading.get_ident()
        self._stopping = False
        select = self.selector.select
        ready = self._ready
        threadsafe = self._threadsafe
        timers = self._timers
        while not self._stopping:
            if ready or threadsafe:
                timeout: float | None = 0
            elif timers:
                timeout = max(0.0, timers[0].when - time.monotonic())
            else:
                timeout = None
            for key, mask in select(timeout):
                try:
                    key.data(mask)
                except Exception:
                    logger.exception('error in an event handler')
            if timers:
                now = time.monotonic()
                while timers and timers[0].when <= now:
                    timer = heapq.heappop(timers)
                    if not timer.cancelled:
                        ready.append((timer.callback, timer.args))
            while threadsafe:
                ready.append(threadsafe.popleft())
            # Callbacks queued while these run wait for the next turn, after new events.
            for _ in range(len(ready)):
                callback, args = ready.popleft()
                try:
                    callback(*args)
                except Exception:
                    logger.exception('error in a loop callback')

    def stop(self) -> None:
        """Make `run()` return after the current turn; safe from any thread."""
        self._stopping = True
        self.wake()

    def close(self) -> None:
        """Release the selector and the wake-up sockets."""
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
