"""The graceful stop: closing every WebSocket of the process, on a call or on a signal.

`_process` (a `_Process`) tracks the blocking connections `accept` opened
and the `HandOff`s started, and is made anew in a forked child; its users
look it up here at each use (`stopping._process`). `close_all` closes them
all with 1001, `close_all_on_signals` on gunicorn's stop signals.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wspy.connection import Connection
from wspy.errors import HandshakeError
from wspy.protocol.frame import CLOSE_GOING_AWAY, close_payload
from wspy.wsgi.cooperative import in_event_loop, spawn

logger = logging.getLogger('wspy')

if TYPE_CHECKING:
    from wspy.wsgi.handoff import HandOff


class _Process:
    """The WebSockets this process opened: the blocking connections `accept` made (for
    itself, `WebSocketApplication`), the `HandOff`s started. Forgotten in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.hand_offs: weakref.WeakSet[HandOff] = weakref.WeakSet()
        #: Set by `close_all`: upgrades are refused from then on (503).
        self.going_away = threading.Event()
        #: At most this many blocking WebSockets open at once (None: no limit); set by
        #: `wspy.wsgi.gunicorn.GThreadWorker` to its thread count.
        self.max_blocking: int | None = None
        self._reserved = 0  # upgrades under way, counted against max_blocking

    def reserve(self) -> bool:
        """Count an upgrade to come against `max_blocking`; whether it may go on.

        Each reservation ends with `track` (the connection opened) or
        `release` (it did not).
        """
        with self.lock:
            if self.max_blocking is not None:
                held = sum(1 for connection in self.connections if not connection.closed)
                if self._reserved + held >= self.max_blocking:
                    return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """End a reservation whose upgrade failed."""
        with self.lock:
            self._reserved -= 1

    def track(self, connection: Connection) -> None:
        """Remember an open connection, which ends its reservation; one opened as `close_all`
        runs is closed at once."""
        with self.lock:
            self._reserved -= 1
            going_away = self.going_away.is_set()
            if not going_away:
                self.connections.add(connection)
        if going_away:
            connection.start_close(CLOSE_GOING_AWAY, _GOING_AWAY)

    def track_hand_off(self, hand_off: HandOff) -> None:
        """Remember a started `HandOff`, for `close_all` to shut it down."""
        with self.lock:
            self.hand_offs.add(hand_off)

    def close_all(self, code: int, reason: str) -> None:
        """Close every WebSocket (see `close_all`), on the calling thread."""
        with self.lock:
            self.going_away.set()
            connections = list(self.connections)
            hand_offs = list(self.hand_offs)
        deadline = time.monotonic() + max((c.close_timeout for c in connections), default=0.0)
        for connection in connections:
            # Not one after the other: each may wait close_timeout for a send under way.
            threading.Thread(target=_start_close, args=(connection, code, reason),
                             daemon=True).start()
        for hand_off in hand_offs:
            try:
                hand_off.shutdown()
            except Exception:
                logger.exception('could not shut %r down', hand_off)
        for connection in connections:
            if not connection.wait_closed(max(0.0, deadline - time.monotonic())):
                connection.abort()  # nobody receives its close: the handler's next call fails


def _start_close(connection: Connection, code: int, reason: str) -> None:
    try:
        connection.start_close(code, reason)
    except Exception:
        logger.exception('could not close %r', connection)


_process = _Process()
_GOING_AWAY = 'server shutting down'


def _forget_parent() -> None:
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_forget_parent)


def _shutting_down() -> HandshakeError:
    # A new one each time: one instance raised again and again keeps every traceback
    # (and each request's environ) it was raised with.
    return HandshakeError('shutting down: try again later', 503, headers=[('Retry-After', '1')])


def close_all(code: int = CLOSE_GOING_AWAY, reason: str = _GOING_AWAY,
              wait: float | None = None) -> None:
    """Close every WebSocket this process serves through `wspy.wsgi`, for a graceful stop.

    The blocking connections of `accept` and `WebSocketApplication` get a
    close frame (`code`, 1001 by default): the handler's `recv()` sees the
    close through and raises `ConnectionClosedOK`, the handler returns and
    frees the server's thread. One whose handshake is not over within its
    `close_timeout` (no thread receives it) is dropped, which makes the
    handler's next call fail. The clients of every `HandOff` are closed as
    its `shutdown()` does. From then on the process refuses upgrades (503
    with `Retry-After`). The work runs on a thread of its own: this call
    waits for it at most `wait` seconds (None: until it is done, 0: not at
    all), so that it may run in a signal handler (see
    `close_all_on_signals`) or a server's hook.

    Args:
        code: the close code (1001, going away, by default).
        reason: the close reason.
        wait: the most seconds to wait for the closing (None: until it is
            done; 0: return at once).

    Raises:
        ValueError: a `code` or `reason` no close frame can carry.
    """
    close_payload(code, reason)  # a ValueError here, not in the closing thread
    process = _process
    closer = threading.Thread(target=process.close_all, args=(code, reason),
                              name='wspy-close-all', daemon=True)
    closer.start()
    closer.join(wait)


_SignalHandler = Callable[[int, Any], Any] | int | None
# Signals that cannot be caught, or whose default action does not end the process.
_NOT_ENDING = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT,
                         signal.SIGURG, signal.SIGWINCH})


def close_all_on_signals(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT,
                                                   signal.SIGQUIT),
                         code: int = CLOSE_GOING_AWAY, reason: str = _GOING_AWAY) -> None:
    """On each of `signals`, `close_all(code, reason)`, then what the signal did before.

    For gunicorn, whose workers stop on SIGTERM (graceful stop, and the old
    workers of a reload on SIGHUP) and SIGINT or SIGQUIT (quick stop): call
    it from the `post_worker_init(worker)` hook of its configuration file,
    once the worker's own handlers are in place, and its WebSockets are
    closed with 1001 when it is told to stop instead of being cut when it
    exits. The previous handler runs right after the closing has started;
    a signal whose action was the default one (to end the process) takes it
    once the closing is over, and one the process ignores is left alone.
    From the main thread only, as any `signal.signal`; `ValueError` for a
    signal that does not stop a process (SIGCHLD, SIGWINCH, ...) or cannot
    be caught, and for a `code` or `reason` no close frame can carry.
    """
    close_payload(code, reason)  # a ValueError now, not when the signal comes
    signals = list(signals)
    for signum in signals:  # all checked before any is installed
        if signum in _NOT_ENDING:
            raise ValueError(f'{signal.Signals(signum).name} does not stop a process: closing '
                             'every WebSocket on it would leave one that refuses them all')
    for signum in signals:
        previous: _SignalHandler = signal.getsignal(signum)
        if previous == signal.SIG_IGN or previous is None:  # ignored, or not Python's to chain
            continue
        signal.signal(signum, functools.partial(_close_then, previous, code, reason))
        # A blocking read is interrupted for the handler to run, then resumed (PEP 475): with
        # the restart gunicorn asks for, a sync worker reading its WebSocket never runs it.
        signal.siginterrupt(signum, True)


def _close_then(previous: _SignalHandler, code: int, reason: str,
                signum: int, frame: Any) -> None:
    """A signal handler: start closing everything, then do what the signal did before.

    Under gevent the handler may run on the hub, which must not wait (starting
    a thread waits for it): it then runs on a greenlet of its own.
    """
    if in_event_loop():
        spawn(_close_then, previous, code, reason, signum, frame)
        return
    if previous == signal.SIG_DFL:  # a second one ends the process at once
        signal.signal(signum, signal.SIG_DFL)
        threading.Thread(target=_close_and_die, args=(signum, code, reason),
                         daemon=True).start()
        return
    close_all(code, reason, wait=0)
    if callable(previous):
        previous(signum, frame)


def _close_and_die(signum: int, code: int, reason: str) -> None:
    """Close everything, then take the default action of `signum` (ending the process)."""
    try:
        _process.close_all(code, reason)
    finally:
        os.kill(os.getpid(), signum)
