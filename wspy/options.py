"""The keyword options of sockets, connections, servers and clients, typed and documented.

Each is a `TypedDict` (every key optional): the `**options` of `websocket`,
`Server`, `AsyncServer`, `connect` and `AsyncClient` are typed with them, so
a type checker catches a misspelled option or a wrong type, and the options
reach the socket (`SocketOptions`) and the connection (`ConnectionOptions`)
unchanged. At run time an unknown option is a `TypeError` at once.
A dictionary of options to reuse can be annotated with them too::

    limits: wspy.options.ConnectionOptions = {'max_message_size': 1 << 16}
    server = wspy.Server(('', 8000), **limits)

Times are in seconds, sizes in bytes; each key's comment gives its default
and, where the type allows None, what None means (most often: no limit).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    import socket
    import ssl

    from typing_extensions import Required

    from wspy.auth import Authenticator
    from wspy.protocol.forwarded import TrustedProxies
    from wspy.protocol.extension import Extension
    from wspy.protocol.frame import MessageLimit
    from wspy.protocol.handshake import HeaderItems, Request, Response

__all__ = ['ClientOptions', 'AsyncClientOptions', 'SocketOptions', 'ConnectionOptions',
           'ServerOptions', 'ServerSSLArgs', 'ClientSSLArgs', 'check_options']


#: A file's path.
StrPath = str | os.PathLike[str]
#: A private key's password, or a function that returns it (as `ssl.SSLContext.load_cert_chain`).
Password = str | bytes | bytearray | Callable[[], str | bytes | bytearray]


class ClientOptions(TypedDict, total=False):
    """The options of a client's `websocket`, as `connect()` and `AsyncClient` take them."""

    #: The `Host` header of the request. Default None: the URL's host (and port).
    host: str | None
    #: The `Origin` header of the request. Default None: none sent.
    origin: str | None
    #: Subprotocols: offered by a client; supported by a server, in order of preference.
    #: Default: none.
    protocols: Iterable[str]
    #: Extensions (`DeflateMessage()`, `DeflateFrame()`, your own): offered by a client,
    #: accepted by a server. Default: none.
    extensions: Iterable[Extension]
    #: Extra headers: on a client's request, or on a server's 101 response. A mapping or
    #: (name, value) pairs. Default: none. A client drops its Authorization, Cookie and
    #: Proxy-Authorization after a redirect to another origin.
    headers: HeaderItems
    #: Largest frame accepted, in bytes, checked from its header (a 1009 close). Default
    #: `MESSAGE_LIMIT`: the `max_message_size` of the connection over the socket (1 MiB for
    #: a raw `websocket`, no frame limit when `max_message_size` is None). None: no limit.
    max_frame_size: int | MessageLimit | None
    #: Seconds a write may wait for the peer to take any byte before it fails with
    #: `WriteTimeout` (the connection is dropped, 1006). Default 30 (`WRITE_TIMEOUT`);
    #: None: no limit.
    write_timeout: float | None
    #: Longest HTTP header line of the handshake, in bytes (a server answers 431).
    #: Default 8192.
    max_line_length: int
    #: Most HTTP header lines of the handshake (a server answers 431). Default 128.
    max_headers: int
    #: Largest HTTP head of the handshake, in bytes (a server answers 431). Default 65536.
    max_head_size: int


class AsyncClientOptions(ClientOptions, total=False):
    """The socket options of `AsyncClient` and of its `connect()`."""

    #: Seconds for the whole opening of each connection: resolving, connecting, a proxy's
    #: CONNECT, TLS, the upgrade, redirects and authentication round trips
    #: (`HandshakeTimeout`, to `onconnecterror`). Default 10 (`HANDSHAKE_TIMEOUT`);
    #: None: no limit.
    handshake_timeout: float | None


class SocketOptions(ClientOptions, total=False):
    """Every keyword option of `websocket`, which the servers also take.

    Besides the client's, a server's: what it accepts and how. A socket
    accepted by a listening one inherits its options.
    """

    #: The request target of a client's upgrade request. Default '/'.
    location: str
    #: Seconds for the whole opening handshake, however slowly the peer sends it (a
    #: server answers 408). Default 10 (`HANDSHAKE_TIMEOUT`); None: no limit.
    handshake_timeout: float | None
    #: Server: `select_protocol(offered, supported)` picks the subprotocol, or None for
    #: none. Default: the first of `protocols` that the client offered.
    select_protocol: Callable[[list[str], list[str]], str | None]
    #: Server: sees each upgrade request first; a `Response` it returns is the answer
    #: instead of the upgrade. Default None: every request goes on (on servers, their
    #: `process_request` method).
    process_request: Callable[[Request], Response | None] | None
    #: Server: a `BasicAuth` or `DigestAuth` every request must pass (401). A raw client
    #: `websocket`: (user, password) sent as Basic, only over TLS that checks the server.
    #: Default None: no authentication.
    auth: Authenticator | tuple[str, str] | None
    #: Server: the `Origin` values accepted (None in it admits requests without one);
    #: others get 403. Default None: any.
    trusted_origins: Iterable[str | None] | None
    #: Server: the paths served; others get 404. Default None: any.
    locations: Iterable[str] | None
    #: Server: the reverse proxies (addresses, networks, 'unix') whose `X-Forwarded-For`
    #: gives `request.client_address`. Default None: the header is ignored.
    trusted_proxies: Iterable[str] | TrustedProxies | None


class ConnectionOptions(TypedDict, total=False):
    """The options of a `Connection`: its limits and timers."""

    #: Largest message accepted, in bytes, counted across fragments (a 1009 close).
    #: Default 1 MiB (`DEFAULT_MAX_SIZE`); None: no limit.
    max_message_size: int | None
    #: Seconds to wait for the peer's side of the close handshake before the connection
    #: is dropped. Default 10 (`CLOSE_TIMEOUT`).
    close_timeout: float
    #: Seconds between keepalive pings. Default 20 (`PING_INTERVAL`); None: no keepalive.
    ping_interval: float | None
    #: Seconds a keepalive ping waits for its pong (or to be written) before the connection
    #: fails with 1011. Default 20 (`PING_TIMEOUT`); None: no limit.
    ping_timeout: float | None


class ServerOptions(SocketOptions, ConnectionOptions, total=False):
    """The keyword options of `Server` and `AsyncServer`: their connections' and sockets',
    and those of `BaseServer`."""

    #: The socket family to listen with. Default None: from the address (a string is a
    #: Unix socket path, an address with ':' is IPv6).
    family: int | None
    #: The TLS context for wss://, instead of `ssl_args`. Default None: plain ws://.
    ssl_context: ssl.SSLContext | None
    #: Most connections served at once, handshakes included; more get 503 with
    #: `Retry-After`. Default None: no limit.
    max_connections: int | None
    #: Set SO_REUSEPORT: several processes listen on one port. Default False.
    reuse_port: bool
    #: A listening socket to serve instead of binding the address (one inherited from a
    #: parent process). Default None.
    listener: socket.socket | None


class ServerSSLArgs(TypedDict, total=False):
    """A server's `ssl_args` (see `wspy.tls.server_context`); `certfile` is required."""

    #: The certificate chain (PEM), with the key unless `keyfile` is given.
    certfile: Required[StrPath]
    #: The private key (PEM). Default: in `certfile`.
    keyfile: StrPath | None
    #: The key's password, or a function that returns it. Default: none.
    password: Password | None
    #: CAs whose client certificates are accepted (then required, unless `cert_reqs` says
    #: otherwise).
    cafile: StrPath | None
    #: The original wspy's name for `cafile`.
    ca_certs: StrPath | None
    #: A directory of such CAs.
    capath: StrPath | None
    #: `ssl.CERT_REQUIRED` or `ssl.CERT_OPTIONAL` (ask for a client certificate only).
    cert_reqs: ssl.VerifyMode
    #: The OpenSSL cipher list.
    ciphers: str


class ClientSSLArgs(TypedDict, total=False):
    """A client's `ssl_args` (see `wspy.tls.client_context`): the system's CAs and host name
    checks unless told otherwise."""

    #: Other CAs to trust.
    cafile: StrPath | None
    #: The original wspy's name for `cafile`.
    ca_certs: StrPath | None
    #: A directory of CAs to trust.
    capath: StrPath | None
    #: A client certificate (PEM), with its key unless `keyfile` is given.
    certfile: StrPath
    #: The client certificate's private key (PEM).
    keyfile: StrPath | None
    #: The key's password, or a function that returns it.
    password: Password | None
    #: False skips every certificate check (as `cert_reqs=ssl.CERT_NONE`). Default True.
    verify: bool
    #: Whether the server's certificate must name its host. Default True (False with
    #: `verify=False`).
    check_hostname: bool
    #: `ssl.CERT_NONE` skips the certificate checks (as `verify=False`).
    cert_reqs: ssl.VerifyMode
    #: The OpenSSL cipher list.
    ciphers: str


def check_options(caller: str, options: Mapping[str, object], known: Collection[str]) -> None:
    """`TypeError` for the first of `options` not in `known`, as Python words a misspelled
    keyword argument: `caller` names the function or class that was given it."""
    for name in options:
        if name not in known:
            raise TypeError(f'{caller}() got an unexpected keyword argument {name!r}')


#: The names of the options `connect()` and `AsyncClient` take, to check them at run time
#: (a server's go to `websocket`, which checks them).
CLIENT_OPTIONS: frozenset[str] = ClientOptions.__optional_keys__
ASYNC_CLIENT_OPTIONS: frozenset[str] = AsyncClientOptions.__optional_keys__
