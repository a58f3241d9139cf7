"""The client's socket taken over from the WSGI server, and the decision on its request.

`_decide` duplicates the server's socket as an `_Upgraded` websocket and
checks the request on it; `_Upgraded.take_over` then makes the connection
the duplicate's alone: a plain socket's server object is left on a dead
socket (`_detach`); a TLS one's session, and gevent's cooperative socket,
are read and written through the server's object.
"""

from __future__ import annotations

import _socket
import functools
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wspy.errors import HandshakeError, WriteTimeout
from wspy.protocol.server_opening import ServerOpening
from wspy.protocol.tls import CHUNK_SIZE
from wspy.websocket import send_without_delay, websocket
from wspy.wsgi.cooperative import on_greenlet, poll

if TYPE_CHECKING:
    from wspy.wsgi.request import Environ

logger = logging.getLogger('wspy')


def _decide(server_sock: socket.socket, head: bytes,
            socket_options: dict[str, Any]) -> tuple[_Upgraded, ServerOpening]:
    """A duplicate of the server's socket and the decision on the request `head`.

    Raises the request's `HandshakeError` if it is refused, and a 503 if the
    socket cannot be duplicated; either way the socket is still the server's.
    """
    try:
        sock = _Upgraded(fileno=os.dup(server_sock.fileno()), **socket_options)
    except OSError as error:
        raise _cannot_take_over(error) from None
    try:
        opening = sock.server_opening()
        opening.decide(head)
        if opening.error is not None:
            raise opening.error
    except BaseException:
        sock.close()
        raise
    return sock, opening


def _cannot_take_over(error: OSError) -> HandshakeError:
    """The 503 of a request whose socket could not be taken over (out of descriptors, say)."""
    logger.error('could not take the WebSocket over from the WSGI server: %s', error)
    return HandshakeError(f'cannot take the connection over: {error}', 503,
                          headers=[('Retry-After', '1')])


def _check_without_socket(environ: Environ, head: bytes, socket_options: dict[str, Any]) -> None:
    """Raise the `HandshakeError` of a request to refuse, on a server without the socket."""
    with websocket(**socket_options) as settings:
        opening = ServerOpening(settings, environ.get('REMOTE_ADDR'))
        opening.decide(head)
    if opening.error is not None:
        raise opening.error


class _Upgraded(websocket):
    """A WSGI server's client socket taken over: a `websocket` on a duplicate of its descriptor.

    `take_over(server_sock)` makes it the connection's alone. A plain socket
    of a server on OS threads is then read and written here, and the
    server's socket object is left on a dead socket (its writes fail, it
    reads end of file). A TLS socket keeps its session in the server's
    `ssl.SSLSocket`, and a socket of gevent's is cooperative: the bytes of
    either go through the server's object (made non-blocking: every wait is
    this socket's, bounded as `websocket`'s are, and each call through it
    holds a lock, so one thread may receive while others send), and closing
    shuts the TCP connection down for the server too. On a gevent greenlet a
    wait yields to the other greenlets (`cooperative.poll`).
    """

    def _init_state(self) -> None:
        super()._init_state()
        self._through: Any = None  # the server's socket object the bytes go through
        self._through_tls = False
        self._through_lock = threading.Lock()
        self._server_timeout: float | None = None

    def take_over(self, server_sock: socket.socket) -> None:
        """Make the connection this socket's alone (see the class).

        A 503 `HandshakeError` if that fails (out of descriptors, say): the
        socket is then still the server's, which answers it.
        """
        try:
            self._take_over(server_sock)
        except OSError as error:
            raise _cannot_take_over(error) from None

    def _take_over(self, server_sock: socket.socket) -> None:
        send_without_delay(self)
        # Asked of the object, not its class: gevent's own SSLSocket (gevent.pywsgi
        # unpatched) is no ssl.SSLSocket.
        tls = hasattr(server_sock, 'getpeercert')
        if tls or on_greenlet():
            self._server_timeout = server_sock.gettimeout()
            server_sock.setblocking(False)
            self._through, self._through_tls = server_sock, tls
            self.settimeout(0.0)
        else:
            self.setblocking(True)
            _detach(server_sock)

    def close(self) -> None:
        """Close; through the server's socket, also shut the TCP connection down, which ends
        the server's use.

        A TLS socket of the server's is left without its session, as a
        completed `unwrap()` leaves it: what the server writes once the
        application has returned meets the TCP connection shut down, a broken
        pipe, which the servers take quietly for a client that has gone (a
        write on the session would be an `SSLError`, which gevent's servers
        log with its traceback).
        """
        through, self._through = self._through, None
        if through is not None:
            try:
                self.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if self._through_tls and getattr(through, '_sslobj', None) is not None:
                through._sslobj = None
            try:
                through.settimeout(self._server_timeout)
            except OSError:
                pass
        super().close()

    # -- reads and writes through the server's socket ----------------------------------------

    def _call_through(self, call: Callable[[], int], blocked: int, deadline: float | None,
                      wait: bool = True) -> int | None:
        """Run a non-blocking read or write on the server's socket until it is done; its
        result.

        Waits for the socket as the call asks (`blocked`: the poll events of
        a socket that has nothing to read or no room), until `deadline`
        (`TimeoutError`); without `wait`, None instead of a wait.
        """
        while True:
            with self._through_lock:
                try:
                    return call()
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
                except (BlockingIOError, InterruptedError):
                    events = blocked
            if not wait:
                return None
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutError('timed out')
            poller = poll()
            poller.register(self, events)
            if not poller.poll(None if timeout is None else timeout * 1000):
                raise TimeoutError('timed out')

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Receive bytes of the stream into `buffer` (decrypted under TLS); 0 at end of file."""
        through = self._through
        if through is None:
            return super().recv_into(buffer, nbytes, flags)
        count = self._call_through(lambda: _read(through, buffer, nbytes), select.POLLIN,
                                   self._read_deadline)
        assert count is not None
        return count

    def read_into_parser(self, deadline: float | None = None, wait: bool = True) -> bool:
        """As `websocket.read_into_parser`; through the server's socket, only a read that may
        wait."""
        if self._through is not None and not wait:
            return False
        return super().read_into_parser(deadline, wait)

    def recv_available(self, size: int = 1 << 17) -> bytes | None:
        """As `websocket.recv_available`, through the server's socket."""
        through = self._through
        if through is None:
            return super().recv_available(size)
        buffer = bytearray(size)
        count = self._call_through(lambda: _read(through, buffer, size), select.POLLIN, None,
                                   wait=False)
        return None if count is None else bytes(buffer[:count])

    def pending(self) -> bool:
        """Whether decrypted bytes wait in the server's TLS session."""
        through = self._through
        return through is not None and self._through_tls and through.pending() > 0

    def _write_all(self, buffers: list[Any], flags: int = 0) -> None:
        through = self._through
        if through is None:
            super()._write_all(buffers, flags)
            return
        data = b''.join(buffers) if len(buffers) > 1 else buffers[0]
        with memoryview(data) as view, view.cast('B') as flat:
            for start in range(0, len(flat), CHUNK_SIZE):
                chunk = flat[start:start + CHUNK_SIZE]
                while chunk:  # a write TLS could not finish is retried with the same bytes
                    sent = self._call_through(functools.partial(_send, through, chunk),
                                              select.POLLOUT, self._write_deadline_now())
                    chunk = chunk[sent or 0:]

    def _write_deadline_now(self) -> float | None:
        """The time a write must end by: `write_timeout` from now, or the write deadline."""
        deadline = None if self.write_timeout is None else time.monotonic() + self.write_timeout
        if self._write_deadline is not None:
            deadline = (self._write_deadline if deadline is None
                        else min(deadline, self._write_deadline))
        return deadline

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of `data` (encrypted under TLS); `WriteTimeout` if the peer does not read."""
        try:
            super().sendall(data, flags)
        except TimeoutError:
            if self._through is None:
                raise
            raise WriteTimeout(f'the peer took nothing for {self.write_timeout} s: '
                               'it does not read') from None

    def send_packed(self, data: bytes, payload: bytes = b'') -> None:
        """As `websocket.send_packed`; through the server's socket, a write that waits too
        long is a `WriteTimeout`."""
        if self._through is None:
            super().send_packed(data, payload)
        else:
            self.sendall(data + payload if payload else data)

    def shutdown_write(self) -> None:
        """Shut down the sending side; under TLS, send the close_notify alert first."""
        through = self._through
        if through is not None and self._through_tls:
            with self._through_lock:
                try:
                    through.unwrap()
                except (OSError, ValueError):
                    pass  # the alert went; the peer's has not come (non-blocking), or TLS failed
        self.shutdown(socket.SHUT_WR)

    def _drop_input(self, deadline: float) -> int:
        """As `websocket._drop_input`; through the server's socket, the wait is
        `_call_through`'s (on a greenlet it yields: a peer that does not close must not hold
        up the others), and the input is read raw, under TLS too (the session has ended)."""
        if self._through is None:
            return super()._drop_input(deadline)
        return self._call_through(functools.partial(_drop, self), select.POLLIN,
                                  deadline) or 0


def _drop(sock: socket.socket) -> int:
    """Read and drop what has arrived on the non-blocking `sock`: how many bytes; 0 at end of
    file."""
    return len(_socket.socket.recv(sock, 65536))


def _read(through: Any, buffer: Any, nbytes: int) -> int:
    """Read (decrypted) bytes from the server's non-blocking socket; 0 at end of file."""
    try:  # gevent's SSLSocket reads nothing for nbytes 0, which means "all it holds"
        return int(through.recv_into(buffer, nbytes or len(buffer)))
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return 0


def _send(through: Any, data: Any) -> int:
    """Send what the server's non-blocking socket takes of `data` (encrypted under TLS).

    `BlockingIOError` when it takes nothing: gevent's SSLSocket says so by
    returning 0, which must not be retried at once.
    """
    sent = int(through.send(data))
    if not sent and data:
        raise BlockingIOError('no room to write')
    return sent


def _detach(server_sock: socket.socket) -> None:
    """Leave the server's socket object on a dead socket: the connection is no longer its.

    Its descriptor number now refers to one end of a socket pair whose other
    end is closed: a write fails (EPIPE), a read gives end of file, closing it
    closes only that. The connection lives on in the duplicate descriptor.
    """
    dead, other = socket.socketpair()
    other.close()
    try:
        os.dup2(dead.fileno(), server_sock.fileno())
    finally:
        dead.close()
