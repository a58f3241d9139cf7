"""`python -m wspy`: a demo echo server with a page for browsers, and an interactive client."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import wspy
from wspy.options import ClientSSLArgs
from wspy.protocol.handshake import Request, Response
from wspy.protocol.message import Message

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>wspy echo</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em;
         white-space: pre-wrap; font-family: monospace; }
  input { width: 30em; }
</style>
<h1>wspy echo server</h1>
<p id="status">connecting...</p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" autofocus> <button>Send</button></form>
<script>
  const log = (line) => {
    const el = document.getElementById('log');
    el.textContent += line + '\\n';
    el.scrollTop = el.scrollHeight;
  };
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/`);
  const status = document.getElementById('status');
  ws.onopen = () => { status.textContent = `connected to ${ws.url}`; };
  ws.onmessage = (event) => log('< ' + event.data);
  ws.onclose = (event) => { status.textContent = `closed: ${event.code} ${event.reason}`; };
  document.getElementById('form').onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById('text');
    ws.send(input.value);
    log('> ' + input.value);
    input.value = '';
  };
</script>
"""


class EchoHandler(wspy.BaseServer[wspy.ServerConnection]):
    """Echoes every message; answers a browser's plain GET of / with the demo page."""

    def process_request(self, request: Request) -> Response | None:
        """Serve the page to plain GETs of /; everything else goes on to the upgrade."""
        if request.path == '/' and 'websocket' not in request.headers.tokens('Upgrade'):
            return Response(200, {'Content-Type': 'text/html; charset=utf-8'}, PAGE.encode())
        return None

    def onopen(self, client: wspy.ServerConnection) -> None:
        """Log the new client."""
        logging.getLogger('wspy').info('%s connected', client.remote_address)

    def onmessage(self, client: wspy.ServerConnection, message: Message) -> None:
        """Echo the message."""
        client.send(message)

    def onclose(self, client: wspy.ServerConnection, code: int, reason: str) -> None:
        """Log the departure."""
        logging.getLogger('wspy').info('%s closed: %d %s', client.remote_address, code, reason)


def serve(args: argparse.Namespace) -> int:
    """Run the echo server until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(message)s')
    base = wspy.Server if args.threaded else wspy.AsyncServer
    ssl_args = None
    if args.certfile:
        ssl_args = {'certfile': args.certfile, 'keyfile': args.keyfile}
    elif args.keyfile:
        print('--keyfile needs --certfile', file=sys.stderr)
        return 2
    server_class = type('EchoServer', (EchoHandler, base), {})
    address: tuple[str, int] | str = args.unix or (args.host, args.port)
    options: dict[str, Any] = {
        'ssl_args': ssl_args, 'max_message_size': args.max_size, 'max_frame_size': args.max_size,
        'extensions': [wspy.DeflateMessage()], 'trusted_proxies': args.trusted_proxy or None}
    try:
        if args.workers > 1:
            runner: wspy.Workers | wspy.BaseServer[wspy.ServerConnection] = wspy.Workers(
                server_class, address, args.workers, **options)
        else:
            runner = server_class(address, **options)
    except (OSError, ValueError) as error:
        print(f'cannot serve on {args.unix or f"{args.host}:{args.port}"}: {error}',
              file=sys.stderr)
        return 1
    secure = 's' if ssl_args else ''
    kind = base.__name__ + (f', {args.workers} workers' if args.workers > 1 else '')
    if args.unix:
        print(f'wspy echo server ({kind}) on the Unix socket {args.unix}\n'
              f'Ctrl-C stops it.', flush=True)
    else:
        bound = runner.address
        assert isinstance(bound, tuple)  # not a Unix socket
        host, port = bound[:2]
        print(f'wspy echo server ({kind}) on ws{secure}://{host}:{port}/\n'
              f'Open http{secure}://{host}:{port}/ in a browser, or run: '
              f'python -m wspy connect ws{secure}://{host}:{port}/\nCtrl-C stops it.',
              flush=True)
    if isinstance(runner, wspy.Workers):
        runner.run()  # it handles SIGTERM and SIGINT itself
        return 0

    def stop(signum: int, frame: FrameType | None) -> None:
        """SIGTERM: shut down gracefully, as Ctrl-C does."""
        runner.shutdown()

    signal.signal(signal.SIGTERM, stop)
    runner.run()
    return 0


def connect(args: argparse.Namespace) -> int:
    """Send each line of standard input; print each message received."""
    headers = []
    for header in args.header:
        name, colon, value = header.partition(':')
        if not colon:
            print(f'--header {header!r}: expected NAME:VALUE', file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    ssl_args: ClientSSLArgs = {'verify': False} if args.insecure else {}
    if args.cafile:
        ssl_args['cafile'] = args.cafile
    auth = None
    if args.auth:
        user, colon, password = args.auth.partition(':')
        if not colon:
            print('--auth: expected USER:PASSWORD', file=sys.stderr)
            return 2
        auth = (user, password)
    try:
        conn = wspy.connect(args.url, protocols=args.protocol, headers=headers,
                            extensions=[wspy.DeflateMessage()] if args.deflate else [],
                            ssl_args=ssl_args or None, auth=auth, proxy=args.proxy or True)
    except (wspy.WebSocketError, OSError, ValueError) as error:
        print(f'cannot connect to {args.url}: {error}', file=sys.stderr)
        return 1
    protocol = f' (subprotocol {conn.protocol})' if conn.protocol else ''
    print(f'connected to {args.url}{protocol}; type lines to send, end with Ctrl-D', flush=True)
    done = threading.Event()
    received = threading.Event()

    def receive() -> None:
        """Print each message until the connection closes."""
        try:
            while True:
                payload = conn.recv().payload
                received.set()
                print(f'< {payload}' if isinstance(payload, str) else f'< {payload!r}', flush=True)
        except wspy.ConnectionClosed as closed:
            print(f'closed: {closed.code} {closed.reason}'.rstrip(), flush=True)
        finally:
            done.set()

    threading.Thread(target=receive, daemon=True).start()
    try:
        for line in sys.stdin:
            if done.is_set():
                break
            text = line.rstrip('\n')
            conn.send(text.encode() if args.binary else text)
    except (wspy.ConnectionClosed, KeyboardInterrupt):
        pass
    # Messages still on their way are not delivered once our close is sent:
    # wait until nothing has arrived for a while.
    while not done.is_set():
        received.clear()
        if not received.wait(args.wait):
            break
    if not done.is_set():
        conn.close()
    done.wait(conn.close_timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog='python -m wspy',
                                     description='A WebSocket echo server and client.')
    commands = parser.add_subparsers(dest='command')
    serve_parser = commands.add_parser('serve', help='run the echo server (the default)')
    serve_parser.add_argument('--host', default='localhost',
                              help='address to bind (default: localhost)')
    serve_parser.add_argument('--port', type=int, default=8000,
                              help='port to listen on (default: 8000)')
    serve_parser.add_argument('--max-size', type=int, default=16 << 20,
                              help='largest message and frame accepted, in bytes '
                                   '(default: 16 MiB)')
    serve_parser.add_argument('--threaded', action='store_true',
                              help='Server (a pool of threads) instead of the event loop')
    serve_parser.add_argument('--workers', type=int, default=1, metavar='N',
                              help='serve from N processes sharing the port (default: 1)')
    serve_parser.add_argument('--unix', metavar='PATH',
                              help='listen on this Unix socket instead of host and port')
    serve_parser.add_argument('--trusted-proxy', action='append', default=[],
                              metavar='ADDRESS',
                              help="a reverse proxy (address, network or 'unix') whose "
                                   'X-Forwarded-For names the client (repeatable)')
    serve_parser.add_argument('--certfile', help='serve wss:// with this certificate (PEM)')
    serve_parser.add_argument('--keyfile', help="the certificate's private key, if apart")
    serve_parser.add_argument('-v', '--verbose', action='store_true', help='log every frame')
    connect_parser = commands.add_parser('connect', help='an interactive client')
    connect_parser.add_argument('url', help='ws://host:port/path or wss://...')
    connect_parser.add_argument('--insecure', action='store_true',
                                help='wss: do not check the certificate or the host name')
    connect_parser.add_argument('--cafile', help='wss: also trust the CAs in this PEM file')
    connect_parser.add_argument('--auth', metavar='USER:PASSWORD',
                                help='credentials for a Basic or Digest challenge')
    connect_parser.add_argument('--proxy', metavar='URL',
                                help='an http:// proxy (default: https_proxy / http_proxy)')
    connect_parser.add_argument('--binary', action='store_true', help='send lines as binary')
    connect_parser.add_argument('--header', action='append', default=[], metavar='NAME:VALUE',
                                help='an extra request header (repeatable)')
    connect_parser.add_argument('--protocol', action='append', default=[],
                                help='a subprotocol to offer (repeatable)')
    connect_parser.add_argument('--deflate', action='store_true',
                                help='offer permessage-deflate')
    connect_parser.add_argument('--wait', type=float, default=0.5, metavar='SECONDS',
                                help='after the input ends, close once nothing has arrived '
                                     'for this long (default: 0.5)')
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ('serve', 'connect', '-h', '--help'):
        argv = ['serve', *argv]  # `python -m wspy --port 9000` serves, as it always did
    args = parser.parse_args(argv)
    return connect(args) if args.command == 'connect' else serve(args)


if __name__ == '__main__':
    sys.exit(main())
