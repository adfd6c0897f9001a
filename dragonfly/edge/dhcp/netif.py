"""Sockets bound to the boot interface, and the interface's IPv4 address."""

from __future__ import annotations

import fcntl
import socket
import struct
from pathlib import Path

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_RCVBUF = 4 << 20  # absorb DISCOVER bursts (a rack powering on) without drops
_SO_RCVBUFFORCE = 33  # Linux; the socket module does not export it


def default_route_interface(proc: Path = Path("/proc")) -> str | None:
    """The interface of the IPv4 default route, from /proc/net/route."""
    try:
        lines = (proc / "net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) >= 8 and cols[1] == "00000000" and cols[7] == "00000000":
            return cols[0]
    return None


def interface_ipv4(name: str) -> tuple[str, str] | None:
    """(address, netmask) of ``name`` in the current network namespace, or None."""
    try:
        request = struct.pack("256s", name.encode()[:15])
    except UnicodeError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)
        except OSError:
            return None
    return socket.inet_ntoa(addr[20:24]), socket.inet_ntoa(mask[20:24])


def dhcp_socket(host: str, port: int, interface: str | None) -> socket.socket:
    """A non-blocking UDP socket for DHCP.

    SO_REUSEADDR lets it share port 67 with a dnsmasq in the same namespace (both receive
    broadcasts); SO_BINDTODEVICE makes broadcasts arrive only from, and replies leave only
    through, the boot interface. Binding 0.0.0.0 is required to receive broadcasts at all.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:  # as root, beyond net.core.rmem_max (~200 KB: a few hundred DISCOVERs)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            interface.encode() + b"\0")
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
