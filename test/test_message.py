"""Messages: text and binary payloads, frames and fragments."""

from __future__ import annotations

import pytest

import wspy


def test_text_message() -> None:
    message = wspy.TextMessage('héllo')
    assert message.opcode == wspy.OPCODE_TEXT
    assert message.encode() == 'héllo'.encode()
    frame = message.frame()
    assert frame.payload == 'héllo'.encode() and frame.final and not frame.masked
    assert len(message.frame(mask=True).masking_key) == 4


def test_binary_message_copies_buffers_to_bytes() -> None:
    message = wspy.BinaryMessage(bytearray(b'\x00\x01'))
    assert message.payload == b'\x00\x01' and type(message.payload) is bytes
    assert message.frame().opcode == wspy.OPCODE_BINARY


def test_payload_types_are_checked() -> None:
    with pytest.raises(TypeError):
        wspy.TextMessage(b'bytes')  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wspy.BinaryMessage('text')  # type: ignore[arg-type]


def test_fragment() -> None:
    frames = wspy.TextMessage('abcdefg').fragment(3, mask=True)
    assert [f.payload for f in frames] == [b'abc', b'def', b'g']
    assert frames[0].opcode == wspy.OPCODE_TEXT and frames[-1].final


def test_create_message() -> None:
    assert wspy.create_message(wspy.OPCODE_TEXT, b'hi') == wspy.TextMessage('hi')
    assert wspy.create_message(wspy.OPCODE_BINARY, b'hi') == wspy.BinaryMessage(b'hi')
    with pytest.raises(ValueError):
        wspy.create_message(wspy.OPCODE_PING, b'')


def test_equality_and_repr() -> None:
    assert wspy.TextMessage('a') != wspy.BinaryMessage(b'a')
    assert wspy.TextMessage('a').__eq__('a') is NotImplemented
    assert repr(wspy.TextMessage('x' * 100)).endswith("'... len=100>")


def test_a_received_text_keeps_its_bytes_while_its_text_is_unchanged() -> None:
    from wspy.protocol.message import received_message
    wire = 'héllo €'.encode()
    message = received_message(wspy.OPCODE_TEXT, wire.decode(), wire)
    assert message == wspy.TextMessage('héllo €') and message.encode() is wire
    message.payload = 'autre €'
    assert message.encode() == 'autre €'.encode()
    assert received_message(wspy.OPCODE_TEXT, 'ascii').encode() == b'ascii'
    assert received_message(wspy.OPCODE_BINARY, b'\xff') == wspy.BinaryMessage(b'\xff')

    class Bare(wspy.TextMessage):
        def __init__(self, payload: str) -> None:  # does not call TextMessage.__init__
            self.opcode, self.payload = wspy.OPCODE_TEXT, payload

    assert Bare('ça').encode() == 'ça'.encode()
