"""Is another DHCP server answering on this segment? (Full mode refuses to start if so.)

Sends a DISCOVER with the broadcast flag from a random locally administered MAC and listens
for OFFERs carrying an address. Offers without one (yiaddr 0) come from proxyDHCP servers,
which can coexist with a full server, and are not counted.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    MessageType,
    Packet,
    decode,
    encode,
)
from dragonfly.edge.dhcp.netif import dhcp_socket


@dataclass(frozen=True)
class ProbeOffer:
    source: str  # the address the OFFER came from
    server_id: str | None
    offered_ip: str

    def describe(self) -> str:
        return f"{self.server_id or self.source} offered {self.offered_ip}"


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, xid: int) -> None:
        self.xid = xid
        self.offers: list[ProbeOffer] = []
        self.got_one = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        p = decode(data).packet
        if (p is None or p.op != BOOTREPLY or p.xid != self.xid
                or p.message_type != MessageType.OFFER or p.yiaddr == "0.0.0.0"):
            return
        offer = ProbeOffer(addr[0], o.server_id(p), p.yiaddr)
        if offer not in self.offers:  # each retransmission may be answered
            self.offers.append(offer)
        self.got_one.set()


def probe_packet(xid: int, mac: bytes) -> bytes:
    return encode(Packet(
        BOOTREQUEST, xid, mac, flags=FLAG_BROADCAST,
        options={53: bytes((MessageType.DISCOVER,)), o.Opt.CLIENT_ID: b"\x01" + mac,
                 o.Opt.PARAM_REQUEST: bytes((1, 3, 6, 51, 54))}))


async def probe_dhcp_servers(interface: str | None, *, listen_for: float = 5.0,
                             target: tuple[str, int] = ("255.255.255.255", 67),
                             bind: tuple[str, int] = ("0.0.0.0", 68)) -> list[ProbeOffer]:
    """OFFERs received within ``listen_for`` seconds; returns shortly after the first.

    Servers often ping an address before offering it (dnsmasq: ~3 s for a new client, ISC
    dhcpd: 1 s), hence the default of 5 s rather than the usual 2-3 s.
    """
    loop = asyncio.get_running_loop()
    xid = secrets.randbits(32)
    mac = bytes((0x02,)) + secrets.token_bytes(5)  # locally administered, unicast
    listener = _Listener(xid)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: listener, sock=dhcp_socket(bind[0], bind[1], interface))
    try:
        packet = probe_packet(xid, mac)
        deadline = loop.time() + listen_for
        resend_every = min(1.5, listen_for / 3)
        while (remaining := deadline - loop.time()) > 0:
            transport.sendto(packet, target)  # same xid: retransmissions, one transaction
            try:
                await asyncio.wait_for(listener.got_one.wait(), min(resend_every, remaining))
            except TimeoutError:
                continue
            await asyncio.sleep(0.2)  # collect other servers answering at the same time
            break
        return list(listener.offers)
    finally:
        transport.close()
