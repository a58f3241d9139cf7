"""The client's address behind reverse proxies: `X-Forwarded-For` from trusted peers only."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from wspy.protocol.handshake import Headers

#: What stands for a peer on a Unix domain socket in `trusted_proxies`.
UNIX = 'unix'

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose `X-Forwarded-For` is believed: addresses, networks, and 'unix'.

    A server's `trusted_proxies` option: the client's address
    (`request.client_address`) is then read from the header, from the
    right, up to the first address that is not a trusted proxy; the
    entries a client wrote itself are never believed.

    Args:
        entries: IP addresses and networks ('127.0.0.1', '10.0.0.0/8',
            '::1'), and 'unix' for peers on a Unix socket:
            `TrustedProxies(['127.0.0.1', '10.0.0.0/8', 'unix'])`.

    Raises:
        ValueError: an entry that is none of these (the message names it).
    """

    __slots__ = ('networks', 'unix')

    def __init__(self, entries: Iterable[str]) -> None:
        if isinstance(entries, str):
            entries = [entries]
        self.networks: list[_Network] = []
        self.unix = False
        for entry in entries:
            if entry == UNIX:
                self.unix = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f'trusted_proxies: {entry!r} is not an IP address, a network '
                                 f'or {UNIX!r}') from None

    def trusts(self, host: str) -> bool:
        """Whether `host` (an IP address as text, or '' for a Unix socket peer) is trusted."""
        if not host:
            return self.unix
        try:
            address = ipaddress.ip_address(host.split('%', 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __repr__(self) -> str:
        entries = [str(network) for network in self.networks] + ([UNIX] if self.unix else [])
        return f'TrustedProxies({entries!r})'


def peer_host(peer: Any) -> str:
    """The host part of a socket's peer address: an IP address as text, '' for a Unix socket."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ''


def client_host(peer: Any, headers: Headers, trusted: TrustedProxies | None) -> str:
    """The client's address: the peer's, or from `X-Forwarded-For` when the peer is trusted.

    The header is read from the right (each proxy appends the address it
    saw): the first address that is not itself a trusted proxy is the
    client. Entries a client wrote itself stand to the left of that and
    are never believed. An entry that is not an IP address stops the walk
    there, at the last trusted hop.
    """
    host = peer_host(peer)
    if trusted is None or not trusted.trusts(host):
        return host
    hops = [hop.strip() for value in headers.get_all('X-Forwarded-For')
            for hop in value.split(',')]
    for hop in reversed(hops):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        host = hop
        if not trusted.trusts(hop):
            break
    return host
