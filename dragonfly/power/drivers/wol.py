"""Wake-on-LAN: the magic packet (six 0xFF, the MAC sixteen times, an optional SecureOn
password of 4 or 6 bytes) over UDP to port 9 of the boot network's directed broadcast.

A directed broadcast (e.g. 10.0.0.255 for 10.0.0.0/24), computed from the boot interface's
address and netmask, is routed out of that interface; 255.255.255.255 would leave through one
interface only, whichever the kernel picks. It can only power on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from dragonfly.edge.dhcp.netif import default_route_interface, interface_ipv4
from dragonfly.power.drivers.base import ON, PowerDriver, PowerError
from dragonfly.power.magic import WOL_PORT, magic_packet, secureon_bytes

__all__ = ["WOL_PORT", "WolDriver", "directed_broadcast", "magic_packet", "secureon_bytes"]


def directed_broadcast(interface: str | None) -> str:
    """The directed broadcast address of ``interface`` (default: the default route's)."""
    name = interface or default_route_interface()
    found = interface_ipv4(name) if name else None
    if found is None:
        raise PowerError(f"Wake-on-LAN: the boot interface {name or '(none)'} has no IPv4 "
                         "address to compute the broadcast from: set the record's broadcast",
                         "config")
    address, netmask = found
    return str(ipaddress.IPv4Network(f"{address}/{netmask}", strict=False).broadcast_address)


class WolDriver(PowerDriver):
    name = "wol"
    supports = frozenset({ON})

    def __init__(self, mac: str, *, broadcast: str = "", interface: str | None = None,
                 port: int = 0, password: str = "", repeat: int = 3) -> None:
        super().__init__(mac)
        self.packet = magic_packet(mac, secureon_bytes(password))
        self.broadcast = broadcast
        self.interface = interface
        self.port = port or WOL_PORT
        self.repeat = repeat

    async def power_on(self) -> None:
        target = self.broadcast or directed_broadcast(self.interface)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            for n in range(self.repeat):  # UDP may drop one; NICs ignore the repeats
                try:
                    sock.sendto(self.packet, (target, self.port))
                except OSError as exc:
                    raise PowerError(f"Wake-on-LAN: cannot send to {target}:{self.port} "
                                     f"({exc.strerror or exc})", "unreachable") from None
                if n + 1 < self.repeat:
                    await asyncio.sleep(0.05)
