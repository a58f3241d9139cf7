"""`Server`: a WebSocket server with a thread per client and callbacks."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Any

from wspy.connection import CLOSE_TIMEOUT, Connection
from wspy.errors import HandshakeError
from wspy.frame import CLOSE_GOING_AWAY, DEFAULT_MAX_SIZE
from wspy.message import Message
from wspy.websocket import websocket

logger = logging.getLogger('wspy')


class ServerConnection(Connection):
    """A client's connection on a server: forwards its callbacks to the server."""

    def __init__(self, server: Server, sock: websocket, **options: Any) -> None:
        super().__init__(sock, **options)
        self.server = server

    def onopen(self) -> None:
        """Forwarded to `Server.onopen`."""
        self.server.onopen(self)

    def onmessage(self, message: Message) -> None:
        """Forwarded to `Server.onmessage`."""
        self.server.onmessage(self, message)

    def onping(self, payload: bytes) -> None:
        """Forwarded to `Server.onping`."""
        self.server.onping(self, payload)

    def onpong(self, payload: bytes) -> None:
        """Forwarded to `Server.onpong`."""
        self.server.onpong(self, payload)

    def onclose(self, code: int, reason: str) -> None:
        """Forwarded to `Server.onclose`."""
        self.server.onclose(self, code, reason)

    def onerror(self, error: Exception) -> None:
        """Forwarded to `Server.onerror`."""
        self.server.onerror(self, error)


class Server:
    """A WebSocket server that serves each client in a thread of its own.

    Subclass it and override the callbacks, which take the client (a
    `ServerConnection`) first. `address` is bound at once, so `address`
    tells the port when binding port 0. `run()` serves until `shutdown()`,
    which may be called from any thread or a signal handler: clients get a
    1001 close and up to `max_join_time` seconds for their close
    handshakes. Other keyword options go to `websocket` (handshake options
    and limits).
    """

    connection_class: type[ServerConnection] = ServerConnection

    def __init__(self, address: tuple[Any, ...] | str, loglevel: int | None = None,
                 ssl_args: dict[str, Any] | None = None, max_join_time: float = 2.0,
                 backlog_size: int = 32, *, max_message_size: int | None = DEFAULT_MAX_SIZE,
                 close_timeout: float = CLOSE_TIMEOUT, family: int | None = None,
                 **options: Any) -> None:
        if ssl_args is not None:
            raise NotImplementedError('TLS (ssl_args) is not available in this version yet')
        if loglevel is not None:
            logger.setLevel(loglevel)
        self.max_join_time = max_join_time
        self.connection_options = {'max_message_size': max_message_size,
                                   'close_timeout': close_timeout}
        if family is None:
            family = socket.AF_UNIX if isinstance(address, str) else (
                socket.AF_INET6 if ':' in str(address[0]) else socket.AF_INET)
        self.sock = websocket(family, socket.SOCK_STREAM, **options)
        try:
            if family != socket.AF_UNIX:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(address)
            self.sock.listen(backlog_size)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        #: The open client connections.
        self.clients: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._handshaking: set[websocket] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._run_thread: int | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> Any:
        """The address the server listens on."""
        return self.sock.getsockname()

    def run(self) -> None:
        """Accept and serve clients until `shutdown()` (or Ctrl-C), then close them all."""
        self._run_thread = threading.get_ident()
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        logger.info('serving on %s', self.address)
        try:
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self.sock:
                        self._accept_all()
                    else:
                        self._wake_r.recv(4096)
        except KeyboardInterrupt:
            logger.info('interrupted, shutting down')
        finally:
            selector.close()
            self._close_all()

    def start(self) -> threading.Thread:
        """Run the server in a background thread, which is returned."""
        thread = threading.Thread(target=self.run, name='wspy-server', daemon=True)
        thread.start()
        return thread

    def _accept_all(self) -> None:
        while True:
            try:
                sock, address = self.sock.accept(handshake=False)
            except BlockingIOError:
                return
            except OSError as error:
                # Out of file descriptors, for one: keep serving the others.
                logger.error('accept failed: %s', error)
                time.sleep(0.01)
                return
            sock.setblocking(True)
            thread = threading.Thread(target=self._serve, args=(sock, address),
                                      name=f'wspy-client-{address}', daemon=True)
            with self._lock:
                self._threads.add(thread)
                self._handshaking.add(sock)
            thread.start()

    def _serve(self, sock: websocket, address: Any) -> None:
        client = None
        try:
            try:
                sock.server_handshake()
            except (HandshakeError, OSError) as error:
                logger.debug('handshake with %s failed: %s', address, error)
                with self._lock:
                    self._handshaking.discard(sock)
                sock.close()
                return
            client = self.connection_class(self, sock, **self.connection_options)
            with self._lock:
                self._handshaking.discard(sock)
                self.clients.add(client)
                stopping = self._stopping
            if stopping:
                client.start_close(CLOSE_GOING_AWAY, 'server shutting down')
            client.receive_forever()
        except Exception:
            logger.exception('unexpected error serving %s', address)
            if client is not None:
                client.abort()
            sock.close()
        finally:
            with self._lock:
                if client is not None:
                    self.clients.discard(client)
                self._threads.discard(threading.current_thread())

    def shutdown(self) -> None:
        """Stop accepting, close every client with 1001 and wait for `run()` to end.

        From a signal handler or a callback on the server's own threads it
        only asks `run()` to stop, and returns at once.
        """
        self._stopping = True
        try:
            self._wake_w.send(b'\0')
        except OSError:
            pass
        if self._run_thread is not None and self._run_thread != threading.get_ident() and \
                threading.current_thread() not in self._threads:
            self._stopped.wait()

    def _close_all(self) -> None:
        self.sock.close()
        with self._lock:
            clients = list(self.clients)
            handshaking = list(self._handshaking)
        for sock in handshaking:
            # Only the reading side: a stalled handshake wakes up and fails,
            # while one that just succeeded can still send its close frame.
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        for client in clients:
            client.start_close(CLOSE_GOING_AWAY, 'server shutting down')
        deadline = time.monotonic() + self.max_join_time
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            late = list(self.clients)
        for client in late:
            logger.info('%s: no close handshake within max_join_time, dropping', client)
            client.abort()
        for thread in list(self._threads):
            thread.join(1.0)
        self._wake_r.close()
        self._wake_w.close()
        self._stopped.set()
        logger.info('server stopped')

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._run_thread is None:
            self.sock.close()
            self._wake_r.close()
            self._wake_w.close()
        else:
            self.shutdown()

    # -- callbacks: override these --------------------------------------------------

    def onopen(self, client: ServerConnection) -> None:
        """Called when a client's connection is open."""
        logger.debug('%s: open', client)

    def onmessage(self, client: ServerConnection, message: Message) -> None:
        """Called with each message a client sends."""

    def onping(self, client: ServerConnection, payload: bytes) -> None:
        """Called when a client's ping arrives (the pong is sent automatically)."""

    def onpong(self, client: ServerConnection, payload: bytes) -> None:
        """Called when a client's pong arrives."""

    def onclose(self, client: ServerConnection, code: int, reason: str) -> None:
        """Called once when a client's connection has closed."""
        logger.debug('%s: closed %d %s', client, code, reason)

    def onerror(self, client: ServerConnection, error: Exception) -> None:
        """Called with a client's protocol error, lost connection or callback exception."""
        Connection.onerror(client, error)
