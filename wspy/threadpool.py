"""`ThreadPool`: threads that run calls, as many as are busy at once, none left idle for long.

The threaded `Server` runs its clients' handshakes and callbacks here: a
call never waits for a free thread (a new one starts when all are busy, so
a callback may block), and threads idle for `idle_timeout` seconds retire,
so a quiet server holds none.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger('wspy')

#: Seconds a thread waits for work before it retires.
IDLE_TIMEOUT = 10.0


def _retire() -> None:
    """Queued by `ThreadPool.close()`: the thread that takes it ends."""


class ThreadPool:
    """Runs `submit()`ted calls on daemon threads; `join()` waits for the calls under way."""

    def __init__(self, name: str = 'wspy-worker', idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        # Threads waiting for a call that no submitted call has claimed yet.
        self._idle = 0
        self._busy = 0
        self._threads: set[threading.Thread] = set()
        self._all_idle = threading.Condition(self._lock)

    @property
    def threads(self) -> int:
        """How many threads the pool has now."""
        return len(self._threads)

    def submit(self, call: Callable[..., object], *args: Any) -> None:
        """Run `call(*args)` on a pool thread: an idle one, or a new one if none is."""
        with self._lock:
            self._calls.put((call, args))
            self._busy += 1
            if self._idle:
                self._idle -= 1  # that thread takes this call
                return
            thread = threading.Thread(target=self._work, name=f'{self.name}-{len(self._threads)}',
                                      daemon=True)
            self._threads.add(thread)
        thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no call is under way or queued; whether that happened within `timeout`."""
        with self._all_idle:
            return self._all_idle.wait_for(lambda: not self._busy, timeout)

    def close(self) -> None:
        """Retire every thread once it is done with the call it runs, if any."""
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._calls.put((_retire, ()))

    def _work(self) -> None:
        while True:
            try:
                call, args = self._calls.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if not self._calls.empty():
                        continue  # submitted just now, counting on this thread
                    self._retire_current()
                    return
            if call is _retire:
                with self._lock:
                    self._retire_current()
                    return
            try:
                call(*args)
            except Exception:
                logger.exception('error in %s', getattr(call, '__qualname__', call))
            with self._lock:
                self._idle += 1
                self._busy -= 1
                if not self._busy:
                    self._all_idle.notify_all()

    def _retire_current(self) -> None:
        """Forget the calling thread, which ends (the lock held)."""
        self._idle -= 1
        self._threads.discard(threading.current_thread())

    def owns_current_thread(self) -> bool:
        """Whether the caller runs on one of the pool's threads."""
        return threading.current_thread() in self._threads
