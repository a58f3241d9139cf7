"""The README, wspy's front page: its examples run, and what it claims holds.

Convention: a ```python block right after a line `<!-- test: run -->` (an HTML
comment, invisible once rendered) is self-contained: it runs as written, in a
fresh interpreter, and must exit with status 0. Every other block must compile
and pass no `...` placeholder as an argument (it would be a TypeError when
pasted). The examples of each layer that serve or connect to a fixed port are
run below against a free port. The rest of the documentation, docs/, is
checked by test_docs.py with the same convention.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line), up to the next heading of its level."""
    level = heading.split(' ', 1)[0]
    return text.split(f'\n{heading}\n', 1)[1].split(f'\n{level} ', 1)[0]


BLOCKS = python_blocks(README)


# The text of each block a dedicated test below runs (see test_every_block_runs).
CLAIMED: set[str] = set()


def block_with(text: str) -> Block:
    """The one block containing `text`, which the calling test runs."""
    [block] = [block for block in BLOCKS if text in block.code]
    return block


def claim(text: str) -> str:
    """Record that a dedicated test runs the block containing `text`."""
    CLAIMED.add(text)
    return text


RAW_SOCKET = claim('sock = wspy.websocket()')
CONNECTION = claim('class Echo(wspy.Connection)')
ECHO_SERVER = claim('class EchoServer(wspy.Server)')
ASYNC_SERVER = claim('class Chat(wspy.AsyncServer)')
CLIENT = claim("wspy.connect('ws://localhost:8000/chat?room=1'")


@pytest.mark.parametrize('block', BLOCKS, ids=[f'line{b.line}' for b in BLOCKS])
def test_every_block_runs(block: Block) -> None:
    """Each block is marked to run, or run by exactly one dedicated test: none only
    compiled."""
    claims = [text for text in CLAIMED if text in block.code]
    assert block.run != bool(claims) and len(claims) <= 1, (
        f'README.md:{block.line}: mark it {RUN_MARK} or run it in a test (claim())')


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


def test_the_front_page_has_one_example_per_layer() -> None:
    layers = section(README, '## One example per layer')
    codes = [block.code for block in python_blocks(layers)]
    for layer in ('wspy.websocket()', 'wspy.Frame(', '(wspy.Connection)', '(wspy.Server)',
                  '(wspy.AsyncServer)', 'wspy.connect('):
        assert sum(layer in code for code in codes) >= 1, layer
    assert any(block.run for block in BLOCKS)


@pytest.mark.parametrize('block', BLOCKS, ids=[f'line{b.line}' for b in BLOCKS])
def test_block_compiles_without_placeholders(block: Block) -> None:
    check_compiles_without_placeholders(block.code, f'README.md:{block.line}')


@pytest.mark.parametrize('block', [b for b in BLOCKS if b.run],
                         ids=[f'line{b.line}' for b in BLOCKS if b.run])
def test_marked_block_runs(block: Block, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-c', block.code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f'README.md:{block.line}:\n{result.stderr}'


@contextmanager
def watchdog(conn: wspy.Connection, seconds: float = 10) -> Iterator[None]:
    """Abort `conn` if the block takes longer: a reply that never comes fails the test."""
    timer = threading.Timer(seconds, conn.abort)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def connect_once_listening(url: str, deadline: float) -> wspy.Connection:
    """`wspy.connect(url)`, again while nothing listens yet, until `deadline`."""
    while True:
        try:
            return wspy.connect(url, timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_raw_socket_block_upgrades_and_exchanges_frames(tmp_path: Path) -> None:
    """The raw socket example, run as written but on a free port, with a client of wspy's."""
    block = block_with(RAW_SOCKET)
    port = free_port()
    code = block.code.replace("sock.bind(('', 8000))", f"sock.bind(('127.0.0.1', {port}))")
    assert code != block.code
    server = subprocess.Popen([sys.executable, '-c', code], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn = connect_once_listening(f'ws://127.0.0.1:{port}/room?x=1',
                                      time.monotonic() + 30)
        with watchdog(conn):
            assert conn.recv() == wspy.TextMessage('Hello, Client!')
            conn.send('hi')
        stdout, stderr = server.communicate(timeout=30)
        conn.abort()
    finally:
        server.kill()
        server.wait(10)
    assert server.returncode == 0, stderr
    frame_line, request_line = stdout.splitlines()
    assert frame_line == f"{wspy.OPCODE_TEXT} b'hi' True"
    assert request_line.split()[0] == '/room'


def check_echoes_text_and_binary(conn: wspy.Connection) -> None:
    """A text message comes back as text, a binary one as binary."""
    conn.send('text')
    assert conn.recv() == wspy.TextMessage('text')
    conn.send(b'\x00binary\xff')
    assert conn.recv() == wspy.BinaryMessage(b'\x00binary\xff')


def test_connection_block_echoes_messages() -> None:
    """The `Connection` example, on the listening `websocket` that the raw socket one made."""
    block = block_with(CONNECTION)
    with wspy.websocket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(5)
        namespace: dict[str, object] = {'wspy': wspy, 'sock': sock}
        serving = threading.Thread(target=exec, args=(block.code, namespace), daemon=True)
        serving.start()
        conn = wspy.connect(f'ws://127.0.0.1:{sock.getsockname()[1]}/', timeout=5)
        with watchdog(conn):
            check_echoes_text_and_binary(conn)
            conn.close()
        serving.join(10)
        assert not serving.is_alive(), 'receive_forever() did not return once closed'


def test_echo_server_block_echoes_text_and_binary() -> None:
    """The `Server` example, started on a free port instead of run() on 8000."""
    block = block_with(ECHO_SERVER)
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
        with watchdog(conn):
            check_echoes_text_and_binary(conn)
        conn.close()
    finally:
        server.shutdown()


def test_async_server_block_broadcasts_then_shuts_down() -> None:
    """The `AsyncServer` example on a free port: its class broadcasts what a client says,
    and its last lines (a broadcast from another thread, then shutdown) do what they say."""
    block = block_with(ASYNC_SERVER)
    lines = block.code.splitlines()
    made = lines.index("server = Chat(('', 8000))")
    assert lines[made + 1].startswith('server.start()')
    namespace: dict[str, object] = {'wspy': wspy}
    exec('\n'.join(lines[:made]), namespace)
    chat = namespace['Chat']
    assert isinstance(chat, type) and issubclass(chat, wspy.AsyncServer)
    server = chat(('127.0.0.1', 0), handshake_timeout=5)
    server.start()
    try:
        url = f'ws://127.0.0.1:{server.address[1]}/'
        bob = wspy.connect(url, timeout=5)
        alice = wspy.connect(url, timeout=5)
        with watchdog(alice), watchdog(bob):
            alice.send('hi')
            assert alice.recv() == bob.recv() == wspy.TextMessage('hi')
            rest = threading.Thread(target=exec, args=('\n'.join(lines[made + 2:]),
                                                       {'server': server}))
            rest.start()
            for conn in (alice, bob):
                assert conn.recv() == wspy.TextMessage('from another thread')
                with pytest.raises(wspy.ConnectionClosed) as closed:
                    conn.recv()
                assert closed.value.code == 1001
            rest.join(10)
            assert not rest.is_alive()
    finally:
        server.shutdown()


def test_client_block_sends_what_it_says() -> None:
    """The client example against a server that speaks chat.v1 and echoes."""
    requests: list[wspy.Request] = []

    class Echo(wspy.Server):
        def onopen(self, client: wspy.ServerConnection) -> None:
            assert client.request is not None
            requests.append(client.request)
            assert client.protocol == 'chat.v1'

        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)

    server = Echo(('127.0.0.1', 0), protocols=['chat.v1'], handshake_timeout=5)
    server.start()
    try:
        block = block_with(CLIENT)
        code = block.code.replace('localhost:8000', f'127.0.0.1:{server.address[1]}')
        result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                                text=True, timeout=60)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['hello']
    [request] = requests
    assert request.target == '/chat?room=1'
    assert request.headers.get('Origin') == 'http://localhost'
    assert request.headers.get('Cookie') == 'a=b'


SETUP = section(README, '## Set-up: two commands')


def test_setup_commands_are_make_targets_that_ci_runs() -> None:
    """The two set-up commands: `make run` serves the demo on the port the README names,
    and `make test`, the whole suite, is what .ci/run runs."""
    commands = re.findall(r'^(make \w+)\s+#', SETUP, re.M)
    assert commands == ['make run', 'make test']
    makefile = (ROOT / 'Makefile').read_text(encoding='utf-8')
    assert re.search(r'^run: .*\n\t\$\(BIN\)/python -m wspy serve --port \$\(PORT\)$',
                     makefile, re.M)
    assert re.search(r'^PORT \?= 8000$', makefile, re.M) and 'ws://localhost:8000/' in SETUP
    assert re.search(r'^test: ', makefile, re.M)
    ci = ROOT / '.ci/run'
    if ci.exists():     # a checkout's: the sdist ships no CI script
        assert re.search(r'^make test\b', ci.read_text(encoding='utf-8'), re.M)


@pytest.mark.parametrize('command', ['serve', 'connect'])
def test_setup_names_options_the_commands_have(command: str) -> None:
    listed = SETUP.split('python -m wspy serve --help', 1)[1].split('make autobahn', 1)[0]
    serve_part, connect_part = listed.split('python -m wspy connect --help', 1)
    part = serve_part if command == 'serve' else connect_part
    options = re.findall(r'`(--?[a-z][a-z-]*)', part)
    assert len(options) >= 8
    result = subprocess.run([sys.executable, '-m', 'wspy', command, '--help'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    helped = set(re.findall(r'(?<![\w-])(--?[a-z][a-z-]*)', result.stdout))
    assert set(options) <= helped, sorted(set(options) - helped)


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub (and MyST's heading anchors) give a page's headings."""
    headings = re.findall(r'^#+ (.+)$', page.read_text(encoding='utf-8'), re.M)
    return {re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-') for heading in headings}


def test_links_lead_to_pages_and_headings_that_exist() -> None:
    links = re.findall(r'\]\(([^)\s]+)\)', README)
    local = [link for link in links if '://' not in link]
    assert len(local) > 10 and any(link.startswith('docs/') for link in local)
    for link in local:
        path, _, anchor = link.partition('#')
        assert (ROOT / path).is_file(), link
        if anchor:
            assert anchor in heading_anchors(ROOT / path), link


WHERE = section(README, '## Where it stands')


def test_headline_figures_are_those_of_the_benchmarks_page() -> None:
    benchmarks = (ROOT / 'docs/benchmarks.md').read_text(encoding='utf-8')
    figures = re.findall(r'\b\d+\.\d+(?:x| KiB)', WHERE)
    assert len(figures) >= 4
    for figure in figures:
        assert figure in benchmarks, figure


def test_conformance_claim_is_the_autobahn_table() -> None:
    """'No case NON-STRICT and none FAILED', for every agent the table lists."""
    assert 'no case NON-STRICT and none FAILED' in WHERE
    development = (ROOT / 'docs/development.md').read_text(encoding='utf-8')
    table = section(development, '## Conformance')
    header = '| agent | cases | OK | NON-STRICT | INFORMATIONAL | FAILED |'
    rows = [line.strip('|').split('|') for line in table.split(header, 1)[1].splitlines()[2:]
            if line.startswith('|')]
    assert len(rows) >= 10
    agents = {row[0].strip() for row in rows}
    assert {'`Server`', '`AsyncServer`', 'client', '`AsyncClient`'} <= agents
    assert any('wss://' in agent for agent in agents)
    for row in rows:
        non_strict, failed = row[3].strip(), row[5].strip()
        assert (non_strict, failed) == ('0', '0'), row
