"""wspy 0.9's spellings kept as deprecated aliases (docs/porting.md): each warns, naming
today's spelling, and does what it did."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import wspy
import wspy.frame
import wspy.protocol.frame
from wspy.protocol.compat import RENAMED_CLOSE_CODES

OLD_CLOSE_CODES = [
    ('CLOSE_NOACCEPT_DTYPE', 'CLOSE_UNSUPPORTED_DATA', 1003),
    ('CLOSE_POLICY', 'CLOSE_POLICY_VIOLATION', 1008),
    ('CLOSE_MESSAGE_TOOBIG', 'CLOSE_MESSAGE_TOO_BIG', 1009),
    ('CLOSE_MISSING_EXTENSIONS', 'CLOSE_MISSING_EXTENSION', 1010),
    ('CLOSE_UNABLE', 'CLOSE_INTERNAL_ERROR', 1011),
]


def test_every_close_code_of_wspy_09_has_an_alias() -> None:
    assert {old: new for old, new, _ in OLD_CLOSE_CODES} == RENAMED_CLOSE_CODES


@pytest.mark.parametrize('module', [wspy, wspy.frame, wspy.protocol.frame],
                         ids=['wspy', 'wspy.frame', 'wspy.protocol.frame'])
@pytest.mark.parametrize(('old', 'new', 'code'), OLD_CLOSE_CODES)
def test_old_close_code_warns_and_keeps_its_value(module: object, old: str, new: str,
                                                  code: int) -> None:
    with pytest.warns(DeprecationWarning, match=f'{old} is deprecated.*use wspy.{new}') as record:
        value = getattr(module, old)
    assert value == code == getattr(wspy, new)
    assert record[0].filename == __file__      # points at the code that used the old name


@pytest.mark.parametrize(('old', 'new', 'code'), OLD_CLOSE_CODES)
def test_importing_an_old_close_code_warns(old: str, new: str, code: int) -> None:
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=f'use wspy.{new}'):
        exec(f'from wspy import {old}', namespace)
    assert namespace[old] == code


def test_other_names_are_untouched() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert wspy.CLOSE_POLICY_VIOLATION == 1008
        with pytest.raises(AttributeError, match="module 'wspy' has no attribute 'CLOSE_NOPE'"):
            wspy.CLOSE_NOPE  # noqa: B018
        with pytest.raises(AttributeError, match='no attribute'):
            wspy.protocol.frame.CLOSE_NOPE  # noqa: B018


def test_wspy_itself_uses_no_deprecated_name(tmp_path: Path) -> None:
    """Importing wspy, every module of it and `*` warns of nothing."""
    code = ('import pkgutil, importlib, wspy, wspy.protocol\n'
            'for info in pkgutil.walk_packages(wspy.__path__, "wspy."):\n'
            '    if info.name != "wspy.__main__":\n'
            '        importlib.import_module(info.name)\n'
            'from wspy import *\n')
    result = subprocess.run([sys.executable, '-W', 'error::DeprecationWarning', '-c', code],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_frame_mask_true_is_a_random_masking_key() -> None:
    with pytest.warns(DeprecationWarning, match=r'masking_key=os\.urandom\(4\)') as record:
        first = wspy.Frame(wspy.OPCODE_TEXT, 'Hello, Server!', mask=True)
        second = wspy.Frame(wspy.OPCODE_TEXT, 'Hello, Server!', mask=True)
    assert record[0].filename == __file__
    assert len(first.masking_key) == 4 and first.masked
    assert first.masking_key != second.masking_key
    wire = first.pack()
    assert wire[1] & 0x80 and wire[6:] != b'Hello, Server!'    # masked on the wire
    assert wspy.read_frame(wire) == first


def test_frame_mask_true_keeps_a_given_key() -> None:
    with pytest.warns(DeprecationWarning):
        frame = wspy.Frame(wspy.OPCODE_BINARY, b'data', b'abcd', mask=True)
    assert frame.masking_key == b'abcd'


def test_control_frame_mask_true() -> None:
    with pytest.warns(DeprecationWarning, match='mask=True'):
        frame = wspy.ControlFrame(wspy.OPCODE_PING, b'are you there', mask=True)
    assert len(frame.masking_key) == 4
    assert wspy.read_frame(frame.pack()) == frame


def test_frame_without_mask_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not wspy.Frame(wspy.OPCODE_TEXT, 'x').masked
        assert not wspy.Frame(wspy.OPCODE_TEXT, 'x', mask=False).masked


def test_socket_closed_with_code_and_reason() -> None:
    with pytest.warns(DeprecationWarning,
                      match=r'SocketClosed\(code, reason\).*ConnectionClosedError') as record:
        error = wspy.SocketClosed(1000, 'bye')
    assert record[0].filename == __file__
    assert (error.code, error.reason) == (1000, 'bye')
    assert isinstance(error, wspy.ConnectionClosed)
    with pytest.raises(wspy.ConnectionClosed), pytest.warns(DeprecationWarning):
        raise wspy.SocketClosed(None, 'no data read from socket')


def test_socket_closed_without_a_code_is_1006() -> None:
    with pytest.warns(DeprecationWarning):
        error = wspy.SocketClosed(None, 'no data read from socket')
    assert (error.code, error.reason) == (1006, 'no data read from socket')


def test_socket_closed_today_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert (wspy.SocketClosed().code, wspy.SocketClosed().reason) == (1006,
                                                                          'connection dropped')
        assert wspy.SocketClosed('gone').reason == 'gone'
        assert wspy.SocketClosed(reason='gone').reason == 'gone'
        assert wspy.WriteTimeout().code == 1006


def test_socket_closed_with_a_bad_code() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match='int or None'):
        wspy.SocketClosed(b'1000', 'bye')  # type: ignore[call-overload]
