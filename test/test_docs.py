"""The documentation site's pages (docs/**/*.md): their Python examples, their facts and
their reference.

The convention of test_readme.py holds here too: every ```python block
compiles and passes no `...` placeholder as an argument, and a block right
after a line `<!-- test: run -->` runs as written in a fresh interpreter. The
tutorial's server and clients, which serve or connect to a fixed port, are
run below against a server on a free port; so are the commands of the
Examples page, and the Errors page's example. The tables of options and their
defaults are checked against the code.
"""

from __future__ import annotations

import ast
import http.client
import inspect
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import wspy
from wspy.options import (AsyncClientOptions, ClientOptions, ConnectionOptions, ServerOptions,
                          SocketOptions)

from certs import make_certs
from conftest import free_port
from test_nginx import LOCATION
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


def page_text(page: str) -> str:
    return (DOCS / page).read_text(encoding='utf-8')


def test_process_request_is_documented_once() -> None:
    """One example of `process_request` and one description, in all the pages and the README."""
    texts = [page.read_text(encoding='utf-8') for page in PAGES]
    texts.append((ROOT / 'README.md').read_text(encoding='utf-8'))
    assert sum(text.count('class Guarded(') for text in texts) == 1
    assert sum(text.count('`process_request(request)` sees every request') for text in texts) == 1


def test_examples_page_commands_print_what_they_say() -> None:
    """The client.py command of the Examples page, against the server it names."""
    examples = page_text('examples.md')
    server_line, client_line = re.findall(r'^\.venv/bin/python (examples/\S+\.py.*)$', examples,
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


def test_examples_page_names_every_example() -> None:
    examples = page_text('examples.md')
    for script in sorted((ROOT / 'examples').glob('*.py')):
        named = f'`{script.name}`' in examples
        assert named or (script.name.startswith('porting_') and '`porting_*.py`' in examples), \
            script.name


def test_a_client_refused_with_401_raises_invalid_status(tmp_path: Path) -> None:
    """What the Errors page says, and its block's except clause catches."""
    errors = page_text('reference/errors.md')
    assert re.search(r'a 401 for credentials it lacks.*\n?.*raises\s+`InvalidStatus`', errors)
    block = page_block('reference/errors.md', 'except wspy.InvalidStatus as refused')
    server = wspy.Server(('127.0.0.1', 0), auth=wspy.BasicAuth({'alice': 'wonderland'}))
    server.start()
    try:
        url = f'ws://127.0.0.1:{server.address[1]}/'
        code = block.code.replace("'wss://localhost:8443/'", repr(url))
        assert code != block.code
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['401']


OPTION_TABLE = re.compile(r'^\| option \| default \|.*\n\|[-|]+\|\n((?:\|.*\n)+)', re.M)
NO_VALUE = object()     # a default the table says in words that name no value to compare


def documented_defaults(page: str) -> list[tuple[str, str]]:
    """(option, default as written) for each row of the page's tables of options."""
    rows = []
    for table in OPTION_TABLE.findall(page_text(page)):
        for line in table.splitlines():
            names_cell, default_cell = line.strip('|').split('|')[:2]
            names = re.findall(r'`(\w+)`', names_cell)
            defaults = [default.strip() for default in default_cell.split(',')]
            if len(defaults) != len(names):     # one default for every option of the row
                defaults = [default_cell.strip()] * len(names)
            rows += zip(names, defaults, strict=True)
    return rows


def default_value(written: str) -> object:
    """The value a default as the pages write it stands for, or NO_VALUE."""
    if match := re.fullmatch(r'(\d+(?:\.\d+)?)(?: s)?', written):
        return float(match[1])
    if match := re.fullmatch(r'(\d+) (KiB|MiB)', written):
        return int(match[1]) << (10 if match[2] == 'KiB' else 20)
    if match := re.fullmatch(r'`(/)`', written):
        return match[1]
    if written in ('none', 'any', 'no limit'):
        return None
    return NO_VALUE


def defaults_in_code() -> dict[str, object]:
    """The default of every keyword of the socket, connection, servers and `connect`."""
    defaults: dict[str, object] = {}
    for function in (wspy.websocket.__init__, wspy.Connection.__init__, wspy.Server.__init__,
                     wspy.AsyncServer.__init__, wspy.connect):
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.default is not parameter.empty:
                defaults.setdefault(name, parameter.default)
    return defaults


def known_options() -> set[str]:
    names: set[str] = set()
    for options in (SocketOptions, ClientOptions, AsyncClientOptions, ConnectionOptions,
                    ServerOptions):
        names |= set(options.__annotations__)
    for function in (wspy.Server.__init__, wspy.AsyncServer.__init__, wspy.connect):
        names |= set(inspect.signature(function).parameters)
    return names


@pytest.mark.parametrize('page', ['howto/limits.md', 'howto/keepalive.md'])
def test_option_tables_name_options_with_their_defaults_in_code(page: str) -> None:
    """Each option of the table is one, and each default written as a value is the code's
    (a number, a size, `none`: no limit or none given)."""
    rows = documented_defaults(page)
    code, options = defaults_in_code(), known_options()
    compared = 0
    for name, written in rows:
        assert name in options, f'{page}: {name} is no option'
        value = default_value(written)
        if value is NO_VALUE or name not in code:
            continue
        expected = code[name]
        if value is None:
            assert expected in (None, ()), f'{page}: {name} defaults to {expected!r}, not {written}'
        else:
            assert expected == value, f'{page}: {name} defaults to {expected!r}, not {written}'
        compared += 1
    assert compared >= 5 and compared >= len(rows) // 2, (compared, rows)


def test_nginx_guide_configures_what_test_nginx_runs() -> None:
    """The guide's `location` is the one the suite puts a real nginx in front of wspy with."""
    guide = page_text('howto/nginx.md')
    [config] = re.findall(r'^```nginx\n(.*?)^```', guide, re.M | re.S)
    directives = [line.split('#')[0].strip() for line in config.splitlines()]
    tested = [line.strip() for line in LOCATION.format(upstream='wspy').strip().splitlines()]
    assert len(tested) >= 8
    for line in tested:
        assert line in directives, line
