"""A typed program using wspy, for `mypy --strict` (`make lint`).

What an application writes type-checks: callbacks annotated with the
connection class their server gives them, options as keyword arguments or
typed dictionaries. The mistakes at the end must stay errors: each carries
the `# type: ignore[code]` of the error it makes, and `--strict` (which warns
about unused ignores) fails if one is no longer an error. Nothing here runs
when imported.
"""

from __future__ import annotations

import ssl

import wspy
from wspy.options import ConnectionOptions, ServerOptions, SocketOptions


class Echo(wspy.Server):
    """Callbacks of the threaded server take a `ServerConnection`."""

    def onopen(self, client: wspy.ServerConnection) -> None:
        request = client.request
        if request is not None:
            print(request.path, client.client_address)

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        client.send(message)

    def onping(self, client: wspy.ServerConnection, payload: bytes) -> None:
        client.send_pong(payload)

    def onclose(self, client: wspy.ServerConnection, code: int, reason: str) -> None:
        print(client.remote_address, code, reason)

    def onerror(self, client: wspy.ServerConnection, error: Exception) -> None:
        client.abort()


class Chat(wspy.AsyncServer):
    """Callbacks of the event-loop server take an `AsyncConnection`."""

    def onopen(self, client: wspy.AsyncConnection) -> None:
        self.call_later(30.0, client.close, 1000, 'time is up')

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        self.broadcast(message)
        print(client.buffered_amount)

    def onsent(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        print(len(self.clients), message)


class Lenient(wspy.AsyncServer):
    """Callbacks written for any `ServerConnection` serve an `AsyncServer` too."""

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        client.send(message)


class Bots(wspy.AsyncClient):
    """Callbacks of the event-loop client take an `AsyncConnection`."""

    def onopen(self, client: wspy.AsyncConnection) -> None:
        client.send('hello')

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        print(message.payload)

    def onconnecterror(self, connecting: wspy.Connecting, error: Exception) -> None:
        print(connecting.url, error)


def serve_and_connect() -> None:
    """Options as keywords, and as typed dictionaries passed on with `**`."""
    limits: ConnectionOptions = {'max_message_size': 1 << 16, 'ping_interval': None}
    handshake: SocketOptions = {'handshake_timeout': 1.0, 'max_headers': 32,
                                'trusted_origins': ['https://example.com', None]}
    with Echo(('127.0.0.1', 0), ssl_args={'certfile': 'cert.pem', 'keyfile': 'key.pem'},
              max_connections=100, **limits, **handshake) as server:
        server.start()
        print(server.address, server.connection_options['close_timeout'])
        options: ServerOptions = {
            'reuse_port': True, 'write_timeout': None, 'extensions': [wspy.DeflateMessage()],
            'ssl_context': ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)}
        chat = Chat(('::1', 0), selector=None, max_buffer_size=None, **options)
        chat.call_soon_threadsafe(chat.broadcast, 'hello')
        chat.shutdown()
        with wspy.connect('ws://127.0.0.1:8000/', protocols=['chat'], headers={'X-A': 'b'},
                          max_frame_size=None, ssl_args={'verify': False}, **limits) as conn:
            conn.send('hi')
        server.shutdown()
    bots = Bots(handshake_timeout=5.0, origin='https://example.com', **limits)
    bots.connect('ws://127.0.0.1:8000/', headers=[('Cookie', 'a=b')], handshake_timeout=1.0)
    bots.start()


# -- Mistakes that must stay type errors ------------------------------------------------


class WrongConnection(wspy.Server):
    """A `Server`'s callbacks are not given `AsyncConnection`s."""

    def onmessage(self, client: wspy.AsyncConnection,  # type: ignore[override]
                  message: wspy.Message) -> None:
        client.send(message)


class NotAConnection(wspy.AsyncServer):
    """A callback must take the connection."""

    def onclose(self, client: str, code: int, reason: str) -> None:  # type: ignore[override]
        print(client, code, reason)


def wrong_options() -> None:
    """Misspelled, mistyped and misplaced options."""
    wspy.Server(('', 0), max_mesage_size=1)  # type: ignore[call-arg]
    wspy.AsyncServer(('', 0), ping_interval='20')  # type: ignore[arg-type]
    wspy.AsyncServer(('', 0), handshake_timout=1)  # type: ignore[call-arg]
    wspy.connect('ws://localhost/', max_frame_sise=1)  # type: ignore[call-arg]
    wspy.connect('ws://localhost/', trusted_origins=['x'])  # type: ignore[call-arg]
    wspy.AsyncClient(write_timeout='1')  # type: ignore[arg-type]
    wspy.AsyncClient().connect('ws://localhost/', locations=['/'])  # type: ignore[call-arg]
    wspy.Server(('', 0), ssl_args={'keyfile': 'key.pem'})  # type: ignore[arg-type]
    limits: ConnectionOptions = {'max_message_sise': 1}  # type: ignore[typeddict-unknown-key]
    print(limits)
    Chat(('', 0)).call_later(1.0, print_number, 'one')  # type: ignore[arg-type]


def print_number(number: int) -> None:
    """For `call_later`: it checks the arguments against the callback."""
    print(number)
