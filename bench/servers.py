"""Echo servers for the benchmark.

    python bench/servers.py IMPLEMENTATION PORT [--tls CERT KEY] [--deflate]

Each echoes every message as it came, with limits raised to 32 MiB. With
--tls it serves wss:// with that certificate and key (each library's own
TLS, an `ssl.SSLContext` with Python's defaults); with --deflate it accepts
permessage-deflate with the library's default settings, and without it
compresses nothing. IMPLEMENTATION is one of the keys of SERVERS: wspy's two
servers, and for reference websockets (asyncio), picows (Cython, on uvloop;
no permessage-deflate: see NO_DEFLATE) and aiohttp (asyncio), which
`make bench` installs for the benchmark only; or of WSGI: wspy.wsgi and
flask-sock under gunicorn (`--wsgi`, plain ws:// only).
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LIMIT = 32 << 20
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    """Where and how a server listens."""

    port: int
    tls: ssl.SSLContext | None = None
    deflate: bool = False


def wspy_server(settings: Settings, base_name: str) -> None:
    """wspy's AsyncServer or Server."""
    import wspy

    base = getattr(wspy, base_name)

    class Echo(base):  # type: ignore[misc, valid-type]
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)

    Echo(('127.0.0.1', settings.port), max_message_size=LIMIT, max_frame_size=LIMIT,
         backlog_size=1024, ssl_context=settings.tls,
         extensions=[wspy.DeflateMessage()] if settings.deflate else []).run()


def wspy_workers(settings: Settings, workers: int) -> None:
    """wspy's AsyncServer in `workers` processes (SO_REUSEPORT)."""
    import wspy

    class Echo(wspy.AsyncServer):
        def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
            client.send(message)

    wspy.Workers(Echo, ('127.0.0.1', settings.port), workers, max_message_size=LIMIT,
                 max_frame_size=LIMIT, backlog_size=1024, ssl_context=settings.tls,
                 extensions=[wspy.DeflateMessage()] if settings.deflate else []).run()


def websockets_server(settings: Settings) -> None:
    """The websockets library's asyncio server (the reference of the ratios)."""
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    logging.getLogger('websockets').setLevel(logging.CRITICAL)  # the load generator just drops

    async def main() -> None:
        async with serve(echo, '127.0.0.1', settings.port, ssl=settings.tls,
                         compression='deflate' if settings.deflate else None, max_size=LIMIT,
                         backlog=1024) as server:
            await server.serve_forever()

    asyncio.run(main())


def picows_server(settings: Settings) -> None:
    """picows (Cython) on uvloop: frames echoed as they come."""
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type != WSMsgType.PONG:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    async def main() -> None:
        server = await ws_create_server(lambda request: Echo(), '127.0.0.1', settings.port,
                                        max_frame_size=LIMIT, backlog=1024, ssl=settings.tls)
        await server.serve_forever()

    uvloop.run(main())


def aiohttp_server(settings: Settings) -> None:
    """aiohttp's web server (asyncio), messages read as str or bytes and sent back."""
    import asyncio

    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=settings.deflate, max_msg_size=LIMIT)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get('/', echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, '127.0.0.1', settings.port, ssl_context=settings.tls,
                           backlog=1024)
        await site.start()
        await asyncio.Event().wait()

    asyncio.run(main())


def async_server(settings: Settings) -> None:
    """wspy.AsyncServer."""
    wspy_server(settings, 'AsyncServer')


def threaded_server(settings: Settings) -> None:
    """wspy.Server."""
    wspy_server(settings, 'Server')


SERVERS: dict[str, Callable[[Settings], None]] = {
    'websockets': websockets_server,
    'picows': picows_server,
    'aiohttp': aiohttp_server,
    'wspy-AsyncServer': async_server,
    'wspy-Server': threaded_server,
}
# The servers that have no permessage-deflate ('-' in the deflate rows).
NO_DEFLATE = frozenset({'picows'})
# References measured only in the rows that use TLS or permessage-deflate.
TLS_AND_DEFLATE_ONLY = frozenset({'aiohttp'})


def one_worker(settings: Settings) -> None:
    """wspy.Workers with one process."""
    wspy_workers(settings, 1)


def two_workers(settings: Settings) -> None:
    """wspy.Workers with two processes."""
    wspy_workers(settings, 2)


# `make bench-workers`: the same server in 1 and 2 processes, neither pinned.
WORKERS: dict[str, Callable[[Settings], None]] = {
    'wspy-1-worker': one_worker,
    'wspy-2-workers': two_workers,
}


def without_c(serve: Callable[[Settings], None]) -> Callable[[Settings], None]:
    """`serve` on wspy's pure-Python fallback (the C accelerator not loaded)."""
    def serve_without_c(settings: Settings) -> None:
        os.environ['WSPY_NO_SPEEDUPS'] = '1'
        serve(settings)
    return serve_without_c


# `make bench-fallback`: both servers as where no C compiler was at hand.
NO_C: dict[str, Callable[[Settings], None]] = {
    'wspy-AsyncServer-noC': without_c(async_server),
    'wspy-Server-noC': without_c(threaded_server),
}


# The threads of the gunicorn worker: one per WebSocket (but with HandOff), and the
# WSGI rows open at most 8 at once (32 for the handshakes, each held a moment).
WSGI_THREADS = 16


def gunicorn_server(settings: Settings, factory: str) -> None:
    """gunicorn (this process its master) with one `gthread` worker serving the WSGI
    application `factory` of wsgi_apps.py; the worker inherits this process's CPUs."""
    from gunicorn.app.wsgiapp import run

    sys.argv = ['gunicorn', '--bind', f'127.0.0.1:{settings.port}', '--workers', '1',
                '--worker-class', 'gthread', '--threads', str(WSGI_THREADS),
                '--backlog', '1024', '--log-level', 'critical', '--chdir', str(HERE),
                f'wsgi_apps:{factory}()']
    run()


# `make bench-wsgi`: WSGI echo endpoints under the same gunicorn worker.
WSGI: dict[str, Callable[[Settings], None]] = {
    'flask-sock': lambda settings: gunicorn_server(settings, 'flask_sock_app'),
    'wspy-gunicorn': lambda settings: gunicorn_server(settings, 'wspy_app'),
    'wspy-handoff': lambda settings: gunicorn_server(settings, 'handoff_app'),
}


def main() -> None:
    """Run the server named on the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument('name', choices=[*SERVERS, *WORKERS, *NO_C, *WSGI])
    parser.add_argument('port', type=int)
    parser.add_argument('--tls', nargs=2, metavar=('CERT', 'KEY'))
    parser.add_argument('--deflate', action='store_true')
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
    {**SERVERS, **WORKERS, **NO_C, **WSGI}[args.name](Settings(args.port, context, args.deflate))


if __name__ == '__main__':
    main()
