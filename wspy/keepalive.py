"""One background thread that runs the keepalive pings of blocking connections.

Each connection's `run_keepalive()` sends a ping or checks the last one and
returns the delay until it wants to be called again (None: never). This
thread serves the blocking connections of `connect()`; the connections of
servers and of `AsyncClient` (every `ServerConnection`) use the timers of
their server's `Loop` for the same method instead.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from typing import Any, Protocol

logger = logging.getLogger('wspy')


class _Keepalive(Protocol):
    def run_keepalive(self) -> float | None: ...


class Scheduler:
    """Calls `run_keepalive()` on each connection when its delay comes due."""

    def __init__(self) -> None:
        # Weak references: a connection that closes before its turn is freed at once.
        self._heap: list[tuple[float, int, weakref.ref[Any]]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, connection: _Keepalive, delay: float) -> None:
        """Call `connection.run_keepalive()` in `delay` seconds."""
        with self._condition:
            entry = (time.monotonic() + delay, next(self._order), weakref.ref(connection))
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='wspy-keepalive',
                                                daemon=True)
                self._thread.start()
            if self._heap[0] is entry:  # else the thread wakes up before it is due anyway
                self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                when = self._heap[0][0]
                now = time.monotonic()
                if when > now:
                    self._condition.wait(when - now)
                    continue
                connection = heapq.heappop(self._heap)[2]()
            if connection is None:
                continue
            try:
                delay = connection.run_keepalive()
            except Exception:
                logger.exception('error in keepalive')
                continue
            if delay is not None:
                self.schedule(connection, delay)


scheduler = Scheduler()
