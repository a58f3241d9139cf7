"""Masking: the C accelerator and the pure-Python fallback agree with the RFC."""

from __future__ import annotations

import os

import pytest

from wspy import masking
from wspy.protocol.masking import python_mask

IMPLEMENTATIONS = [python_mask]
try:
    from wspy._speedups import mask as c_mask
    IMPLEMENTATIONS.append(c_mask)
except ImportError:  # pragma: no cover - a build without a compiler
    pass


def reference(key: bytes, data: bytes, offset: int = 0) -> bytes:
    """RFC 6455 5.3, byte by byte."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS, ids=lambda f: f.__module__)
# Around the widths of the C loops (8, 16 and 32 bytes a step), the fallback's switch at
# 256 bytes, and the C size from which the GIL is released (256 KiB).
@pytest.mark.parametrize('size', [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 95, 255, 256,
                                  257, 1000, 65535, 65536, 65537, 262143, 262144, 262145])
@pytest.mark.parametrize('offset', [0, 1, 2, 3, 6])
def test_mask_matches_the_rfc(implementation, size: int, offset: int) -> None:
    key = os.urandom(4)
    data = os.urandom(size)
    assert implementation(key, data, offset) == reference(key, data, offset)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_mask_accepts_buffers_and_round_trips(implementation) -> None:
    key = b'\x01\x02\x03\x04'
    data = os.urandom(5000)
    masked = implementation(key, memoryview(bytearray(data))[10:])
    assert isinstance(masked, bytes)
    assert implementation(key, masked) == data[10:]


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_mask_rejects_bad_keys(implementation) -> None:
    with pytest.raises(ValueError):
        implementation(b'abc', b'data')
    with pytest.raises(ValueError):
        implementation(b'abcd', b'data', -1)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_mask_rejects_bad_arguments(implementation) -> None:
    with pytest.raises(TypeError):
        implementation(b'abcd')
    with pytest.raises(TypeError):
        implementation(b'abcd', b'data', 0, 1)
    with pytest.raises(TypeError):
        implementation(b'abcd', 'text')
    with pytest.raises(TypeError):
        implementation(b'abcd', b'data', 1.0)


def test_environment_variable_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('WSPY_NO_SPEEDUPS', '1')
    assert masking._select() == (python_mask, None, None, None, None, False)
    monkeypatch.delenv('WSPY_NO_SPEEDUPS')
    function, split_frame, split_message, split_messages, utf8_check, fast = masking._select()
    assert fast == (len(IMPLEMENTATIONS) == 2)
    assert (function is python_mask) != fast
    assert (split_frame is None) != fast and (split_message is None) != fast
    assert (split_messages is None) != fast
    assert (utf8_check is None) != fast
