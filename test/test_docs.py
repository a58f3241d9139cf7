"""The documentation site's pages (docs/**/*.md): their Python examples, their facts and
their reference.

Every ```python block of the pages runs in CI, and a new one that nothing runs
fails `test_every_block_runs`. The convention of test_readme.py holds here too:
every block compiles and passes no `...` placeholder as an argument, and a block
right after a line `<!-- test: run -->` runs as written in a fresh interpreter.
Every other block is claimed, with `@runs(page, text)`, by the test below that
runs it: a server block serves on a free port instead of the one it names
(in a process of its own when it serves forever) and real clients check what
the page says of it; a client block connects to a server the test starts; a
fragment (a class, a few lines that use a name the page defined before) runs
in a namespace that gives it that name (`EchoServer`, the page's server,
started as soon as it is made). Only addresses, ports, paths and file names
are replaced in a block, never what it calls. The commands of the Examples
page run too, and the tables of options and their defaults are checked
against the code.
"""

from __future__ import annotations

import http.client
import inspect
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask, request

import wspy
import wspy.wsgi
from wspy.options import (AsyncClientOptions, ClientOptions, ConnectionOptions, ServerOptions,
                          SocketOptions)

from certs import Certs, make_certs
from conftest import free_port
from test_fanout import REDIS_SERVER, Redis
from test_nginx import LOCATION
from test_proxy import ConnectProxy
from test_readme import Block, check_compiles_without_placeholders, python_blocks, watchdog
from test_wsgi import Gunicorn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / 'docs'
PAGES = sorted(DOCS.rglob('*.md'))
BLOCKS = [(page.relative_to(ROOT).as_posix(), block)
          for page in PAGES for block in python_blocks(page.read_text(encoding='utf-8'))]
IDS = [f'{name}:{block.line}' for name, block in BLOCKS]
WHERE = {block: f'{name}:{block.line}' for name, block in BLOCKS}

# -- which test runs which block ------------------------------------------------------------

CLAIMS: dict[tuple[str, str], str] = {}     # (page, a text of its block) -> the test running it
Test = TypeVar('Test', bound=Callable[..., None])


def runs(*claims: tuple[str, str]) -> Callable[[Test], Test]:
    """Decorate a test that runs the blocks of these pages (under docs/) containing these texts."""
    def claim(test: Test) -> Test:
        for page_and_text in claims:
            assert page_and_text not in CLAIMS, page_and_text
            CLAIMS[page_and_text] = test.__name__
        return test
    return claim


def claimed_blocks(name: str, block: Block) -> list[str]:
    """The tests that claim the block `block` of page `name`."""
    return [test for (page, text), test in CLAIMS.items()
            if name == f'docs/{page}' and text in block.code]


def marked_block(page: str, text: str) -> Block:
    """The block of `page` containing `text`, marked to run as written (for a test of a block
    that goes on from it)."""
    [block] = [block for name, block in BLOCKS if name == f'docs/{page}' and text in block.code]
    assert block.run
    return block


def page_block(page: str, text: str) -> Block:
    """The block of `page` containing `text`, which a test claims with `@runs`."""
    assert (page, text) in CLAIMS, f'claim ({page!r}, {text!r}) with @runs'
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


def replaced(code: str, *substitutions: tuple[str, str]) -> str:
    """`code` with each (old, new) done; each `old` must be in it (the block still says it)."""
    for old, new in substitutions:
        assert old in code, f'the block no longer says {old!r}'
        code = code.replace(old, new)
    return code


def run_fragment(block: Block, namespace: dict[str, Any], *substitutions: tuple[str, str],
                 part: str | None = None) -> dict[str, Any]:
    """Run `block`, or a `part` of its code, with `substitutions`, in `namespace` (which has
    `wspy`); the namespace."""
    code = block.code if part is None else part
    assert code in block.code
    namespace.setdefault('wspy', wspy)
    namespace.setdefault('__name__', 'docs_example')
    exec(compile(replaced(code, *substitutions), WHERE[block], 'exec'), namespace)
    return namespace


def wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`; fail if `process` ends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except ConnectionRefusedError:
            if process.poll() is not None:
                raise AssertionError(f'exited with {process.returncode} without listening:\n'
                                     f'{process.communicate()[1]}') from None
            assert time.monotonic() < deadline, f'nothing listens on {port}'
            time.sleep(0.02)


def connect_when_listening(url: str, process: subprocess.Popen[str],
                           **options: Any) -> wspy.Connection:
    """`wspy.connect(url, **options)`, again while nothing listens yet (as long as `process`,
    the server, runs, for 30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return wspy.connect(url, timeout=5, **options)
        except ConnectionRefusedError:
            assert process.poll() is None and time.monotonic() < deadline, 'nothing listens'
            time.sleep(0.02)


@contextmanager
def serving_script(code: str, port: int, cwd: Path | None = None,
                   env: dict[str, str] | None = None,
                   probe: bool = True) -> Iterator[subprocess.Popen[str]]:
    """Run `code`, a server script serving forever on `port`, until the end of the block;
    with `probe`, wait for it to listen (without, the test's first client waits: a script
    that accepts one connection only)."""
    process = subprocess.Popen([sys.executable, '-c', code], cwd=cwd, text=True,
                               env={**os.environ, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if probe:
            wait_listening(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def ws_url(server: wspy.BaseServer, path: str = '/') -> str:  # type: ignore[type-arg]
    scheme = 'ws' if server.ssl_context is None else 'wss'
    return f'{scheme}://127.0.0.1:{server.address[1]}{path}'


def extensions_agreed(conn: wspy.Connection) -> str:
    """The extension the server's answer agreed to, for a client connection (no parameters)."""
    [agreed] = [value for name, value in conn.sock.response_headers
                if name == 'Sec-WebSocket-Extensions']
    return agreed.split(';')[0]


def assert_echoes(conn: wspy.Connection, *messages: str | bytes) -> None:
    """Each of `messages` comes back as it was sent."""
    with watchdog(conn):
        for message in messages or ('echo', b'\x00echo\xff'):
            conn.send(message)
            assert conn.recv().payload == message


class Echo(wspy.Server):
    """An echo server, recording the requests and the messages it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: queue.Queue[wspy.Request] = queue.Queue()
        self.messages: queue.Queue[str | bytes] = queue.Queue()
        self.certificates: queue.Queue[bool] = queue.Queue()    # whether each client gave one

    def onopen(self, client: wspy.ServerConnection) -> None:
        assert client.request is not None
        self.requests.put(client.request)
        if self.ssl_context is not None:
            self.certificates.put(bool(client.sock.getpeercert()))

    def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
        self.messages.put(message.payload)
        client.send(message)


@contextmanager
def echo_server(**options: Any) -> Iterator[Echo]:
    server = Echo(('127.0.0.1', options.pop('port', 0)), handshake_timeout=5, **options)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


@contextmanager
def started_when_made(base: type[wspy.BaseServer] = wspy.Server,  # type: ignore[type-arg]
                      ) -> Iterator[tuple[type[wspy.BaseServer], list[Any]]]:  # type: ignore[type-arg]
    """An `EchoServer` that starts as soon as it is made (the fragments that make one go on to
    connect to it), and the list of those made; all shut down at the end."""
    made: list[Any] = []

    class EchoServer(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)
            self.start()

        def onmessage(self, client: Any, message: wspy.Message) -> None:
            client.send(message)

    try:
        yield EchoServer, made
    finally:
        for server in made:
            server.shutdown()


def trusting_system(certs: Certs) -> dict[str, str]:
    """The environment of a process whose system CAs are the test CA (OpenSSL's)."""
    return {'SSL_CERT_FILE': str(certs.ca), 'SSL_CERT_DIR': str(certs.ca.parent)}


def run_script(code: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               stdin: str | None = None) -> list[str]:
    """Run `code` in a fresh interpreter; its output lines (it must exit with 0)."""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, cwd=cwd, input=stdin, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_pages_have_blocks_to_run() -> None:
    assert len(PAGES) > 30 and len(BLOCKS) > 30
    assert sum(block.run for _, block in BLOCKS) >= 3


@pytest.mark.parametrize('name, block', BLOCKS, ids=IDS)
def test_every_block_runs(name: str, block: Block) -> None:
    """Each block is marked to run as written, or claimed by the one test that runs it."""
    claims = claimed_blocks(name, block)
    if block.run:
        assert not claims, f'{name}:{block.line} is marked to run, and claimed by {claims}'
    else:
        assert len(claims) == 1, \
            f'{name}:{block.line}: mark it `<!-- test: run -->` or run it in a test with @runs ' \
            f'(claimed by {claims})'


def test_every_claim_names_one_block() -> None:
    for (page, text), test in CLAIMS.items():
        found = [block for name, block in BLOCKS if name == f'docs/{page}' and text in block.code]
        assert len(found) == 1, f'{test} claims {len(found)} blocks of {page} with {text!r}'


@pytest.mark.parametrize('name, block', BLOCKS, ids=IDS)
def test_block_compiles_without_placeholders(name: str, block: Block) -> None:
    check_compiles_without_placeholders(block.code, f'{name}:{block.line}')


RUN = [(name, block) for name, block in BLOCKS if block.run]


@pytest.mark.parametrize('name, block', RUN, ids=[f'{n}:{b.line}' for n, b in RUN])
def test_marked_block_runs(name: str, block: Block, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-c', block.code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f'{name}:{block.line}:\n{result.stderr}'


@runs(('tutorial/install.md', 'class EchoServer'), ('tutorial/install.md', "conn.send('hello')"))
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


@runs(('tutorial/chat.md', 'class Chat'), ('tutorial/client.md', "conn.send('hello all')"))
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


@runs(('tutorial/wss.md', 'server = Chat('), ('tutorial/wss.md', 'wss://localhost:8443/dave'))
def test_tutorial_chat_over_wss(tmp_path: Path) -> None:
    """The tutorial's wss step: chat.py with its last lines replaced, and the client, in the
    directory where the page's test/certs.py command made certs/."""
    make_certs(tmp_path / 'certs')
    chat = page_block('tutorial/chat.md', 'class Chat').code
    script = chat[:chat.index("if __name__ == '__main__':")]
    port = free_port()
    script += replaced(page_block('tutorial/wss.md', 'server = Chat(').code,
                       ('8443', str(port)))
    with serving_script(script, port, cwd=tmp_path):
        client = page_block('tutorial/wss.md', 'wss://localhost:8443/dave')
        assert run_client(client, port, 'localhost:8443', tmp_path) == ['* dave joined, 1 here']


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


@runs(('reference/errors.md', 'except wspy.InvalidStatus as refused'))
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


# -- the how-to guides and explanations: each block, run -------------------------------------

@runs(('explanation/security.md', "trusted_origins=['https://chat.example.com']"))
def test_trusted_origins_admit_only_those_listed() -> None:
    with started_when_made() as (echo, _):
        namespace = run_fragment(
            page_block('explanation/security.md', "trusted_origins=['https://chat.example.com']"),
            {'EchoServer': echo}, ("('', 8000)", "('127.0.0.1', 0)"))
        url = ws_url(namespace['server'])
        with wspy.connect(url, origin='https://chat.example.com', timeout=5) as conn:
            assert_echoes(conn)
        with pytest.raises(wspy.InvalidStatus) as refused:
            wspy.connect(url, origin='https://evil.example', timeout=5)
        assert refused.value.status == 403


@runs(('howto/asyncclient.md', 'class Bots(wspy.AsyncClient)'))
def test_async_client_bots_say_hello_then_close_with_1001() -> None:
    """The block's thousand bots against an `AsyncServer`; its `...` waits for their echoes."""
    block = page_block('howto/asyncclient.md', 'class Bots(wspy.AsyncClient)')
    head, tail = block.code.split('\n...\n')
    printed: queue.Queue[str] = queue.Queue()
    closes: queue.Queue[int] = queue.Queue()

    class Server(wspy.AsyncServer):
        def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
            client.send(message)

        def onclose(self, client: wspy.AsyncConnection, code: int, reason: str) -> None:
            closes.put(code)

    server = Server(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        namespace: dict[str, Any] = {'print': lambda *args: printed.put(' '.join(map(str, args)))}
        run_fragment(block, namespace,
                     ('ws://localhost:8000/', ws_url(server)), part=head)
        bots = namespace['bots']
        try:
            assert [printed.get(timeout=20) for _ in range(1000)] == ['hello'] * 1000
            refused = f'ws://127.0.0.1:{free_port()}/'
            bots.connect(refused)
            assert printed.get(timeout=10).startswith(f'{refused} ')   # onconnecterror
        finally:
            run_fragment(block, namespace, part=tail)
        assert [closes.get(timeout=20) for _ in range(1000)] == [1001] * 1000
    finally:
        server.shutdown()


@runs(('howto/auth.md', 'wspy.DigestAuth(users'))
@pytest.mark.parametrize('auth', ["wspy.DigestAuth(users, realm='chat')", 'wspy.BasicAuth(users)',
                                  'wspy.BasicAuth(check_password)'])
def test_auth_lets_alice_in_over_wss(auth: str, tmp_path: Path) -> None:
    """The server part with each `auth` the block names; its client lines in a process whose
    system CAs trust the server's certificate (the block's `host` being this machine)."""
    certs = make_certs(tmp_path)
    block = page_block('howto/auth.md', 'wspy.DigestAuth(users')
    server_part, client_part = block.code.split('\nconn = ', 1)
    printed: queue.Queue[str] = queue.Queue()
    namespace = run_fragment(
        block, {'print': lambda *args: printed.put(' '.join(map(str, args)))},
        ("wspy.DigestAuth(users, realm='chat')", auth), ("('', 8443)", "('127.0.0.1', 0)"),
        ("'cert.pem'", repr(str(certs.server_cert))), ("'key.pem'", repr(str(certs.server_key))),
        part=server_part)
    server = namespace['server']
    server.start()
    try:
        host = f'localhost:{server.address[1]}'
        client = replaced('import wspy\nconn = ' + client_part,
                          ('//host/chat', f'//{host}/chat'), ('@host/chat', f'@{host}/chat'))
        run_script(client, env=trusting_system(certs))
        assert [printed.get(timeout=10) for _ in range(2)] == ['alice is in'] * 2
        with pytest.raises(wspy.InvalidStatus) as refused:
            wspy.connect(f'wss://{host}/chat', auth=('alice', 'guess'), timeout=5,
                         ssl_args={'cafile': str(certs.ca)})
        assert refused.value.status == 401
    finally:
        server.shutdown()


@runs(('howto/broadcast.md', 'class Rooms(wspy.AsyncServer)'))
def test_rooms_broadcast_to_their_path_only() -> None:
    namespace = run_fragment(page_block('howto/broadcast.md', 'class Rooms(wspy.AsyncServer)'),
                             {})
    server = namespace['Rooms'](('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        first, second = (wspy.connect(ws_url(server, '/a'), timeout=5) for _ in range(2))
        other = wspy.connect(ws_url(server, '/b'), timeout=5)
        with watchdog(first), watchdog(second), watchdog(other):
            first.send('in room a')
            assert first.recv().payload == second.recv().payload == 'in room a'
            other.send('in room b')     # queued after room a's message, had that reached it
            assert other.recv().payload == 'in room b'
        for conn in (first, second, other):
            conn.close()
    finally:
        server.shutdown()


@runs(('howto/broadcast.md', 'for other in list(self.clients)'))
def test_threaded_chat_sends_to_every_client() -> None:
    namespace = run_fragment(page_block('howto/broadcast.md', 'for other in list(self.clients)'),
                             {})
    server = namespace['Chat'](('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        alice, bob = (wspy.connect(ws_url(server), timeout=5) for _ in range(2))
        with watchdog(alice), watchdog(bob):
            bob.send('hello')
            assert alice.recv().payload == bob.recv().payload == 'hello'
        alice.close()
        bob.close()
    finally:
        server.shutdown()


@runs(('howto/client.md', "wspy.connect('ws://localhost:8000/chat?room=1'"))
def test_client_guide_block_sends_what_it_says() -> None:
    with echo_server(protocols=['chat.v1']) as server:
        block = page_block('howto/client.md', "wspy.connect('ws://localhost:8000/chat?room=1'")
        assert run_client(block, server.address[1], 'localhost:8000') == ['hello']
        request = server.requests.get(timeout=5)
    assert request.target == '/chat?room=1'
    assert request.headers.get('Origin') == 'http://localhost'
    assert request.headers.get('Cookie') == 'a=b'
    assert request.headers.get('Sec-WebSocket-Protocol') == 'chat.v1'


@runs(('howto/compression.md', 'extensions=[wspy.DeflateMessage(), wspy.DeflateFrame()]'))
def test_compression_is_negotiated_with_either_extension() -> None:
    port = free_port()
    with started_when_made() as (echo, _):
        namespace = run_fragment(
            page_block('howto/compression.md', 'extensions=[wspy.DeflateMessage(), '
                                               'wspy.DeflateFrame()]'),
            {'EchoServer': echo}, ("('', 8000)", f"('127.0.0.1', {port})"),
            ('localhost:8000', f'127.0.0.1:{port}'))
        conn = namespace['conn']
        other = wspy.connect(f'ws://127.0.0.1:{port}/', extensions=[wspy.DeflateFrame()],
                             timeout=5)
        for connection, extension in ((conn, 'permessage-deflate'), (other, 'deflate-frame')):
            assert extensions_agreed(connection) == extension
            assert_echoes(connection, 'compressible ' * 100)
            connection.close()


@runs(('howto/keepalive.md', 'print(conn.latency)'))
def test_keepalive_client_block_prints_no_latency_before_a_ping() -> None:
    with echo_server() as server:
        block = page_block('howto/keepalive.md', 'print(conn.latency)')
        assert run_client(block, server.address[1]) == ['None']


@runs(('howto/keepalive.md', 'class Session(wspy.AsyncServer)'))
def test_session_is_closed_when_its_timer_fires() -> None:
    """The block's timer, an hour, made a tenth of a second."""
    namespace = run_fragment(page_block('howto/keepalive.md', 'class Session(wspy.AsyncServer)'),
                             {}, ('call_later(3600,', 'call_later(0.1,'))
    server = namespace['Session'](('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        conn = wspy.connect(ws_url(server), timeout=5)
        with watchdog(conn), pytest.raises(wspy.ConnectionClosed) as closed:
            conn.recv()
        assert (closed.value.code, closed.value.reason) == (1000, 'session over')
    finally:
        server.shutdown()


@runs(('howto/limits.md', 'limits: ConnectionOptions'))
def test_limits_dictionary_applies_to_server_and_client() -> None:
    port = free_port()
    with started_when_made() as (echo, _):
        namespace = run_fragment(page_block('howto/limits.md', 'limits: ConnectionOptions'),
                                 {'EchoServer': echo}, ("('', 8000)", f"('127.0.0.1', {port})"),
                                 ('localhost:8000', f'127.0.0.1:{port}'))
        conn = namespace['conn']
        assert_echoes(conn, b'x' * (64 << 10))
        assert conn.max_message_size == 64 << 10
        unlimited = wspy.connect(f'ws://127.0.0.1:{port}/', max_message_size=None, timeout=5)
        with watchdog(unlimited), pytest.raises(wspy.ConnectionClosed) as closed:
            unlimited.send(b'x' * ((64 << 10) + 1))
            unlimited.recv()
        assert closed.value.code == 1009      # the server's limit


@runs(('howto/nginx.md', "trusted_proxies=['unix']"))
def test_unix_socket_server_believes_its_proxy(tmp_path: Path) -> None:
    class ChatServer(wspy.Server):
        """Answers each message with the client's address as the server sees it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.start()

        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(str(client.client_address))

    path = str(tmp_path / 'wspy.sock')
    namespace = run_fragment(page_block('howto/nginx.md', "trusted_proxies=['unix']"),
                             {'ChatServer': ChatServer}, ('/run/wspy.sock', path))
    try:
        conn = wspy.connect('ws://localhost/chat', unix_socket=path, timeout=5,
                            headers={'X-Forwarded-For': '198.51.100.7'})
        with watchdog(conn):
            conn.send('who am I?')
            assert conn.recv().payload == '198.51.100.7'
        conn.close()
    finally:
        namespace['server'].shutdown()


@runs(('howto/proxy.md', "proxy='http://user:pass@proxy.corp:3128'"))
def test_proxy_block_tunnels_with_credentials_and_from_the_environment(tmp_path: Path) -> None:
    """Both lines through a CONNECT proxy wanting the block's credentials; `example.com` is
    this machine, with a certificate that the client process's system CAs trust."""
    certs = make_certs(tmp_path, names=('example.com',))
    tunnel = ConnectProxy(('user', 'pass'), hosts={'example.com': '127.0.0.1'})
    try:
        with echo_server(ssl_args={'certfile': str(certs.server_cert),
                                   'keyfile': str(certs.server_key)}) as server:
            proxy = f'http://user:pass@127.0.0.1:{tunnel.port}'
            target = f'example.com:{server.address[1]}'
            code = replaced(page_block('howto/proxy.md',
                                       "proxy='http://user:pass@proxy.corp:3128'").code,
                            ('http://user:pass@proxy.corp:3128', proxy),
                            ('wss://example.com/', f'wss://{target}/'))
            env = {**trusting_system(certs), 'https_proxy': proxy, 'no_proxy': '',
                   'NO_PROXY': ''}
            run_script(code, env=env)
            assert [server.requests.get(timeout=5).headers.get('Host') for _ in range(2)] == \
                [target] * 2
    finally:
        tunnel.close()
    assert tunnel.tunnels == [target] * 2


@runs(('howto/raw-socket.md', 'sock = wspy.websocket()'))
def test_raw_socket_server_block_upgrades_and_exchanges_frames(tmp_path: Path) -> None:
    """Run as written on a free port, with a client of wspy's."""
    port = free_port()
    code = replaced(page_block('howto/raw-socket.md', 'sock = wspy.websocket()').code,
                    ("sock.bind(('', 8000))", f"sock.bind(('127.0.0.1', {port}))"))
    with serving_script(code, port, cwd=tmp_path, probe=False) as server:
        conn = connect_when_listening(f'ws://127.0.0.1:{port}/room?x=1', server,
                                      headers={'User-Agent': 'docs-test'})
        with watchdog(conn):
            assert conn.recv() == wspy.TextMessage('Hello, Client!')
            conn.send('hi')
        stdout, stderr = server.communicate(timeout=30)
        conn.abort()
    assert server.returncode == 0, stderr
    assert stdout.splitlines() == [f"{wspy.OPCODE_TEXT} b'hi' True", '/room docs-test']


@runs(('howto/raw-socket.md', "wspy.websocket(location='/chat'"))
def test_raw_socket_client_block_sends_a_masked_frame() -> None:
    with echo_server(protocols=['chat.v1']) as server:
        block = page_block('howto/raw-socket.md', "wspy.websocket(location='/chat'")
        namespace = run_fragment(block, {},
                                 ("('localhost', 8000)", f"('localhost', {server.address[1]})"))
        try:
            assert server.requests.get(timeout=5).path == '/chat'
            assert server.messages.get(timeout=5) == 'hi'
            assert namespace['sock'].protocol == 'chat.v1'
        finally:
            namespace['sock'].close()


@runs(('howto/redis.md', 'wspy.RedisFanout(self'))
def test_redis_fanout_reaches_the_clients_of_every_worker(tmp_path: Path) -> None:
    """The block with a redis-server of the test's; the workers log at INFO level, to tell
    when all four subscribed."""
    assert REDIS_SERVER is not None, 'redis-server is not installed (Debian package)'
    redis = Redis(free_port(), tmp_path)
    redis.start()
    port = free_port()
    code = replaced(page_block('howto/redis.md', 'wspy.RedisFanout(self').code,
                    ('redis://redis.internal:6379/0', redis.url),
                    ("('', 8000)", f"('127.0.0.1', {port})"))
    setup = 'import logging\nlogging.basicConfig(level=logging.INFO)\n'
    try:
        with serving_script(setup + code, port) as server:
            log = lines_of(server.stderr)
            until(lambda: sum("subscribed to 'chat'" in line for line in log) == 4, log)
            conns = [wspy.connect(f'ws://127.0.0.1:{port}/', timeout=5) for _ in range(8)]
            conns[0].send('to every worker')
            for conn in conns:
                with watchdog(conn):
                    assert conn.recv().payload == 'to every worker'
                conn.close()
            server.send_signal(signal.SIGTERM)
            assert server.wait(15) == 0
    finally:
        redis.stop()


def lines_of(stream: Any) -> list[str]:
    """The lines read from `stream` so far, by a thread that reads it to its end."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return lines


def until(condition: Callable[[], bool], what: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@runs(('howto/subclass-server.md', 'class Echo(wspy.Connection)'))
def test_connection_subclass_echoes_on_an_accepted_socket() -> None:
    """The block, given the listening `websocket` the raw socket guide made (`sock`)."""
    block = page_block('howto/subclass-server.md', 'class Echo(wspy.Connection)')
    with wspy.websocket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(5)
        serving = threading.Thread(target=run_fragment, args=(block, {'sock': sock}),
                                   daemon=True)
        serving.start()
        conn = wspy.connect(f'ws://127.0.0.1:{sock.getsockname()[1]}/', timeout=5)
        assert_echoes(conn)
        conn.close()
        serving.join(10)
        assert not serving.is_alive(), 'receive_forever() did not return once closed'


@runs(('howto/subclass-server.md', "EchoServer(('', 8000)).run()"))
def test_server_subclass_runs_and_echoes() -> None:
    port = free_port()
    code = replaced(page_block('howto/subclass-server.md', "EchoServer(('', 8000)).run()").code,
                    ("('', 8000)", f"('127.0.0.1', {port})"))
    with serving_script(code, port):
        conn = wspy.connect(f'ws://127.0.0.1:{port}/', timeout=5)
        assert_echoes(conn)
        conn.close()


@runs(('howto/subclass-server.md', 'class Guarded(wspy.Server)'))
def test_guarded_answers_health_refuses_without_token() -> None:
    block = page_block('howto/subclass-server.md', 'class Guarded(wspy.Server)')
    namespace = run_fragment(block, {})
    server = namespace['Guarded'](('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        page = http.client.HTTPConnection('127.0.0.1', server.address[1], timeout=5)
        page.request('GET', '/health')
        response = page.getresponse()
        assert (response.status, response.read()) == (200, b'ok\n')
        page.close()
        with pytest.raises(wspy.InvalidStatus) as refused:
            wspy.connect(ws_url(server), timeout=5, headers={'Cookie': 'token=guess'})
        assert refused.value.status == 403
        wspy.connect(ws_url(server), timeout=5, headers={'Cookie': 'a=b; token=s3cret'}).close()
    finally:
        server.shutdown()


@runs(('howto/subclass-server.md', "self.call_later(30, client.close, 1000, 'time is up')"))
def test_async_server_guide_broadcasts_then_shuts_down() -> None:
    """The class on a free port; the block's last lines (a broadcast from another thread,
    then shutdown) on it."""
    block = page_block('howto/subclass-server.md',
                       "self.call_later(30, client.close, 1000, 'time is up')")
    made = "server = Chat(('', 8000))\nserver.start()"
    class_part, rest = block.code.split(made)
    namespace = run_fragment(block, {}, part=class_part)
    server = namespace['Chat'](('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        alice, bob = (wspy.connect(ws_url(server), timeout=5) for _ in range(2))
        with watchdog(alice), watchdog(bob):
            alice.send('hi')
            assert alice.recv().payload == bob.recv().payload == 'hi'
            other_thread = threading.Thread(target=run_fragment, args=(block, {'server': server}),
                                            kwargs={'part': rest})
            other_thread.start()    # shutdown() waits for the clients to answer the close
            for conn in (alice, bob):
                assert conn.recv().payload == 'from another thread'
                with pytest.raises(wspy.ConnectionClosed) as closed:
                    conn.recv()
                assert closed.value.code == 1001
            other_thread.join(10)
            assert not other_thread.is_alive()
    finally:
        server.shutdown()


@runs(('howto/testing.md', 'def server_url():'))
def test_testing_guide_fixture_passes_under_pytest(tmp_path: Path) -> None:
    """Both blocks of the page in one test module, run by pytest."""
    first = marked_block('howto/testing.md', 'def test_shout():')
    fixture = page_block('howto/testing.md', 'def server_url():')
    (tmp_path / 'test_shout.py').write_text(f'{first.code}\n\n{fixture.code}\n')
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             'test_shout.py'], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '2 passed' in result.stdout


@runs(('howto/tls.md', "ssl_context=my_context"))
def test_tls_servers_serve_wss_and_require_client_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    my_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    my_context.load_cert_chain(certs.server_cert, certs.server_key)
    with started_when_made() as (echo, made):
        run_fragment(page_block('howto/tls.md', 'ssl_context=my_context'),
                     {'EchoServer': echo, 'my_context': my_context},
                     ("('', 8443)", "('127.0.0.1', 0)"),
                     ("'clients-ca.pem'", repr(str(certs.ca))),
                     ("'cert.pem'", repr(str(certs.server_cert))),
                     ("'key.pem'", repr(str(certs.server_key))))
        trusting = {'cafile': str(certs.ca)}
        client = {**trusting, 'certfile': str(certs.client_cert),
                  'keyfile': str(certs.client_key)}
        for server, ssl_args in zip(made, (trusting, trusting, client), strict=True):
            url = f'wss://localhost:{server.address[1]}/'
            with wspy.connect(url, ssl_args=ssl_args, timeout=5) as conn:
                assert_echoes(conn)
        with pytest.raises(wspy.SSLError, match='certificate required'):
            wspy.connect(url, ssl_args=trusting, timeout=5)


@runs(('howto/tls.md', "server_hostname='internal.example'"))
def test_tls_clients_check_what_the_block_says(tmp_path: Path) -> None:
    """Each line against a server asking for (not requiring) a client certificate; the
    block's hosts are this machine, with a certificate for them, and the client process's
    system CAs trust it. Run in the directory holding the files the block names."""
    certs = make_certs(tmp_path / 'certs', names=('internal.example',))
    for name, path in (('ca.pem', certs.ca), ('me.pem', certs.client_cert),
                       ('me.key', certs.client_key)):
        shutil.copy(path, tmp_path / name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.verify_mode = ssl.CERT_OPTIONAL
    with echo_server(ssl_context=context) as server:
        port = server.address[1]
        code = replaced(page_block('howto/tls.md', "server_hostname='internal.example'").code,
                        ('wss://example.com/feed', f'wss://localhost:{port}/feed'),
                        ('localhost:8443', f'localhost:{port}'),
                        ('wss://10.0.0.5/', f'wss://127.0.0.1:{port}/'))
        run_script(code, cwd=tmp_path, env=trusting_system(certs))
        requests = [server.requests.get(timeout=5) for _ in range(5)]
        certificates = [server.certificates.get(timeout=5) for _ in range(5)]
    assert [request.path for request in requests] == ['/feed', '/', '/', '/', '/']
    assert certificates == [False, False, True, False, False]


@runs(('howto/workers.md', 'wspy.Workers(ChatServer'))
def test_workers_serve_with_the_options_and_stop_on_sigterm() -> None:
    """The block with a `ChatServer` of the test's (echo): each worker echoes, applies the
    block's `max_message_size`, and SIGTERM closes the clients with 1001."""
    port = free_port()
    setup = ('import wspy\n\nclass ChatServer(wspy.Server):\n'
             '    def onmessage(self, client, message):\n        client.send(message)\n\n')
    code = replaced(page_block('howto/workers.md', 'wspy.Workers(ChatServer').code,
                    ("('', 8000)", f"('127.0.0.1', {port})"))
    with serving_script(setup + code, port) as server:
        conns = [wspy.connect(f'ws://127.0.0.1:{port}/', max_message_size=None, timeout=5)
                 for _ in range(3)]
        assert_echoes(conns[0], b'x' * (1 << 20))
        with watchdog(conns[0]), pytest.raises(wspy.ConnectionClosed) as too_big:
            conns[0].send(b'x' * ((1 << 20) + 1))
            conns[0].recv()
        assert too_big.value.code == 1009
        server.send_signal(signal.SIGTERM)
        for conn in conns[1:]:
            with watchdog(conn), pytest.raises(wspy.ConnectionClosed) as closed:
                conn.recv()
            assert closed.value.code == 1001
        assert server.wait(15) == 0


@runs(('tutorial/client.md', 'for line in iter(input'))
def test_tutorial_interactive_client_sends_each_line() -> None:
    chat = server_class(page_block('tutorial/chat.md', 'class Chat'), 'Chat')
    server = chat(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        alice = wspy.connect(ws_url(server, '/alice'), timeout=5)
        with watchdog(alice, 30):
            assert alice.recv().payload == '* alice joined, 1 here'
            block = page_block('tutorial/client.md', 'for line in iter(input')
            code = replaced(block.code, ('127.0.0.1:8000', f'127.0.0.1:{server.address[1]}'))
            run_script(code, stdin='hello\nhow are you?\n\n')
            assert [alice.recv().payload for _ in range(4)] == [
                '* carol joined, 2 here', 'carol: hello', 'carol: how are you?', '* carol left']
        alice.close()
    finally:
        server.shutdown()


# -- WebSockets in a WSGI application ---------------------------------------------------------

@contextmanager
def wsgi_serving(app: Any) -> Iterator[int]:
    """`app` served by `wspy.wsgi.make_server` on a free port, in a thread."""
    server = wspy.wsgi.make_server('127.0.0.1', 0, app)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def refused_upgrade(port: int, path: str) -> int:
    """The status of an upgrade request of an unsupported WebSocket version."""
    page = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    page.request('GET', path, headers={'Upgrade': 'websocket', 'Connection': 'Upgrade',
                                       'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
                                       'Sec-WebSocket-Version': '8'})
    status = page.getresponse().status
    page.close()
    return status


@runs(('howto/wsgi.md', "@app.route('/echo', websocket=True)"))
def test_flask_view_echoes_and_answers_refusals(caplog: pytest.LogCaptureFixture) -> None:
    namespace = run_fragment(page_block('howto/wsgi.md', "@app.route('/echo', websocket=True)"),
                             {'__name__': 'docs_flask_echo'})
    with wsgi_serving(namespace['app']) as port:
        conn = wspy.connect(f'ws://127.0.0.1:{port}/echo', extensions=[wspy.DeflateMessage()],
                            timeout=5)
        assert extensions_agreed(conn) == 'permessage-deflate'
        assert_echoes(conn, 'compressible ' * 100)
        conn.close()
        assert refused_upgrade(port, '/echo') == 426
    errors = [record for record in caplog.records if record.levelname in ('ERROR', 'CRITICAL')]
    assert not errors, [record.getMessage() for record in errors]


WSGI_SETUP = '''import wspy, wspy.wsgi

def pages(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'a page']

'''


def get_page(port: int, path: str = '/') -> tuple[int, bytes]:
    page = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    page.request('GET', path)
    response = page.getresponse()
    answer = response.status, response.read()
    page.close()
    return answer


@runs(('howto/wsgi.md', 'wspy.wsgi.WebSocketApplication(echo, fallback=pages'))
def test_websocket_application_serves_pages_and_websockets() -> None:
    """The block, with the imports of the page's first block and a `pages` application."""
    port = free_port()
    code = replaced(page_block('howto/wsgi.md',
                               'wspy.wsgi.WebSocketApplication(echo, fallback=pages').code,
                    ("make_server('127.0.0.1', 8000,", f"make_server('127.0.0.1', {port},"))
    with serving_script(WSGI_SETUP + code, port):
        assert get_page(port) == (200, b'a page')
        conn = wspy.connect(f'ws://127.0.0.1:{port}/', protocols=['chat'], timeout=5)
        assert conn.protocol == 'chat'
        assert_echoes(conn, 'x' * (1 << 16))
        with watchdog(conn), pytest.raises(wspy.ConnectionClosed) as too_big:
            conn.send('x' * ((1 << 16) + 1))
            conn.recv()
        assert too_big.value.code == 1009


@runs(('howto/wsgi.md', 'handler_class=WSGIHandler'))
def test_gevent_pywsgi_with_wspy_handler_serves_websockets() -> None:
    """The block, given `app`: the page's `WebSocketApplication`."""
    port = free_port()
    setup = WSGI_SETUP + ('def echo(connection):\n    while True:\n'
                          '        connection.send(connection.recv().payload)\n\n'
                          'app = wspy.wsgi.WebSocketApplication(echo, fallback=pages)\n')
    code = replaced(page_block('howto/wsgi.md', 'handler_class=WSGIHandler').code,
                    ("('', 8000)", f"('127.0.0.1', {port})"))
    with serving_script(setup + code, port):
        assert get_page(port) == (200, b'a page')
        conns = [wspy.connect(f'ws://127.0.0.1:{port}/', timeout=5) for _ in range(3)]
        for conn in conns:
            assert_echoes(conn)
            conn.close()


@runs(('howto/wsgi.md', 'def post_worker_init(worker):'))
def test_gunicorn_conf_closes_websockets_with_1001_on_sigterm(tmp_path: Path) -> None:
    """The block as gunicorn.conf.py of a gunicorn serving an echo application: stopped, it
    closes the WebSocket with 1001 (without it, the worker would wait its graceful timeout,
    then be killed)."""
    (tmp_path / 'gunicorn.conf.py').write_text(
        page_block('howto/wsgi.md', 'def post_worker_init(worker):').code)
    (tmp_path / 'app.py').write_text(
        WSGI_SETUP + 'def echo(connection):\n    while True:\n'
        '        connection.send(connection.recv().payload)\n\n'
        'app = wspy.wsgi.WebSocketApplication(echo, fallback=pages)\n')
    server = Gunicorn('sync', app='app:app', chdir=tmp_path,
                      args=('--config', str(tmp_path / 'gunicorn.conf.py'),
                            '--graceful-timeout', '30'))
    try:
        conn = wspy.connect(f'ws://127.0.0.1:{server.port}/', timeout=5)
        assert_echoes(conn)
        server.process.send_signal(signal.SIGTERM)
        with watchdog(conn), pytest.raises(wspy.ConnectionClosed) as closed:
            conn.recv()
        assert closed.value.code == 1001
        assert server.process.wait(15) == 0
    finally:
        server.stop()


@runs(('howto/wsgi.md', 'class Chat(wspy.wsgi.HandOff)'))
def test_handoff_chat_view_broadcasts() -> None:
    """The block in the Flask application of the page's first block."""
    app = Flask('docs_handoff')
    namespace = run_fragment(page_block('howto/wsgi.md', 'class Chat(wspy.wsgi.HandOff)'),
                             {'app': app, 'request': request})
    chat = namespace['chat']
    try:
        with wsgi_serving(app) as port:
            url = f'ws://127.0.0.1:{port}/chat'
            alice, bob = (wspy.connect(url, extensions=[wspy.DeflateMessage()], timeout=5)
                          for _ in range(2))
            with watchdog(alice), watchdog(bob):
                alice.send('hello')
                assert alice.recv().payload == bob.recv().payload == 'hello'
                assert refused_upgrade(port, '/chat') == 426
            stopping = threading.Thread(target=chat.shutdown)
            stopping.start()        # it waits for the clients to answer the close
            for conn in (alice, bob):
                with watchdog(conn), pytest.raises(wspy.ConnectionClosed) as closed:
                    conn.recv()
                assert closed.value.code == 1001
            stopping.join(10)
            assert not stopping.is_alive()
    finally:
        chat.shutdown()
