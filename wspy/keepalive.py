"""The keepalive of blocking connections: timers on a `Loop` of their own, in one thread.

Each connection's `run_keepalive()` sends a ping or checks the last one and
returns the delay until it wants to be called again (None: never). The
blocking connections of `connect()` have no loop: they share this one,
started on first use. The connections of servers and of `AsyncClient`
(every `ServerConnection`) use the timers of their server's `Loop` for the
same method: one way of keeping time.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

from wspy.loop import Loop

logger = logging.getLogger('wspy')


class _Keepalive(Protocol):
    def run_keepalive(self) -> float | None:
        """Ping or check the last ping; the seconds until it wants to run again (None: never)."""


class Scheduler:
    """Calls `run_keepalive()` on each connection when its delay comes due."""

    def __init__(self) -> None:
        self._loop: Loop | None = None
        self._lock = threading.Lock()

    def schedule(self, connection: _Keepalive, delay: float) -> None:
        """Call `connection.run_keepalive()` in `delay` seconds."""
        # A weak reference: a connection dropped without a close is freed, not kept pinging.
        # Through call_soon_threadsafe: the loop's thread may not have started running yet.
        loop = self._running_loop()
        loop.call_soon_threadsafe(loop.call_later, delay, self._run, weakref.ref(connection))

    def _running_loop(self) -> Loop:
        with self._lock:
            if self._loop is None:
                self._loop = Loop()
                threading.Thread(target=self._loop.run, name='wspy-keepalive',
                                 daemon=True).start()
            return self._loop

    def _run(self, reference: weakref.ref[_Keepalive]) -> None:
        connection = reference()
        if connection is None:
            return
        try:
            delay = connection.run_keepalive()
        except Exception:
            logger.exception('error in keepalive')
            return
        if delay is not None:
            self.schedule(connection, delay)


scheduler = Scheduler()
