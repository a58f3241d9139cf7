"""Run the Autobahn|Testsuite against wspy and judge the verdicts.

    python test/autobahn/run.py --wstest PATH Server        # fuzzingclient vs Server
    python test/autobahn/run.py --wstest PATH AsyncServer   # fuzzingclient vs AsyncServer
    python test/autobahn/run.py --wstest PATH client        # fuzzingserver vs wspy.connect
    python test/autobahn/run.py --wstest PATH AsyncClient   # fuzzingserver vs AsyncClient
    python test/autobahn/run.py --wstest PATH --tls Server  # the same over wss://
    python test/autobahn/run.py --wstest PATH gunicorn      # wspy.wsgi under gunicorn (gthread)
    python test/autobahn/run.py --wstest PATH werkzeug      # wspy.wsgi under Werkzeug
    python test/autobahn/run.py --wstest PATH gevent        # wspy.wsgi under gunicorn (gevent)

Every run has a time limit (wstest writes its report only at the end, so
a hang would stall it). Exits 1 if any case FAILED or has no verdict,
and lists every case that is not OK.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from certs import make_certs  # noqa: E402 - test/ is not a package
INFORMATIONAL_BY_NATURE = {'7.1.6', '7.13.1', '7.13.2'}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on `port`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f'nothing listening on port {port} after {timeout} s')


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child process, killing it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_command(side: str, port: int) -> list[str]:
    """The command that serves the echo endpoint of `side` on `port`."""
    if side == 'gunicorn':  # wspy.wsgi's WebSocketApplication, one gthread worker
        return [sys.executable, '-m', 'gunicorn', '--bind', f'127.0.0.1:{port}',
                '--workers', '1', '--worker-class', 'gthread', '--threads', '4',
                '--log-level', 'warning', '--chdir', str(HERE), 'wsgi_echo:app']
    if side == 'gevent':  # the same on greenlets, gevent's monkey-patching applied
        return [sys.executable, '-m', 'gunicorn', '--bind', f'127.0.0.1:{port}',
                '--workers', '1', '--worker-class', 'gevent',
                '--log-level', 'warning', '--chdir', str(HERE), 'wsgi_echo:app']
    if side == 'werkzeug':
        return [sys.executable, str(HERE / 'wsgi_echo.py'), '--port', str(port)]
    return [sys.executable, str(HERE / 'echo_server.py'), '--port', str(port),
            '--server', side]


def run_server_suite(args: argparse.Namespace, outdir: Path) -> Path:
    """Fuzzingclient against the echo server; returns the index.json path."""
    port = free_port()
    command = server_command(args.side, port)
    scheme = 'ws'
    if args.tls:
        certs = make_certs(outdir / 'certs')
        command += ['--certfile', str(certs.server_cert), '--keyfile', str(certs.server_key)]
        scheme = 'wss'
    server = subprocess.Popen(command)
    try:
        wait_listening(port)
        spec = {'outdir': str(outdir), 'cases': args.cases, 'exclude-cases': args.exclude,
                'exclude-agent-cases': {},
                'servers': [{'agent': args.agent, 'url': f'{scheme}://127.0.0.1:{port}'}]}
        spec_path = outdir / 'spec.json'
        spec_path.write_text(json.dumps(spec))
        subprocess.run([args.wstest, '-m', 'fuzzingclient', '-s', str(spec_path)],
                       cwd=outdir, timeout=args.timeout, check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        stop(server)
    return outdir / 'index.json'


def run_client_suite(args: argparse.Namespace, outdir: Path) -> Path:
    """Fuzzingserver against the wspy client; returns the index.json path."""
    port = free_port()
    spec = {'url': f'ws://127.0.0.1:{port}', 'outdir': str(outdir), 'cases': args.cases,
            'exclude-cases': args.exclude, 'exclude-agent-cases': {}}
    spec_path = outdir / 'spec.json'
    spec_path.write_text(json.dumps(spec))
    fuzzer = subprocess.Popen([args.wstest, '-m', 'fuzzingserver', '-s', str(spec_path)],
                              cwd=outdir, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        subprocess.run([sys.executable, str(HERE / 'echo_client.py'), '--url',
                        f'ws://127.0.0.1:{port}', '--agent', args.agent,
                        *(['--async'] if args.side == 'AsyncClient' else [])],
                       timeout=args.timeout, check=True)
    finally:
        stop(fuzzer)
    return outdir / 'index.json'


def judge(index_path: Path, agent: str) -> int:
    """Print the verdicts; the number of cases FAILED or without a verdict."""
    results = json.loads(index_path.read_text())[agent]
    counts: dict[str, int] = {}
    bad = 0
    for case in sorted(results, key=lambda c: [int(p) for p in c.split('.')]):
        verdict = results[case]
        behavior, close = verdict['behavior'], verdict['behaviorClose']
        counts[behavior] = counts.get(behavior, 0) + 1
        expected = behavior == 'INFORMATIONAL' and case in INFORMATIONAL_BY_NATURE
        if (behavior != 'OK' or close not in ('OK', 'INFORMATIONAL')) and not expected:
            print(f'  {case}: {behavior} / close {close} ({verdict.get("duration")} ms)')
        if behavior in ('FAILED', 'UNIMPLEMENTED') or close == 'FAILED':
            bad += 1
    slowest = sorted(results.items(), key=lambda item: -item[1].get('duration', 0))[:5]
    print(f'{agent}: {len(results)} cases: '
          + ', '.join(f'{n} {b}' for b, n in sorted(counts.items())))
    print('  slowest: ' + ', '.join(f'{c} {v.get("duration")} ms' for c, v in slowest))
    return bad


def main() -> int:
    """Run the chosen suite and judge it."""
    parser = argparse.ArgumentParser()
    parser.add_argument('side', choices=['Server', 'AsyncServer', 'client', 'AsyncClient',
                                         'gunicorn', 'werkzeug', 'gevent'])
    parser.add_argument('--wstest', required=True)
    parser.add_argument('--cases', nargs='+', default=['*'])
    parser.add_argument('--exclude', nargs='*', default=['9.*', '12.*', '13.*'])
    parser.add_argument('--outdir', default='reports')
    parser.add_argument('--timeout', type=float, default=900)
    parser.add_argument('--tls', action='store_true', help='serve wss:// (servers only)')
    args = parser.parse_args()
    clients = ('client', 'AsyncClient')
    if args.tls and args.side in clients:
        parser.error('--tls is for the servers: the fuzzingserver speaks ws:// only')
    if args.tls and args.side in ('gunicorn', 'werkzeug', 'gevent'):
        parser.error('--tls is for wspy\'s own servers')
    args.agent = f'wspy-{args.side}' + ('-wss' if args.tls else '')
    args.wstest = os.path.abspath(args.wstest)
    outdir = Path(args.outdir).resolve() / args.agent
    outdir.mkdir(parents=True, exist_ok=True)
    index = (run_client_suite if args.side in clients else run_server_suite)(args, outdir)
    bad = judge(index, args.agent)
    if bad:
        print(f'{args.agent}: {bad} case(s) FAILED')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
