"""Server instructions per message, counted by valgrind: a measure the machine's noise leaves alone.

    python bench/instructions.py SERVER LOADGEN-ARGS... [--tree DIR]

Runs the echo server SERVER (see bench/servers.py) under
`valgrind --tool=cachegrind` twice, loaded by bench/loadgen with
LOADGEN-ARGS (without the seconds: `echo 16 64 16`, `handshake 32`) for 2
then 8 seconds, and prints the instructions of the difference per message
(or handshake): start-up and shutdown cancel out. With --tree, the server
runs from that checkout (another commit, its C accelerator built), for an
A/B of the same figure. Instruction counts do not see time in the kernel.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import LOADGEN, free_port, parse

HERE = Path(__file__).resolve().parent


def _default_sigint() -> None:
    """SIGINT as by default in the server: a shell's background job ignores it, and the
    server, which stops on SIGINT, would then never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def count(tree: Path, server: str, loadgen_args: list[str], seconds: int) -> tuple[float, int]:
    """(messages or handshakes, instructions) of one run under cachegrind."""
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / 'cachegrind.out'
        process = subprocess.Popen(
            ['valgrind', '--tool=cachegrind', '--cache-sim=no', f'--cachegrind-out-file={out}',
             sys.executable, str(HERE / 'servers.py'), server, str(port)],
            env={**os.environ, 'PYTHONPATH': str(tree)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_sigint)
        try:
            ready = subprocess.run(['ss', '-ltn'], capture_output=True, text=True)
            deadline = time.monotonic() + 120
            while f':{port} ' not in ready.stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'{server} did not start under valgrind')
                time.sleep(0.2)
                ready = subprocess.run(['ss', '-ltn'], capture_output=True, text=True)
            result = subprocess.run([str(LOADGEN), str(port), *loadgen_args, str(seconds)],
                                    capture_output=True, text=True, timeout=300, check=True)
            figures = parse(result.stdout)
        finally:
            for _ in range(2):  # the first SIGINT closes the clients, the second stops
                process.send_signal(signal.SIGINT)
                time.sleep(2)
            process.wait(120)
        total = re.search(r'^summary: (\d+)', out.read_text(), re.MULTILINE)
        if total is None:
            raise RuntimeError('cachegrind wrote no summary')
    done = figures.get('msgs', figures.get('handshakes', 0.0))
    return done, int(total.group(1))


def main() -> int:
    """Measure twice, print the slope."""
    parser = argparse.ArgumentParser()
    parser.add_argument('server')
    parser.add_argument('loadgen_args', nargs='+')
    parser.add_argument('--tree', type=Path, default=HERE.parent)
    args = parser.parse_args()
    short = count(args.tree, args.server, args.loadgen_args, 2)
    long = count(args.tree, args.server, args.loadgen_args, 8)
    per = (long[1] - short[1]) / (long[0] - short[0])
    print(f'{args.server} ({args.tree}) {" ".join(args.loadgen_args)}: '
          f'{per:,.0f} instructions each ({short[0]:.0f} and {long[0]:.0f} done)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
