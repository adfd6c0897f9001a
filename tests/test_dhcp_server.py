"""The DHCP service over loopback (ephemeral ports): proxy replies, 4011, relays, selective and
full modes, the other-server probe, counters and malformed input."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import ip_network
from typing import Any

import pytest

from dragonfly.boot import BootRegistry
from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp.codec import BOOTREPLY, BOOTREQUEST, MessageType, Packet, decode, encode
from dragonfly.edge.dhcp.leases import LEASE_KIND, FullModeSettings
from dragonfly.edge.dhcp.server import DhcpConflict, DhcpPorts, DhcpService
from dragonfly.errors import InvalidInput
from dragonfly.store import SqliteStore
from tests.lab_dhcp.captured import packet

SERVER_IP = "192.0.2.1"  # advertised only; nothing is ever sent there
TFTP_IP = "192.0.2.2"


class Peer(asyncio.DatagramProtocol):
    """A UDP socket on loopback standing in for clients, relays or another DHCP server."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.answer: Callable[[bytes, tuple[str, int]], bytes | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.answer is not None:
            reply = self.answer(data, addr)
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)
            return
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def reply(self, wait: float = 2.0) -> Packet:
        data, _ = await asyncio.wait_for(self.queue.get(), wait)
        p = decode(data).packet
        assert p is not None
        return p

    async def nothing(self, wait: float = 0.3) -> None:
        with contextlib.suppress(TimeoutError):
            data, _ = await asyncio.wait_for(self.queue.get(), wait)
            raise AssertionError(f"unexpected reply {decode(data)}")


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return peer


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer]]:
    client, relay = await open_peer(), await open_peer()
    yield client, relay
    for p in (client, relay):
        assert p.transport is not None
        p.transport.close()


Events = list[tuple[str, str, dict[str, Any]]]
Factory = Callable[..., Awaitable[tuple[DhcpService, Events]]]


@pytest.fixture
async def start(peers: tuple[Peer, Peer]) -> AsyncIterator[Factory]:
    client, relay = peers
    started: list[DhcpService] = []

    async def factory(**kw: Any) -> tuple[DhcpService, Events]:
        events: Events = []
        kw.setdefault("mode", "auto")
        svc = DhcpService(
            interface=None, server_ip=SERVER_IP, http_port=3000, tftp_server_ip=TFTP_IP,
            on_event=lambda mac, step, detail, at: events.append((mac, step, detail)),
            ports=kw.pop("ports", None) or DhcpPorts.loopback(client.port, relay.port),
            **kw)
        await svc.start()
        started.append(svc)
        return svc, events

    yield factory
    for svc in started:
        await svc.stop()


def discover(mac: str = "52:54:00:00:00:01", *, xid: int = 42, arch: int | None = 0,
             vendor: str = "PXEClient:Arch:00000:UNDI:002001", mtype: int = 1,
             **opts: bytes) -> Packet:
    options: dict[int, bytes] = {53: bytes((mtype,)), 60: vendor.encode()}
    if arch is not None:
        options[93] = o.build_client_arch(arch)
    options.update({int(k[1:]): v for k, v in opts.items()})
    return Packet(BOOTREQUEST, xid, bytes.fromhex(mac.replace(":", "")), options=options)


# --- proxy mode ------------------------------------------------------------------------------

async def test_edk2_discover_gets_a_proxy_offer(start: Factory, peers: tuple[Peer, Peer]
                                                ) -> None:
    client, _ = peers
    svc, events = await start()
    client.send(packet("ovmf_edk2_discover"), svc.bound_ports[0])
    r = await client.reply()
    assert r.op == BOOTREPLY and r.xid == 0x99A68E3C and r.mac == "52:54:00:12:34:57"
    assert r.message_type == MessageType.OFFER
    assert r.yiaddr == "0.0.0.0" and r.ciaddr == "0.0.0.0"  # proxy: no address
    assert r.siaddr == TFTP_IP and r.boot_file == "ipxe.efi"
    assert r.flags & 0x8000
    assert o.server_id(r) == SERVER_IP
    assert o.vendor_class(r) == "PXEClient"
    assert r.options[97] == b"\x00" + bytes(16)  # UUID echoed
    assert r.options[43] == b"\x06\x01\x08\xff"  # discovery control: skip port 4011
    assert svc.counters.as_dict()["answered"] == 1
    steps = [(mac, step) for mac, step, _ in events]
    assert steps == [("52:54:00:12:34:57", "dhcp_discover"), ("52:54:00:12:34:57", "dhcp_offer")]
    assert events[0][2]["arch"] == 7 and events[0][2]["user_class"] == []
    assert events[1][2]["loader"] == "ipxe.efi" and "x64 UEFI" in events[1][2]["reason"]


async def test_boot_chain_rom_then_loader_then_script(start: Factory,
                                                      peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, _ = await start()
    client.send(packet("qemu_seabios_ipxe_rom_discover"), svc.bound_ports[0])
    assert (await client.reply()).boot_file == "undionly.kpxe"
    client.send(packet("qemu_seabios_ipxe_rom_discover"), svc.bound_ports[0])  # retransmit
    assert (await client.reply()).boot_file == "undionly.kpxe"
    # The chainloaded iPXE: same MAC, new transaction.
    again = decode(packet("qemu_seabios_ipxe_rom_discover")).packet
    assert again is not None
    again.xid += 1
    client.send(encode(again), svc.bound_ports[0])
    assert (await client.reply()).boot_file == "http://192.0.2.1:3000/boot/52:54:00:12:34:56.ipxe"


async def test_request_on_4011_gets_an_ack_to_the_sender(start: Factory,
                                                         peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, events = await start(pxe_discovery_control=False)
    req = discover(mtype=3, xid=77, arch=7, vendor="PXEClient:Arch:00007:UNDI:003000")
    req.ciaddr = "127.0.0.1"
    req.options[43] = o.build_tlv({71: b"\x00\x00\x00\x00"})  # boot item, type 0 layer 0
    assert svc.bound_ports[1] is not None
    client.send(encode(req), svc.bound_ports[1])
    r = await client.reply()
    assert r.message_type == MessageType.ACK and r.xid == 77
    assert r.boot_file == "ipxe.efi" and r.siaddr == TFTP_IP and r.ciaddr == "127.0.0.1"
    assert o.pxe_options(r) == {71: b"\x00\x00\x00\x00"}  # echoed, no discovery control
    assert [s for _, s, _ in events] == ["dhcp_request", "dhcp_ack"]


async def test_request_for_the_site_server_is_not_answered_but_teaches_ip(
        start: Factory, peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, events = await start()
    client.send(packet("ovmf_snponly_ipxe_request"), svc.bound_ports[0])
    await client.nothing()
    c = svc.counters
    assert c.ignored == 1 and c.ignored_by_reason["request for another server"] == 1
    # The address goes to the boot log (the one IP-to-MAC map) with the event.
    assert events[0][0] == "52:54:00:12:34:57" and events[0][2]["ip"] == "10.99.0.112"
    assert events[0][1] == "dhcp_request" and events[0][2]["ours"] is False


async def test_relayed_discover_is_answered_to_the_relay(start: Factory,
                                                         peers: tuple[Peer, Peer]) -> None:
    client, relay = peers
    svc, _ = await start()
    p = discover(o82=o.build_tlv({1: b"ge-0/0/7"}, end=False))
    p.giaddr, p.hops = "127.0.0.1", 1
    client.send(encode(p), svc.bound_ports[0])
    r = await relay.reply()
    assert r.giaddr == "127.0.0.1" and r.boot_file == "undionly.kpxe"
    assert o.relay_agent(r) == {1: b"ge-0/0/7"}
    await client.nothing(0.1)


async def test_relays_outside_the_boot_networks_are_ignored(start: Factory,
                                                           peers: tuple[Peer, Peer]) -> None:
    """boot.allowed_networks: a relayed request is answered only for a relay inside them; a
    request on the local segment has no address to judge and is answered as before."""
    client, relay = peers
    svc, events = await start(relay_networks=[ip_network("192.0.2.0/24"),
                                              ip_network("2001:db8::/32")])
    p = discover(xid=7)
    p.giaddr, p.hops = "127.0.0.1", 1
    client.send(encode(p), svc.bound_ports[0])
    await relay.nothing()
    assert svc.counters.ignored_by_reason["relay outside boot.allowed_networks"] == 1
    assert events[-1][1] == "dhcp_ignored" and "boot.allowed_networks" in \
        events[-1][2]["reason"]
    client.send(encode(discover(xid=8)), svc.bound_ports[0])
    assert (await client.reply()).xid == 8
    await svc.stop()
    svc, _ = await start(relay_networks=[ip_network("127.0.0.0/8")])
    client.send(encode(p), svc.bound_ports[0])
    assert (await relay.reply()).xid == 7


async def test_http_boot_client_gets_url_and_httpclient(start: Factory,
                                                        peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, _ = await start()
    client.send(encode(discover(arch=16, vendor="HTTPClient:Arch:00016:UNDI:003001")),
                svc.bound_ports[0])
    r = await client.reply()
    assert o.vendor_class(r) == "HTTPClient"
    assert r.boot_file == "http://192.0.2.1:3000/boot/loaders/ipxe.efi"
    assert 43 not in r.options


async def test_long_script_url_goes_to_option_67(start: Factory, peers: tuple[Peer, Peer]
                                                 ) -> None:
    client, _ = peers
    host = "boot." + "very-long-name." * 8 + "example"
    svc, _ = await start(http_host=host)
    p = discover(o77=b"iPXE", o175=o.build_tlv({0x13: b"\x01"}))
    svc.memory.record(p.mac, 1, BootRegistry().decide(
        svc.responder.facts(p), svc.responder.endpoints))  # pretend we sent the loader
    client.send(encode(p), svc.bound_ports[0])
    r = await client.reply()
    assert r.file == b""
    assert o.text(r.options[67]) == f"http://{host}:3000/boot/52:54:00:00:00:01.ipxe"


async def test_non_pxe_and_non_requests_are_ignored(start: Factory, peers: tuple[Peer, Peer]
                                                    ) -> None:
    client, _ = peers
    svc, events = await start()
    client.send(encode(discover(vendor="MSFT 5.0", arch=None)), svc.bound_ports[0])
    reply_packet = discover()
    reply_packet.op = BOOTREPLY
    client.send(encode(reply_packet), svc.bound_ports[0])
    client.send(encode(Packet(BOOTREQUEST, 5, dhcp=False)), svc.bound_ports[0])
    await client.nothing()
    c = svc.counters.as_dict()
    assert c["received"] == 3 and c["ignored"] == 3 and c["answered"] == 0
    assert c["ignored_by_reason"] == {"not a PXE client": 1, "not a client request": 1,
                                      "plain BOOTP (no DHCP message type)": 1}
    assert events == []


async def test_malformed_packets_are_counted_and_the_server_keeps_answering(
        start: Factory, peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, _ = await start()
    good = packet("ovmf_edk2_discover")
    for junk in (b"\x00", b"\x01" * 10, good[:240] + b"\x3c\x40abc", good[:236] + b"XXXX",
                 good[:240] + b"\x35\x02\x01\x01"):
        client.send(junk, svc.bound_ports[0])
    client.send(good, svc.bound_ports[0])
    assert (await client.reply()).boot_file == "ipxe.efi"
    c = svc.counters.as_dict()
    assert c["malformed"] == 5 and c["answered"] == 1 and c["errors"] == 0
    assert c["malformed_by_reason"]["too short for a BOOTP header (N < N bytes)"] == 2
    assert c["malformed_by_reason"]["bad magic cookie"] == 1


async def test_selective_mode_answers_only_allowed_macs(start: Factory,
                                                        peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    allowed = {"52:54:00:00:00:02"}
    svc, events = await start(mode="selective", allow=lambda mac: mac in allowed)
    client.send(encode(discover("52:54:00:00:00:01")), svc.bound_ports[0])
    await client.nothing()
    client.send(encode(discover("52:54:00:00:00:02")), svc.bound_ports[0])
    assert (await client.reply()).mac == "52:54:00:00:00:02"
    assert svc.counters.ignored_by_reason["not allowed (selective mode)"] == 1
    ignored = [d for mac, step, d in events if step == "dhcp_ignored"]
    assert ignored == [{"xid": 42, "reason": "not allowed (selective mode)"}]


async def test_a_failing_callback_never_breaks_the_server(start: Factory,
                                                          peers: tuple[Peer, Peer]) -> None:
    client, _ = peers

    def boom(mac: str) -> bool:
        raise RuntimeError("allow list unavailable")

    svc, _ = await start(mode="selective", allow=boom)
    client.send(encode(discover()), svc.bound_ports[0])
    await client.nothing()
    assert svc.counters.ignored == 1 and svc.counters.errors == 0


async def test_a_port_in_use_is_a_clear_error_and_leaks_nothing(start: Factory) -> None:
    svc, _ = await start()
    taken = svc.bound_ports[1]
    assert taken is not None
    other = DhcpService(interface=None, server_ip=SERVER_IP, http_port=1,
                        ports=DhcpPorts(host="127.0.0.1", server=0, pxe=taken))
    # SO_REUSEADDR lets two DHCP sockets share a port (as beside dnsmasq) ...
    await other.start()
    await other.stop()
    # ... but an interface that does not exist is refused with the reason.
    bad = DhcpService(interface="dfnosuch0", server_ip=SERVER_IP, http_port=1,
                      ports=DhcpPorts(host="127.0.0.1", server=0, pxe=0))
    with pytest.raises(InvalidInput, match="cannot open the DHCP sockets on dfnosuch0"):
        await bad.start()


async def test_off_mode_opens_nothing(start: Factory) -> None:
    svc, _ = await start(mode="off")
    assert svc.bound_ports == (0, None)


def test_constructor_validates_mode_settings() -> None:
    with pytest.raises(InvalidInput, match="not one of"):
        DhcpService(interface=None, server_ip=SERVER_IP, http_port=1, mode="proxy")
    with pytest.raises(InvalidInput, match="full DHCP mode needs"):
        DhcpService(interface=None, server_ip=SERVER_IP, http_port=1, mode="full")
    with pytest.raises(InvalidInput, match="allow"):
        DhcpService(interface=None, server_ip=SERVER_IP, http_port=1, mode="selective")


async def test_stop_closes_the_sockets(start: Factory, peers: tuple[Peer, Peer]) -> None:
    client, _ = peers
    svc, _ = await start()
    port = svc.bound_ports[0]
    await svc.stop()
    client.send(encode(discover()), port)
    await client.nothing()
    assert svc.counters.received == 0


# --- full mode -------------------------------------------------------------------------------

FULL = FullModeSettings.parse(
    "192.0.2.100-192.0.2.102", ["52:54:00:00:00:09=192.0.2.50"], router="192.0.2.254",
    dns=("192.0.2.53",), lease_time=600, force=True)


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = SqliteStore(":memory:")
    await s.open()
    yield s
    await s.close()


async def _bind(client: Peer, svc: DhcpService, mac: str, xid: int) -> Packet:
    client.send(encode(discover(mac, xid=xid, vendor="udhcp 1.35.0", arch=None)),
                svc.bound_ports[0])
    offer = await client.reply()
    assert offer.message_type == MessageType.OFFER
    req = discover(mac, xid=xid, vendor="udhcp 1.35.0", arch=None, mtype=3,
                   o54=o.build_ip(SERVER_IP), o50=o.build_ip(offer.yiaddr))
    client.send(encode(req), svc.bound_ports[0])
    ack = await client.reply()
    assert ack.message_type == MessageType.ACK and ack.yiaddr == offer.yiaddr
    return ack


async def test_full_mode_leases_and_persists(start: Factory, peers: tuple[Peer, Peer],
                                             store: SqliteStore) -> None:
    client, _ = peers
    svc, events = await start(mode="full", store=store, full=FULL)
    ack = await _bind(client, svc, "52:54:00:00:00:01", 1)
    assert ack.yiaddr == "192.0.2.100"
    assert o.u32(ack.options[51]) == 600 and o.u32(ack.options[58]) == 300
    assert o.ipv4(ack.options[1]) == "255.255.255.0"
    assert o.ipv4_list(ack.options[3]) == ["192.0.2.254"]
    assert o.ipv4_list(ack.options[6]) == ["192.0.2.53"]
    assert 60 not in ack.options and ack.boot_file == ""  # not a PXE client: lease only
    assert (await _bind(client, svc, "52:54:00:00:00:09", 2)).yiaddr == "192.0.2.50"
    await svc.stop()  # flushes the lease writer
    docs = {d.key: d.data for d in await store.list(LEASE_KIND)}
    assert docs["52:54:00:00:00:01"]["ip"] == "192.0.2.100"
    assert docs["52:54:00:00:00:09"]["ip"] == "192.0.2.50"
    assert {step for _, step, _ in events} >= {"dhcp_discover", "dhcp_offer", "dhcp_ack"}

    # A restarted server remembers: the same MAC gets the same address, another MAC not.
    svc2, _ = await start(mode="full", store=store, full=FULL)
    client.send(encode(discover("52:54:00:00:00:03", xid=3, arch=None, vendor="x")),
                svc2.bound_ports[0])
    assert (await client.reply()).yiaddr == "192.0.2.101"
    client.send(encode(discover("52:54:00:00:00:01", xid=4, arch=None, vendor="x")),
                svc2.bound_ports[0])
    assert (await client.reply()).yiaddr == "192.0.2.100"


async def test_full_mode_pxe_client_gets_lease_and_loader(start: Factory,
                                                          peers: tuple[Peer, Peer],
                                                          store: SqliteStore) -> None:
    client, _ = peers
    svc, _ = await start(mode="full", store=store, full=FULL)
    client.send(packet("ovmf_edk2_discover"), svc.bound_ports[0])
    r = await client.reply()
    assert r.yiaddr == "192.0.2.100" and r.boot_file == "ipxe.efi" and r.siaddr == TFTP_IP
    assert o.vendor_class(r) == "PXEClient" and 51 in r.options


async def test_full_mode_naks_release_and_exhaustion(start: Factory, peers: tuple[Peer, Peer],
                                                     store: SqliteStore) -> None:
    client, _ = peers
    svc, events = await start(mode="full", store=store, full=FULL)
    # INIT-REBOOT for an address of another network: NAK, broadcast.
    req = discover("52:54:00:00:00:01", mtype=3, arch=None, vendor="x",
                   o50=o.build_ip("10.1.1.1"))
    client.send(encode(req), svc.bound_ports[0])
    nak = await client.reply()
    assert nak.message_type == MessageType.NAK and "not on this network" in (
        o.text(nak.options[56]) or "")
    # Someone else's reservation cannot be requested.
    req.options[50] = o.build_ip("192.0.2.50")
    client.send(encode(req), svc.bound_ports[0])
    assert (await client.reply()).message_type == MessageType.NAK
    # Fill the three-address pool, then a fourth client gets nothing.
    for i in range(3):
        await _bind(client, svc, f"52:54:00:00:01:0{i}", 10 + i)
    client.send(encode(discover("52:54:00:00:01:09", arch=None, vendor="x")),
                svc.bound_ports[0])
    await client.nothing()
    assert svc.counters.ignored_by_reason["address pool exhausted"] == 1
    # A release frees an address for the next client and deletes the stored lease.
    rel = discover("52:54:00:00:01:00", mtype=7, arch=None, vendor="x")
    rel.ciaddr = "192.0.2.100"
    client.send(encode(rel), svc.bound_ports[0])
    client.send(encode(discover("52:54:00:00:01:09", xid=99, arch=None, vendor="x")),
                svc.bound_ports[0])
    assert (await client.reply()).yiaddr == "192.0.2.100"
    await svc.stop()
    keys = [d.key for d in await store.list(LEASE_KIND)]
    assert "52:54:00:00:01:00" not in keys and len(keys) == 2
    assert any(step == "dhcp_nak" for _, step, _ in events)


async def test_full_mode_refuses_when_another_server_offers(start: Factory,
                                                            store: SqliteStore) -> None:
    other = await open_peer()

    def offer(data: bytes, addr: tuple[str, int]) -> bytes | None:
        p = decode(data).packet
        assert p is not None
        return encode(Packet(BOOTREPLY, p.xid, p.chaddr, yiaddr="192.0.2.77",
                             options={53: b"\x02", 54: o.build_ip("192.0.2.9")}))

    other.answer = offer
    ports = DhcpPorts(host="127.0.0.1", server=0, pxe=0, probe_target=("127.0.0.1", other.port),
                      probe_bind=("127.0.0.1", 0))
    settings = FullModeSettings("192.0.2.100", "192.0.2.110")
    with pytest.raises(DhcpConflict, match=r"192\.0\.2\.9 offered 192\.0\.2\.77"):
        await start(mode="full", store=store, full=settings, ports=ports, probe_timeout=2.0)

    # A proxyDHCP (no address in its offer) is no reason to refuse.
    def proxy_offer(data: bytes, addr: tuple[str, int]) -> bytes | None:
        p = decode(data).packet
        assert p is not None
        return encode(Packet(BOOTREPLY, p.xid, p.chaddr, options={53: b"\x02"}))

    other.answer = proxy_offer
    svc, _ = await start(mode="full", store=store, full=settings, ports=ports,
                         probe_timeout=0.6)
    assert svc.bound_ports[0] > 0 and svc.other_servers == []
    assert other.transport is not None
    other.transport.close()


def test_full_mode_settings_parse_and_validate() -> None:
    s = FullModeSettings.parse("10.0.0.10 - 10.0.0.20", ["52-54-00-AA-BB-CC=10.0.0.5"])
    assert (s.range_start, s.range_end) == ("10.0.0.10", "10.0.0.20")
    assert s.reservations == {"52:54:00:aa:bb:cc": "10.0.0.5"}
    for bad in ("10.0.0.20-10.0.0.10", "10.0.0.10", "10.0.0.1-x"):
        with pytest.raises(ValueError):
            FullModeSettings.parse(bad)
    with pytest.raises(ValueError):
        FullModeSettings.parse("10.0.0.1-10.0.0.2", ["nonsense"])


def test_service_from_settings() -> None:
    from dragonfly.config import Config
    from dragonfly.edge.settings import service_from_settings

    values = Config.defaults().as_dict()
    svc = service_from_settings(values, server_ip=SERVER_IP, http_port=3000)
    assert svc.mode == values["boot.dhcp_mode"]
    edk2 = discover(arch=7, vendor="PXEClient:Arch:00007:UNDI:003000")
    decision = svc.registry.decide(svc.responder.facts(edk2), svc.responder.endpoints)
    assert decision.loader == "ipxe.efi"  # the default UEFI loader
    values |= {"boot.dhcp_mode": "full", "boot.dhcp_range": "192.0.2.10-192.0.2.20",
               "boot.dhcp_reservations": ["52:54:00:00:00:01=192.0.2.5"],
               "boot.dhcp_dns": ["192.0.2.53"], "boot.loader_uefi": "snponly.efi"}
    store = SqliteStore(":memory:")
    full = service_from_settings(values, server_ip=SERVER_IP, http_port=3000, store=store)
    assert full.full is not None and full.full.reservations == {"52:54:00:00:00:01": "192.0.2.5"}
    assert full.full.dns == ("192.0.2.53",)
    method = full.registry.method("uefi-x64")
    assert method is not None and method.loader == "snponly.efi"
    with pytest.raises(InvalidInput, match="needs boot.dhcp_range"):
        service_from_settings(values | {"boot.dhcp_range": ""}, server_ip=SERVER_IP,
                              http_port=3000, store=store)
    with pytest.raises(InvalidInput, match="boot.loader_uefi"):
        service_from_settings(values | {"boot.loader_uefi": "x.efi"}, server_ip=SERVER_IP,
                              http_port=3000, store=store)
