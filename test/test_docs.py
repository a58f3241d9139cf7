"""The documentation site's pages (docs/**/*.md): their Python examples and their reference.

The convention of test_readme.py holds here too: every ```python block
compiles and passes no `...` placeholder as an argument, and a block right
after a line `<!-- test: run -->` runs as written in a fresh interpreter. The
tutorial's server and clients, which serve or connect to a fixed port, are
run below against a server on a free port.
"""

from __future__ import annotations

import ast
import http.client
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import wspy

from certs import make_certs
from test_readme import Block, check_compiles_without_placeholders, python_blocks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / 'docs'
PAGES = sorted(DOCS.rglob('*.md'))
BLOCKS = [(page.relative_to(ROOT).as_posix(), block)
          for page in PAGES for block in python_blocks(page.read_text(encoding='utf-8'))]
IDS = [f'{name}:{block.line}' for name, block in BLOCKS]


def page_block(page: str, text: str) -> Block:
    [block] = [block for name, block in BLOCKS if name == f'docs/{page}' and text in block.code]
    return block


def run_client(block: Block, port: int, host: str = '127.0.0.1:8000',
               cwd: Path | None = None) -> list[str]:
    """Run a client block against PORT instead of the port it names; its output."""
    name = host.split(':')[0]
    code = block.code.replace(host, f'{name}:{port}')
    assert code != block.code, f'the block names no {host} to replace'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def server_class(block: Block, name: str) -> type[wspy.BaseServer]:  # type: ignore[type-arg]
    """The class a server block defines, without running its `if __name__ == '__main__'` part."""
    namespace: dict[str, object] = {'__name__': 'docs_example'}
    exec(compile(block.code, f'{name}:{block.line}', 'exec'), namespace)
    server = namespace[name]
    assert isinstance(server, type) and issubclass(server, wspy.BaseServer)
    return server


def test_the_pages_have_blocks_to_run() -> None:
    assert len(PAGES) > 30 and len(BLOCKS) > 30
    assert sum(block.run for _, block in BLOCKS) >= 3


@pytest.mark.parametrize('name, block', BLOCKS, ids=IDS)
def test_block_compiles_without_placeholders(name: str, block: Block) -> None:
    check_compiles_without_placeholders(block.code, f'{name}:{block.line}')


RUN = [(name, block) for name, block in BLOCKS if block.run]


@pytest.mark.parametrize('name, block', RUN, ids=[f'{n}:{b.line}' for n, b in RUN])
def test_marked_block_runs(name: str, block: Block, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-c', block.code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f'{name}:{block.line}:\n{result.stderr}'


def test_tutorial_echo_server_and_client() -> None:
    echo_server = server_class(page_block('tutorial/install.md', 'class EchoServer'),
                               'EchoServer')
    server = echo_server(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        client = page_block('tutorial/install.md', "conn.send('hello')")
        assert run_client(client, server.address[1]) == ['hello']
    finally:
        server.shutdown()


def test_tutorial_chat_serves_its_page_and_broadcasts() -> None:
    chat = server_class(page_block('tutorial/chat.md', 'class Chat'), 'Chat')
    server = chat(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    port = server.address[1]
    try:
        page = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        page.request('GET', '/')
        response = page.getresponse()
        assert response.status == 200 and b'new WebSocket(' in response.read()
        page.close()

        alice = wspy.connect(f'ws://127.0.0.1:{port}/alice', timeout=5)
        watchdog = threading.Timer(30, alice.abort)     # a line that never comes fails the test
        watchdog.start()
        try:
            assert alice.recv().payload == '* alice joined, 1 here'
            client = page_block('tutorial/client.md', "conn.send('hello all')")
            assert run_client(client, port) == ['* bob joined, 2 here', 'bob: hello all']
            assert [alice.recv().payload for _ in range(3)] == \
                ['* bob joined, 2 here', 'bob: hello all', '* bob left']
        finally:
            watchdog.cancel()
        alice.close()
    finally:
        server.shutdown()


def test_tutorial_chat_over_wss(tmp_path: Path) -> None:
    """The tutorial's wss step, with the certificates its test/certs.py command makes."""
    make_certs(tmp_path / 'certs')
    server_block = page_block('tutorial/wss.md', 'server = Chat(')
    [ssl_args] = [ast.literal_eval(keyword.value) for node in ast.walk(ast.parse(server_block.code))
                  if isinstance(node, ast.Call) for keyword in node.keywords
                  if keyword.arg == 'ssl_args']
    chat = server_class(page_block('tutorial/chat.md', 'class Chat'), 'Chat')
    server = chat(('127.0.0.1', 0), handshake_timeout=5,
                  ssl_args={key: str(tmp_path / path) for key, path in ssl_args.items()})
    server.start()
    try:
        client = page_block('tutorial/wss.md', 'wss://localhost:8443/dave')
        assert run_client(client, server.address[1], 'localhost:8443', tmp_path) == \
            ['* dave joined, 1 here']
    finally:
        server.shutdown()


def test_the_reference_documents_every_public_name() -> None:
    reference = '\n'.join(page.read_text(encoding='utf-8')
                          for page in sorted((DOCS / 'reference').glob('*.md')))
    documented = set(re.findall(r'^\.\. auto(?:class|function|data|exception):: (\w+)$',
                                reference, re.M))
    assert set(wspy.__all__) <= documented, sorted(set(wspy.__all__) - documented)
    for module in ('wspy.wsgi', 'wspy.options'):
        assert f'.. automodule:: {module}\n' in reference
