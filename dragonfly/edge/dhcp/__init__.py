"""DHCP for the boot edge: a pure codec, the proxyDHCP/full-mode responder, and the service
that binds it to UDP 67 and 4011 on the boot interface.

The names below are loaded on first use: importing one module of the package (``netif``,
which Wake-on-LAN and the install checks use) must not load the whole DHCP server, which
the demo never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dragonfly.lazy import lazy_names

if TYPE_CHECKING:
    from dragonfly.edge.dhcp.codec import DecodeResult, MessageType, Packet, decode, encode
    from dragonfly.edge.dhcp.leases import FullModeSettings, Lease, LeasePool
    from dragonfly.edge.dhcp.responder import DhcpCounters, ReplyTargets, Responder
    from dragonfly.edge.dhcp.server import DhcpConflict, DhcpPorts, DhcpService

_HOMES = {
    "codec": ("DecodeResult", "MessageType", "Packet", "decode", "encode"),
    "leases": ("FullModeSettings", "Lease", "LeasePool"),
    "responder": ("DhcpCounters", "ReplyTargets", "Responder"),
    "server": ("DhcpConflict", "DhcpPorts", "DhcpService"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["DecodeResult", "DhcpConflict", "DhcpCounters", "DhcpPorts", "DhcpService",
           "FullModeSettings", "Lease", "LeasePool", "MessageType", "Packet", "ReplyTargets",
           "Responder", "decode", "encode"]


__getattr__ = lazy_names(__name__, _HOME_OF, globals())
