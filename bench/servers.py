"""Echo servers for the benchmark: `python bench/servers.py IMPLEMENTATION PORT`.

Each echoes every message as it came, with limits raised to 32 MiB and no
compression. IMPLEMENTATION is one of the keys of SERVERS: wspy's two
servers, and for reference websockets (asyncio) and picows (Cython, on
uvloop), which `make bench` installs for the benchmark only.
"""

from __future__ import annotations

import logging
import sys

LIMIT = 32 << 20


def wspy_server(port: int, base_name: str) -> None:
    """wspy's AsyncServer or Server."""
    import wspy

    base = getattr(wspy, base_name)

    class Echo(base):  # type: ignore[misc, valid-type]
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)

    Echo(('127.0.0.1', port), max_message_size=LIMIT, max_frame_size=LIMIT,
         backlog_size=1024).run()


def wspy_workers(port: int, workers: int) -> None:
    """wspy's AsyncServer in `workers` processes (SO_REUSEPORT)."""
    import wspy

    class Echo(wspy.AsyncServer):
        def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
            client.send(message)

    wspy.Workers(Echo, ('127.0.0.1', port), workers, max_message_size=LIMIT,
                 max_frame_size=LIMIT, backlog_size=1024).run()


def websockets_server(port: int) -> None:
    """The websockets library's asyncio server (the reference of the ratios)."""
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    logging.getLogger('websockets').setLevel(logging.CRITICAL)  # the load generator just drops

    async def main() -> None:
        async with serve(echo, '127.0.0.1', port, compression=None, max_size=LIMIT,
                         backlog=1024) as server:
            await server.serve_forever()

    asyncio.run(main())


def picows_server(port: int) -> None:
    """picows (Cython) on uvloop: frames echoed as they come."""
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type != WSMsgType.PONG:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    async def main() -> None:
        server = await ws_create_server(lambda request: Echo(), '127.0.0.1', port,
                                        max_frame_size=LIMIT, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


SERVERS = {
    'websockets': websockets_server,
    'picows': picows_server,
    'wspy-AsyncServer': lambda port: wspy_server(port, 'AsyncServer'),
    'wspy-Server': lambda port: wspy_server(port, 'Server'),
}
# `make bench-workers`: the same server in 1 and 2 processes, neither pinned.
WORKERS = {
    'wspy-1-worker': lambda port: wspy_workers(port, 1),
    'wspy-2-workers': lambda port: wspy_workers(port, 2),
}


if __name__ == '__main__':
    {**SERVERS, **WORKERS}[sys.argv[1]](int(sys.argv[2]))
