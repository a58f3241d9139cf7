"""`Workers`: one server class in several processes that share a listening address.

On Linux each worker listens on a socket of its own with SO_REUSEPORT and
the kernel spreads new connections over them; elsewhere, and for Unix
sockets, the workers inherit one listening socket from the parent. The
parent only supervises: it restarts a worker that dies, and on SIGTERM or
SIGINT asks every worker to shut down gracefully (1001 closes, close
handshakes) and waits for them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from wspy.server import (BACKLOG, Address, BaseServer, address_family, bind_listener,
                         close_listener)

logger = logging.getLogger('wspy')

#: Longest wait before restarting a worker that keeps dying at start.
MAX_RESTART_DELAY = 10.0
# A worker that lived this long counts as started well: its next restart is at once.
_HEALTHY_AFTER = 5.0
_POLL = 0.05


class _Slot:
    """One worker's place: the process that fills it, and how its restarts go."""

    __slots__ = ('number', 'pid', 'started', 'delay', 'due')

    def __init__(self, number: int) -> None:
        self.number = number
        self.pid: int | None = None
        self.started = 0.0
        self.delay = 0.0
        self.due = 0.0


class Workers:
    """Run `server_class(address, **options)` in `workers` processes and supervise them.

    `Workers(EchoServer, ('', 8000), workers=4).run()` serves until SIGTERM
    or SIGINT, then shuts every worker down gracefully (each has its
    `max_join_time`; one that overstays `stop_timeout` more seconds is
    killed). A worker that dies is logged and replaced; one that keeps
    dying at start is replaced after a growing delay (up to
    `MAX_RESTART_DELAY`). The server is made in each worker process, so
    whatever it starts (threads, connections to Redis) belongs to that
    worker; the options are made once, here, and every worker inherits
    them at the fork, so a `DigestAuth` given as `auth` is one for all
    (its nonces are good on any worker and each is accepted once by all,
    restarted workers included). POSIX only (`os.fork`).

    Args:
        server_class: the server to run in each worker (a `Server` or
            `AsyncServer` subclass, or a function that makes one), called as
            `server_class(address, **options)` plus `reuse_port=True` or
            `listener=` the inherited socket.
        address: (host, port) or a Unix socket path; port 0 picks one port
            for all (see the `address` property).
        workers: how many worker processes.
        stop_timeout: seconds a worker may take beyond its `max_join_time`
            to stop before it is killed.
        backlog_size: the listening queue's length (given to the servers
            too).
        **options: the server's keyword options, given to each worker's.

    Raises:
        ValueError: fewer than 1 worker.
        OSError: `address` cannot be bound.
    """

    def __init__(self, server_class: Callable[..., BaseServer[Any]], address: Address,
                 workers: int = 2, *, stop_timeout: float = 5.0, backlog_size: int = BACKLOG,
                 **options: Any) -> None:
        if workers < 1:
            raise ValueError(f'workers must be at least 1, not {workers}')
        self.server_class = server_class
        self.options = options
        self.stop_timeout = stop_timeout
        self._slots = [_Slot(number) for number in range(1, workers + 1)]
        self._stopping = False
        self._kill_at: float | None = None
        self._unix_path: str | None = None
        self._reuse_port = bool(_SO_REUSEPORT) and not isinstance(address, str)
        self._listener = self._listen(address, backlog_size)
        self.options.setdefault('backlog_size', backlog_size)

    def _listen(self, address: Address, backlog_size: int) -> socket.socket:
        """The parent's socket: a listener to inherit, or a placeholder that holds the port."""
        sock = socket.socket(address_family(address), socket.SOCK_STREAM)
        try:
            self._unix_path = bind_listener(sock, address, self._reuse_port)
            if not self._reuse_port:
                sock.listen(backlog_size)
            # Otherwise bound, never listening: it keeps the port (port 0 picks one for
            # all) while the workers' own sockets take the connections.
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def address(self) -> Address | bytes:
        """The address the workers serve (bytes for an abstract Unix socket)."""
        address: Address | bytes = self._listener.getsockname()
        return address

    @property
    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [slot.pid for slot in self._slots if slot.pid is not None]

    # -- supervising ----------------------------------------------------------------

    def run(self) -> None:
        """Start the workers and supervise them until SIGTERM or SIGINT; then stop them all."""
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            logger.info('serving on %s with %d workers (%s)', self.address, len(self._slots),
                        'SO_REUSEPORT' if self._reuse_port else 'one shared socket')
            for slot in self._slots:
                self._spawn(slot)
            while any(slot.pid is not None for slot in self._slots) or not self._stopping:
                self._reap()
                now = time.monotonic()
                if self._kill_at is not None and now >= self._kill_at:
                    self._signal_all(signal.SIGKILL)
                    self._kill_at = None
                if not self._stopping:
                    for slot in self._slots:
                        if slot.pid is None and slot.due <= now:
                            self._spawn(slot)
                time.sleep(_POLL)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            close_listener(self._listener, self._unix_path)
            logger.info('all workers stopped')

    def stop(self) -> None:
        """Ask every worker to shut down gracefully (SIGTERM); `run()` returns once all have.

        A worker still there `max_join_time` plus `stop_timeout` seconds
        later is killed; called again, it kills them at once. SIGTERM and
        SIGINT to the parent call it.
        """
        if self._stopping:  # asked twice: do not wait any longer
            self._signal_all(signal.SIGKILL)
            return
        self._stopping = True
        self._signal_all(signal.SIGTERM)
        max_join_time = float(self.options.get('max_join_time', 2.0))
        self._kill_at = time.monotonic() + max_join_time + self.stop_timeout

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info('%s: stopping the workers', signal.Signals(signum).name)
        self.stop()

    def _signal_all(self, signum: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        """Collect workers that have exited; schedule their replacements."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self._slots:
                if slot.pid == pid:
                    self._exited(slot, status)

    def _exited(self, slot: _Slot, status: int) -> None:
        pid, slot.pid = slot.pid, None
        if self._stopping:
            logger.info('worker %d stopped (%s)', slot.number, _describe(status))
            return
        now = time.monotonic()
        lived = now - slot.started
        slot.delay = 0.0 if lived >= _HEALTHY_AFTER else min(
            MAX_RESTART_DELAY, max(0.1, slot.delay * 2))
        slot.due = now + slot.delay
        logger.error('worker %d (pid %d) %s after %.1f s; restarting it%s', slot.number,
                     pid, _describe(status), lived,
                     f' in {slot.delay:.1f} s' if slot.delay else '')

    def _spawn(self, slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(self._serve(slot.number))
        slot.pid = pid
        slot.started = time.monotonic()
        logger.info('worker %d started (pid %d)', slot.number, pid)


    # -- in the worker ----------------------------------------------------------------

    def _serve(self, number: int) -> int:
        """The worker process: make the server, serve until told to stop; the exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        try:
            if self._reuse_port:
                server = self.server_class(self.address, reuse_port=True, **self.options)
                self._listener.close()
            else:
                server = self.server_class(self.address, listener=self._listener,
                                           **self.options)
            signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
            signal.signal(signal.SIGINT, lambda signum, frame: server.shutdown())
            server.run()
        except BaseException:
            logger.exception('worker %d failed', number)
            return 1
        return 0


_SO_REUSEPORT: int = getattr(socket, 'SO_REUSEPORT', 0)


def _describe(status: int) -> str:
    """How a worker ended, from its wait status."""
    if os.WIFSIGNALED(status):
        return f'killed by {signal.Signals(os.WTERMSIG(status)).name}'
    return f'exited with status {os.waitstatus_to_exitcode(status)}'
