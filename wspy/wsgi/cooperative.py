"""Waits that yield to the other greenlets, for the connections of gevent's servers.

A request of gevent's servers runs on a greenlet, and every greenlet of the
process shares one OS thread: a wait that blocks the thread holds up them
all. The socket's waits use `poll()` (`gevent.select.poll` on a greenlet).
Without gevent's monkey-patching, the connection's locks and its "closed"
event are the standard library's too, and a greenlet waiting on one that
another greenlet holds (sending to a client that does not read, say) would
freeze the process: `cooperate(connection)` gives it a lock and an event
whose waits on a greenlet yield, and that still block an OS thread (the
keepalive's) as usual.
"""

from __future__ import annotations

import _thread
import functools
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wspy.connection import Connection

# How long a greenlet sleeps between two looks at a lock or an event another holds: first
# _NAP, then twice as long each time up to _LONGEST_NAP (a greenlet waiting for a send to a
# client that does not read may wait its write_timeout: many must not busy the process).
_NAP = 0.001
_LONGEST_NAP = 0.05


def on_greenlet() -> bool:
    """Whether this runs on a gevent greenlet (a request of gevent's servers)."""
    gevent = sys.modules.get('gevent')
    return gevent is not None and isinstance(gevent.getcurrent(), gevent.Greenlet)


def in_event_loop() -> bool:
    """Whether this runs on gevent's hub, its event loop, where nothing may wait: a signal
    handler of a process under gevent runs there."""
    gevent = sys.modules.get('gevent')
    if gevent is None:
        return False
    from gevent.hub import Hub
    return isinstance(gevent.getcurrent(), Hub)


def spawn(function: Callable[..., object], *args: object) -> None:
    """Run `function(*args)` on a new greenlet (from the hub: see `in_event_loop`)."""
    from gevent import spawn as gevent_spawn
    gevent_spawn(function, *args)


def poll() -> Any:
    """A `select.poll` object; on a greenlet, one whose waits yield to the other greenlets."""
    if not on_greenlet():
        return select.poll()
    from gevent.select import poll as gevent_poll  # on a greenlet, gevent is there
    return gevent_poll()


def _wait_on_greenlet(ready: Callable[[], bool], timeout: float | None) -> bool:
    """Wait, yielding, until `ready()` or `timeout` seconds (None: no limit); whether ready."""
    from gevent import sleep
    deadline = None if timeout is None else time.monotonic() + timeout
    nap = _NAP
    while not ready():
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            nap = min(nap, left)
        sleep(nap)
        nap = min(nap * 2, _LONGEST_NAP)
    return True


def cooperate(connection: Connection) -> None:
    """Give `connection`, made on a greenlet, waits that yield, unless gevent has patched
    `threading` (its locks and events then yield already)."""
    monkey = sys.modules.get('gevent.monkey')
    if monkey is not None and monkey.is_module_patched('threading'):
        return
    # The same interface as the standard library's lock and event, which the attributes hold.
    connection._send_lock = Lock()
    connection._recv_lock = Lock()  # type: ignore[assignment]
    connection._closed = Event()


class Lock:
    """A lock whose wait yields on a greenlet and blocks an OS thread."""

    __slots__ = ('_lock',)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (as `threading.Lock.acquire`); whether it was taken."""
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        if not on_greenlet():
            return self._lock.acquire(True, timeout)
        return _wait_on_greenlet(functools.partial(self._lock.acquire, False),
                                 None if timeout < 0 else timeout)

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def locked(self) -> bool:
        """Whether the lock is held."""
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Event(threading.Event):
    """A `threading.Event` whose wait yields on a greenlet."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the event is set, or `timeout` seconds; whether it is set."""
        if self.is_set() or not on_greenlet():
            return super().wait(timeout)
        return _wait_on_greenlet(self.is_set, None if timeout is None else max(timeout, 0.0))
