"""`Loop`: one thread, epoll or a `selectors` selector, timers and calls from other threads.

The event-loop server runs on it; anything that owns sockets registered
on it runs on its thread. Other threads reach it only through
`call_soon_threadsafe` (and `call_later`, which routes through it), which
wake the loop with a byte on a socketpair.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import select
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
# Cancelled timers the heap may hold before they are swept out, once they are also a third
# of it. (Not half: each open connection leaves a cancelled handshake timer beside its live
# keepalive timer, so idle connections would never reach half.)
_SWEEP_AT = 256

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
_EPOLLIN = getattr(select, 'EPOLLIN', 0)
_EPOLLOUT = getattr(select, 'EPOLLOUT', 0)
_EPOLL_EVENTS = {READ: _EPOLLIN, WRITE: _EPOLLOUT, READ | WRITE: _EPOLLIN | _EPOLLOUT}


def _nothing(*args: Any) -> None:
    """What a cancelled timer holds instead of its callback."""


class Timer:
    """A callback scheduled on a `Loop`; `cancel()` it to stop it from running."""

    __slots__ = ('when', 'callback', 'args', 'cancelled', 'loop')

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...],
                 loop: Loop) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.loop: Loop | None = loop  # while it waits in the loop's heap

    def cancel(self) -> None:
        """Do not run the callback (safe from any thread)."""
        if self.cancelled:
            return
        self.cancelled = True
        # The timer waits in the heap until it is due or the loop sweeps the heap:
        # let go of what it would have called.
        self.callback = _nothing
        self.args = ()
        if self.loop is not None:
            self.loop._cancelled_timers += 1


@functools.cache  # the allocator is the process's: once is enough
def _keep_freed_memory() -> None:
    """Have the C allocator keep freed memory for reuse rather than hand it back at once.

    A server allocates and frees a payload for every message. glibc returns
    the top of its heap to the system as soon as 128 KiB there are free, and
    the next payload faults those pages back in: measured, about 2.7 page
    faults and a fifth more kernel time for each 64 KiB echo. Once glibc
    frees a block it had to map on its own, it raises that limit to twice the
    block's size, as it would after the first large message anyway: freeing
    one 2 MiB block (zeroed by the system, so never touched) does it now.
    """
    bytes(2 << 20)


class _Selector:
    """Sockets watched through a `selectors` selector, each with its handler."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector

    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Watch `sock` for `events`; `handler(mask)` when ready."""
        self.selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Change what `sock` is watched for, and its handler."""
        self.selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching `sock`."""
        self.selector.unregister(sock)

    def select(self, timeout: float | None) -> list[tuple[Handler, int]]:
        """Wait up to `timeout` seconds (None: no limit); the ready handlers and masks."""
        return [(key.data, mask) for key, mask in self.selector.select(timeout)]

    def close(self) -> None:
        """Release the selector."""
        self.selector.close()


class _Epoll:
    """Sockets watched through `select.epoll` directly.

    What `selectors.EpollSelector` does, less its per-call bookkeeping
    (a key object per socket, a lookup by file object): a handshake
    registers, modifies and unregisters a socket, so that cost counts.
    """

    def __init__(self) -> None:
        self.selector = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._events: dict[int, int] = {}

    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Watch `sock` for `events`; `handler(mask)` when ready."""
        fd = sock.fileno()
        self.selector.register(fd, _EPOLL_EVENTS[events])
        self._handlers[fd] = handler
        self._events[fd] = events

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Change what `sock` is watched for, and its handler."""
        fd = sock.fileno()
        if fd not in self._handlers:
            raise KeyError(f'{sock!r} is not registered')
        if self._events[fd] != events:
            self.selector.modify(fd, _EPOLL_EVENTS[events])
            self._events[fd] = events
        self._handlers[fd] = handler

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching `sock`."""
        fd = sock.fileno()
        del self._handlers[fd]
        del self._events[fd]
        self.selector.unregister(fd)

    def select(self, timeout: float | None) -> list[tuple[Handler, int]]:
        """Wait up to `timeout` seconds (None: no limit); the ready handlers and masks."""
        handlers = self._handlers
        events = self._events
        ready = []
        for fd, flags in self.selector.poll(-1 if timeout is None else timeout):
            handler = handlers.get(fd)
            if handler is not None:  # unregistered by a handler before it in this batch
                # Errors and hang-ups wake both readers and writers, as in selectors.
                mask = ((flags & ~_EPOLLOUT and READ) | (flags & ~_EPOLLIN and WRITE))
                ready.append((handler, mask & events[fd]))
        return ready

    def close(self) -> None:
        """Release the selector."""
        self.selector.close()


class Loop:
    """A single-threaded event loop over epoll or a `selectors` selector.

    `selector` is a `selectors.BaseSelector` subclass (epoll, kqueue, poll,
    select); the platform's best one by default, where epoll is used
    directly. Handlers registered for a socket are called with the ready
    event mask. Exceptions from handlers and callbacks are logged; they
    never stop the loop.
    """

    def __init__(self, selector: type[selectors.BaseSelector] | None = None) -> None:
        _keep_freed_memory()
        selector = selector or selectors.DefaultSelector
        self._poller = (_Epoll() if selector is getattr(selectors, 'EpollSelector', None)
                        else _Selector(selector()))
        #: The selector underneath (a `select.epoll` when epoll is used directly).
        self.selector: Any = self._poller.selector
        # (when, sequence, timer): the heap compares floats and ints, never timers.
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        # Cancelled timers still in the heap (approximate: other threads cancel too).
        self._cancelled_timers = 0
        self._ready: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._threadsafe: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r, READ, self._drain_wake)
        # A wake-up byte is on its way for calls from other threads: they need no other.
        self._wake_pending = False
        self._thread: int | None = None
        self._stopping = False
        #: How many ready sockets of this turn are still to be handled after the current one.
        self.events_left = 0
        #: One receive buffer for every socket on this loop: a handler parses what it
        #: read before it returns, so the next handler can read into it again.
        self.buffer = bytearray(RECEIVE_BUFFER_SIZE)
        self.view = memoryview(self.buffer)

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's thread (True before the loop starts)."""
        return self._thread is None or self._thread == threading.get_ident()

    # -- sockets --------------------------------------------------------------

    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Call `handler(mask)` when `sock` is ready for `events`.

        Args:
            sock: the socket to watch (non-blocking).
            events: `READ`, `WRITE` or `READ | WRITE`.
            handler: called on the loop's thread with the ready events.
        """
        self._poller.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Change what `sock` is watched for, and its handler."""
        self._poller.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching `sock` (no error if it is not watched)."""
        try:
            self._poller.unregister(sock)
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
        if not self._wake_pending:
            self._wake_pending = True
            self.wake()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run `callback(*args)` on the loop after `delay` seconds; safe from any thread.

        Returns:
            The `Timer`: `cancel()` it to stop it from running.
        """
        timer = Timer(time.monotonic() + delay, callback, args, self)
        entry = (timer.when, next(self._sequence), timer)
        if self.in_loop_thread():
            heapq.heappush(self._timers, entry)
        else:
            self.call_soon_threadsafe(heapq.heappush, self._timers, entry)
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
        # After the bytes are read, before the calls are taken (later in this turn): a
        # call queued from now on is either taken then, or sends a byte of its own.
        self._wake_pending = False

    # -- running ----------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop()`; each turn handles ready sockets, due timers, then callbacks.

        A `stop()` that came before (from a signal handler, say) ends it at once.
        """
        self._thread = threading.get_ident()
        try:
            self._run()
        finally:
            self._stopping = False  # the next run() goes on until its own stop()

    def _run(self) -> None:
        select = self._poller.select
        ready = self._ready
        threadsafe = self._threadsafe
        timers = self._timers
        while not self._stopping:
            if ready or threadsafe:
                timeout: float | None = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            else:
                timeout = None
            events = select(timeout)
            self.events_left = len(events)
            for handler, mask in events:
                self.events_left -= 1
                try:
                    handler(mask)
                except Exception:
                    logger.exception('error in an event handler')
            if timers:
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    timer = heapq.heappop(timers)[2]
                    timer.loop = None
                    if not timer.cancelled:
                        ready.append((timer.callback, timer.args))
                    else:
                        self._cancelled_timers -= 1
                if self._cancelled_timers > _SWEEP_AT and 3 * self._cancelled_timers > len(timers):
                    self._sweep_timers()
            while threadsafe:
                ready.append(threadsafe.popleft())
            # Callbacks queued while these run wait for the next turn, after new events.
            for _ in range(len(ready)):
                callback, args = ready.popleft()
                try:
                    callback(*args)
                except Exception:
                    logger.exception('error in a loop callback')

    def _sweep_timers(self) -> None:
        """Drop cancelled timers from the heap: a handshake timer or a keepalive timer is
        usually cancelled long before it is due, and the heap would grow with the churn."""
        self._timers[:] = [entry for entry in self._timers if not entry[2].cancelled]
        heapq.heapify(self._timers)
        self._cancelled_timers = 0

    def stop(self) -> None:
        """Make `run()` return after the current turn; safe from any thread."""
        self._stopping = True
        self.wake()

    def close(self) -> None:
        """Release the selector and the wake-up sockets."""
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()
