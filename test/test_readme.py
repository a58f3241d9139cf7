"""The README's Python examples: every block compiles, and the ones marked run, run.

Convention: a ```python block right after a line `<!-- test: run -->` (an HTML
comment, invisible once rendered) is self-contained: it runs as written, in a
fresh interpreter, and must exit with status 0. Every other block must compile
and pass no `...` placeholder as an argument (it would be a TypeError when
pasted). Some blocks that serve forever are checked by a test of their own below.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import wspy

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text(encoding='utf-8')
RUN_MARK = '<!-- test: run -->'


@dataclass(frozen=True)
class Block:
    line: int           # of the opening fence, 1-based
    code: str
    run: bool


def python_blocks(text: str) -> list[Block]:
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == '```python':
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == '```')
            marked = index > 0 and lines[index - 1].strip() == RUN_MARK
            blocks.append(Block(index + 1, textwrap.dedent('\n'.join(lines[index + 1:end])),
                                marked))
            index = end
        index += 1
    return blocks


BLOCKS = python_blocks(README)


def block_with(text: str) -> Block:
    [block] = [block for block in BLOCKS if text in block.code]
    return block


def test_the_readme_has_blocks_to_run() -> None:
    assert len(BLOCKS) > 10 and any(block.run for block in BLOCKS)


def check_compiles_without_placeholders(code: str, where: str) -> None:
    """`code` compiles, and passes no `...` as an argument (a placeholder left in)."""
    tree = ast.parse(code, where)
    compile(tree, where, 'exec')
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            assert not any(isinstance(argument, ast.Constant) and argument.value is Ellipsis
                           for argument in arguments), \
                f'{where}: `...` passed as an argument (line {node.lineno})'


@pytest.mark.parametrize('block', BLOCKS, ids=[f'line{b.line}' for b in BLOCKS])
def test_block_compiles_without_placeholders(block: Block) -> None:
    check_compiles_without_placeholders(block.code, f'README.md:{block.line}')


@pytest.mark.parametrize('block', [b for b in BLOCKS if b.run],
                         ids=[f'line{b.line}' for b in BLOCKS if b.run])
def test_marked_block_runs(block: Block, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-c', block.code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f'README.md:{block.line}:\n{result.stderr}'


def test_echo_server_block_echoes_text_and_binary() -> None:
    """The `Server` example, started on a free port instead of run() on 8000."""
    block = block_with('class EchoServer(wspy.Server)')
    lines = block.code.splitlines()
    assert lines[-1] == "EchoServer(('', 8000)).run()"
    namespace: dict[str, object] = {}
    exec('\n'.join(lines[:-1]), namespace)
    echo_server = namespace['EchoServer']
    assert isinstance(echo_server, type) and issubclass(echo_server, wspy.Server)
    server = echo_server(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        conn = wspy.connect(f'ws://127.0.0.1:{server.address[1]}/', timeout=5)
        watchdog = threading.Timer(10, conn.abort)     # a reply that never comes fails the test
        watchdog.start()
        try:
            conn.send('text')
            assert conn.recv() == wspy.TextMessage('text')
            conn.send(b'\x00binary\xff')
            assert conn.recv() == wspy.BinaryMessage(b'\x00binary\xff')
        finally:
            watchdog.cancel()
        conn.close()
    finally:
        server.shutdown()


def test_process_request_is_documented_once() -> None:
    assert README.count('class Guarded(') == 1
    assert README.count('`process_request(request)` sees every request') == 1


def test_examples_section_commands_print_what_they_say() -> None:
    """The client.py command of the Examples section, against the server it names."""
    section = README.split('\n## Examples\n', 1)[1].split('\n## ', 1)[0]
    server_line, client_line = re.findall(r'^\.venv/bin/python (examples/\S+\.py.*)$', section,
                                          re.M)[:2]
    assert server_line.startswith('examples/echo_server.py 8000 &')
    command, expected = client_line.split('# prints: ')
    script, url, *args = command.split()
    assert (script, url) == ('examples/client.py', 'ws://127.0.0.1:8000/')
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / 'examples/echo_server.py'), str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert f'127.0.0.1:{port}' in server.stdout.readline()
        result = subprocess.run([sys.executable, str(ROOT / script),
                                 url.replace('8000', str(port)), *args],
                                capture_output=True, text=True, timeout=60)
    finally:
        server.terminate()
        server.wait(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected.split(', ')


def test_a_client_refused_with_401_raises_invalid_status(tmp_path: Path) -> None:
    """What the Errors section says, and its block's except clause catches."""
    errors = README.split('\n## Errors\n', 1)[1].split('\n## ', 1)[0]
    assert re.search(r'a 401 for credentials it lacks.*\n?.*raises\s+`InvalidStatus`', errors)
    block = block_with('except wspy.InvalidStatus as refused')
    server = wspy.Server(('127.0.0.1', 0), auth=wspy.BasicAuth({'alice': 'wonderland'}))
    server.start()
    try:
        url = f'ws://127.0.0.1:{server.address[1]}/'
        code = block.code.replace("'wss://localhost:8443/'", repr(url))
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['401']
