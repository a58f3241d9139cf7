"""UTF-8 checked in pieces: the C accelerator's checker agrees with the codec's decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wspy.protocol.masking import utf8_check
from wspy.protocol.utf8 import _CChecker, _PythonChecker, new_utf8_checker

needs_c = pytest.mark.skipif(utf8_check is None, reason='the C accelerator is not in use')

# Bytes where UTF-8 is easy to get wrong: overlong forms, surrogates, above U+10FFFF,
# stray continuation bytes, truncated sequences.
EDGES = [b'\xc0\x80', b'\xc1\xbf', b'\xc2\x80', b'\xdf\xbf', b'\xe0\x9f\xbf', b'\xe0\xa0\x80',
         b'\xed\x9f\xbf', b'\xed\xa0\x80', b'\xee\x80\x80', b'\xef\xbf\xbf', b'\xf0\x8f\xbf\xbf',
         b'\xf0\x90\x80\x80', b'\xf4\x8f\xbf\xbf', b'\xf4\x90\x80\x80', b'\xf5\x80\x80\x80',
         b'\x80', b'\xbf', b'\xff', b'\xe2\x82', b'\xf0\x9f\x98']
pieces = st.one_of(st.text().map(lambda text: text.encode()), st.binary(max_size=12),
                   st.sampled_from(EDGES), st.just(b'plain ascii text, more than 8 bytes'))


def verdicts(checker: _CChecker | _PythonChecker, parts: list[bytes]) -> list[bool]:
    """Whether the pieces so far may still be valid, after each piece, until the first no."""
    results = []
    for part in parts:
        results.append(checker.feed(part))
        if not results[-1]:
            break
    return results


@needs_c
@given(st.lists(pieces, max_size=8))
def test_c_checker_agrees_with_the_decoder(parts: list[bytes]) -> None:
    assert verdicts(_CChecker(), parts) == verdicts(_PythonChecker(), parts)


@needs_c
@given(st.lists(pieces, min_size=1, max_size=8))
def test_c_checker_ends_on_a_character_boundary_exactly_when_the_bytes_decode(
        parts: list[bytes]) -> None:
    checker = _CChecker()
    all_valid = all(verdicts(checker, parts)) and checker.state == 0
    try:
        b''.join(parts).decode('utf-8')
    except UnicodeDecodeError:
        assert not all_valid
    else:
        assert all_valid


@needs_c
def test_c_checker_states_across_pieces_and_bad_states() -> None:
    checker = _CChecker()
    for byte in '😀'.encode():  # a 4-byte character fed a byte at a time
        assert checker.feed(bytes([byte]))
    assert checker.state == 0
    assert checker.feed(b'\xed') and not checker.feed(b'\xa0')  # a surrogate: no
    with pytest.raises(ValueError):
        utf8_check(b'', 1 << 10)
    with pytest.raises(TypeError):
        utf8_check(b'')  # type: ignore[call-arg]


def test_new_checker_finds_a_bad_byte_in_a_later_piece() -> None:
    checker = new_utf8_checker()
    assert checker.feed('pré'.encode()[:3]) and checker.feed('é'.encode()[1:] + b'x' * 20)
    assert not checker.feed(b'abc\xc0\x80')
