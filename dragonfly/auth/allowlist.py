"""Client addresses and the IP allowlist (CIDRs, IPv4 and IPv6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """CIDRs as networks; a bad entry raises ValueError naming it (config validation ran)."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def parse_address(text: str | None) -> Address | None:
    """An address from a peer or header value; None when it is not one (never raises)."""
    if not text:
        return None
    text = text.strip().split("%", 1)[0]  # drop an IPv6 zone id such as fe80::1%eth0
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d
    return address


def contains(networks: Sequence[Network], address: Address | None) -> bool:
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def allowed(networks: Sequence[Network], address: Address | None) -> bool:
    """An empty allowlist admits everyone; otherwise the address must be inside one entry."""
    return not networks or contains(networks, address)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: Sequence[Network]) -> Address | None:
    """The real client: the peer, or, when the peer is a trusted proxy, the right-most address
    in X-Forwarded-For that is not itself a trusted proxy (left-most entries are client-set)."""
    address = parse_address(peer)
    if not trusted or not contains(trusted, address) or not forwarded_for:
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_address(hop)
        if hop_address is None:
            return address  # a garbled header: trust nothing beyond the proxy
        address = hop_address
        if not contains(trusted, hop_address):
            return hop_address
    return address
