"""Typed configuration: `wspy.options` defines the options as the socket, the connection
and the servers take them; a misspelled option is a `TypeError` at once; and a typed
program (test/typing_sample.py) passes `mypy --strict`, its deliberate mistakes failing."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import wspy
from wspy.options import (AsyncClientOptions, ClientOptions, ConnectionOptions, ServerOptions,
                          SocketOptions)

NOWHERE = 'ws://127.0.0.1:9/'  # never reached: the options are refused first


def keyword_only(function: Callable[..., object]) -> dict[str, str]:
    """A function's keyword-only parameters, with their annotations as written."""
    return {name: parameter.annotation
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY}


def typed_keys(options: Any) -> dict[str, str]:
    """A TypedDict's keys (its bases' too), with their annotations as written."""
    return {name: getattr(value, '__forward_arg__', value)
            for name, value in options.__annotations__.items()}


def test_socket_options_are_the_keyword_options_of_websocket() -> None:
    assert typed_keys(SocketOptions) == keyword_only(wspy.websocket.__init__)
    with wspy.websocket() as sock:  # and what an accepted socket inherits
        assert set(sock.options()) == SocketOptions.__optional_keys__


def test_connection_options_are_the_keyword_options_of_connection() -> None:
    assert typed_keys(ConnectionOptions) == keyword_only(wspy.Connection.__init__)


def test_server_options_are_the_keyword_options_of_servers() -> None:
    own = keyword_only(wspy.BaseServer.__init__)
    assert typed_keys(ServerOptions) == {**typed_keys(SocketOptions), **own}
    assert typed_keys(ConnectionOptions).items() <= own.items()


def test_client_options_are_socket_options_the_clients_do_not_set() -> None:
    socket_options = typed_keys(SocketOptions)
    client = typed_keys(ClientOptions)
    assert client.items() <= socket_options.items()
    assert set(socket_options) - set(client) == {
        'location', 'handshake_timeout', 'auth', 'select_protocol', 'process_request',
        'trusted_origins', 'locations', 'trusted_proxies'}
    assert typed_keys(AsyncClientOptions) == {**client, 'handshake_timeout': 'float | None'}
    # connect()'s own keywords are not options it passes on (that would be given twice).
    assert not set(keyword_only(wspy.connect)) & set(client)


def _async_client_connect(**options: Any) -> None:
    client = wspy.AsyncClient()
    try:
        client.connect(NOWHERE, **options)
    finally:
        client.loop.close()


@pytest.mark.parametrize(('call', 'name'), [
    (lambda: wspy.Server(('127.0.0.1', 0), max_mesage_size=1), 'max_mesage_size'),
    (lambda: wspy.AsyncServer(('127.0.0.1', 0), handshake_timout=1), 'handshake_timout'),
    (lambda: wspy.connect(NOWHERE, max_frame_sise=1), 'max_frame_sise'),
    (lambda: wspy.connect(NOWHERE, trusted_origins=['x']), 'trusted_origins'),
    (lambda: wspy.AsyncClient(handshake_timout=1), 'handshake_timout'),
    (lambda: wspy.AsyncClient(location='/x'), 'location'),
    (lambda: _async_client_connect(orgin='https://example.com'), 'orgin'),
], ids=['Server', 'AsyncServer', 'connect', 'connect-server-option', 'AsyncClient',
        'AsyncClient-location', 'AsyncClient.connect'])
def test_a_misspelled_option_fails_at_once(call: Callable[[], object], name: str) -> None:
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        call()
