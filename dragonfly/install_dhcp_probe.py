"""Is another DHCP server answering on this network? Asked before Dragonfly becomes one.

A DHCPDISCOVER goes out on the interface (broadcast, from port 68, broadcast flag set so that
servers broadcast their answer back: we have no lease) and every DHCPOFFER for our transaction id
is collected until the timeout. Discovering commits nobody to anything: a server only reserves an
address once a REQUEST follows, and none does.

The codec is two pure functions; ``probe_dhcp_servers`` is the thin blocking transport (install
is a command-line program, not the event loop). It needs root (port 68, SO_BINDTODEVICE). The
install takes any ``Callable[[str, float], list[str]]`` as its probe, so the DHCP service's own
probe can replace this one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
DHCPDISCOVER, DHCPOFFER = 1, 2
OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_END, OPT_PAD = 53, 54, 55, 255, 0
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 fixed part: 236 bytes


def build_discover(mac: bytes, xid: int) -> bytes:
    """A minimal DHCPDISCOVER with the broadcast flag, for hardware address ``mac``."""
    chaddr = mac[:16].ljust(16, b"\0")
    zero = b"\0\0\0\0"
    header = _HEADER.pack(BOOTREQUEST, 1, len(mac[:16]), 0, xid, 0, 0x8000, zero, zero, zero,
                          zero, chaddr, b"", b"")
    options = bytes([OPT_MESSAGE_TYPE, 1, DHCPDISCOVER, OPT_PARAMS, 3, 1, 3, 54, OPT_END])
    return (header + MAGIC_COOKIE + options).ljust(300, b"\0")  # BOOTP minimum size


@dataclass(frozen=True)
class Offer:
    """One decoded reply; ``invalid_reason`` is set when it is not an offer for us."""

    server: str = ""
    offered: str = ""
    invalid_reason: str = ""


def parse_offer(data: bytes, xid: int) -> Offer:
    """Decode a reply to our DISCOVER. Never raises: bad input gives an ``invalid_reason``."""
    if len(data) < _HEADER.size + 4:
        return Offer(invalid_reason=f"too short ({len(data)} bytes)")
    fields = _HEADER.unpack_from(data)
    op, got_xid, yiaddr, siaddr = fields[0], fields[4], fields[8], fields[9]
    if op != BOOTREPLY:
        return Offer(invalid_reason="not a BOOTREPLY")
    if got_xid != xid:
        return Offer(invalid_reason="another transaction")
    if data[_HEADER.size:_HEADER.size + 4] != MAGIC_COOKIE:
        return Offer(invalid_reason="no DHCP magic cookie")
    options: dict[int, bytes] = {}
    pos = _HEADER.size + 4
    while pos < len(data):
        code = data[pos]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 1 >= len(data) or pos + 2 + data[pos + 1] > len(data):
            return Offer(invalid_reason=f"option {code} runs past the end")
        options.setdefault(code, data[pos + 2:pos + 2 + data[pos + 1]])
        pos += 2 + data[pos + 1]
    if options.get(OPT_MESSAGE_TYPE) != bytes([DHCPOFFER]):
        return Offer(invalid_reason="not a DHCPOFFER")
    server_id = options.get(OPT_SERVER_ID, b"")
    server = server_id if len(server_id) == 4 else siaddr
    return Offer(server=str(ipaddress.IPv4Address(server)),
                 offered=str(ipaddress.IPv4Address(yiaddr)))


def interface_mac(interface: str, sysfs: Path = Path("/sys")) -> bytes:
    try:
        text = (sysfs / "class/net" / interface / "address").read_text().strip()
        mac = bytes.fromhex(text.replace(":", ""))
    except (OSError, ValueError):
        mac = b""
    # A locally administered random address when the interface has none we can read.
    return mac if len(mac) == 6 else bytes([0x02]) + secrets.token_bytes(5)


def probe_dhcp_servers(interface: str, timeout: float = 3.0) -> list[str]:
    """Addresses of the DHCP servers that offered an address on ``interface`` within ``timeout``.

    Raises OSError when the probe cannot be sent (not root, no such interface).
    """
    xid = int.from_bytes(os.urandom(4), "big")
    packet = build_discover(interface_mac(interface), xid)
    servers: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind(("0.0.0.0", 68))
        sock.setblocking(False)
        deadline = time.monotonic() + timeout
        # Two sends: a lost first broadcast should not make a busy network look empty.
        resend_at = time.monotonic() + min(1.0, timeout / 2)
        sock.sendto(packet, ("255.255.255.255", 67))
        while (left := deadline - time.monotonic()) > 0:
            if resend_at and time.monotonic() >= resend_at:
                with contextlib.suppress(OSError):
                    sock.sendto(packet, ("255.255.255.255", 67))
                resend_at = 0.0
            ready, _, _ = select.select([sock], [], [], min(left, 0.2))
            if not ready:
                continue
            try:
                data, _ = sock.recvfrom(4096)
            except BlockingIOError:
                continue
            offer = parse_offer(data, xid)
            if not offer.invalid_reason and offer.server not in servers:
                servers.append(offer.server)
    return servers
