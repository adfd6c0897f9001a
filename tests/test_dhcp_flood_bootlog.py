"""The boot doctor under a DISCOVER flood: every MAC's discover and offer in its timeline,
events delivered after the replies of their batch, and the store write put off while the flood
lasts (bounded), in chunks."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dragonfly.boot import log as bootlog_module
from dragonfly.boot.log import BOOT, BootLog
from dragonfly.boot.registry import BootEndpoints, BootRegistry
from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp.codec import BOOTREQUEST, Packet, decode, encode
from dragonfly.edge.dhcp.responder import Responder
from dragonfly.edge.dhcp.server import DhcpPorts, DhcpService
from dragonfly.store import SqliteStore


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = SqliteStore(":memory:")
    await s.open()
    yield s
    await s.close()


def pxe_discover(i: int) -> tuple[str, bytes, bytes]:
    """(mac, uuid, wire bytes) of a BIOS PXE DISCOVER from machine ``i``."""
    mac = bytes((0x52, 0x54, 0x00, 0xAB)) + i.to_bytes(2, "big")
    uuid = os.urandom(16)
    options = {53: b"\x01", 93: o.build_client_arch(0), 94: b"\x01\x02\x01",
               60: b"PXEClient:Arch:00000:UNDI:002001", 97: b"\x00" + uuid}
    packet = Packet(BOOTREQUEST, 0x5000 + i, mac, flags=0x8000, options=options)
    return mac.hex(":"), uuid, encode(packet)


def uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


async def test_flood_of_distinct_macs_every_discover_and_offer_in_the_timelines(
        store: SqliteStore) -> None:
    bootlog = BootLog(store)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # room for every reply of the burst (beyond rmem_max as root)
        client.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
    except OSError:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    svc = DhcpService(interface=None, server_ip="192.0.2.1", http_port=3000,
                      on_event=bootlog.record,
                      ports=DhcpPorts.loopback(client.getsockname()[1]), pxe_discovery_control=True)
    await svc.start()
    count = 250
    loop = asyncio.get_running_loop()
    try:
        sent = [pxe_discover(i) for i in range(count)]
        for _, _, data in sent:  # back to back: the server drains them in batches
            client.sendto(data, ("127.0.0.1", svc.bound_ports[0]))
        replies: set[int] = set()
        async with asyncio.timeout(10):
            while len(replies) < count:
                data = await loop.sock_recv(client, 2048)
                reply = decode(data).packet
                assert reply is not None
                replies.add(reply.xid)
    finally:
        await svc.stop()
        client.close()
    assert replies == {0x5000 + i for i in range(count)}
    assert svc.counters.answered == count
    for i, (mac, uuid, _) in enumerate(sent):
        steps = bootlog.timeline(mac)["steps"]
        assert [s["step"] for s in steps] == ["dhcp_discover", "dhcp_offer"], mac
        assert steps[0]["detail"]["xid"] == steps[1]["detail"]["xid"] == 0x5000 + i
        assert steps[0]["detail"]["uuid"] == uuid_text(uuid)
        assert steps[0]["detail"]["arch_name"] == "x86 BIOS (arch 0)"
        assert steps[1]["detail"]["loader"] == "undionly.kpxe"
    await bootlog.flush()
    docs = {d.key: d.data for d in await store.list(BOOT)}
    assert set(docs) == {mac for mac, _, _ in sent}
    assert all(len(d["steps"]) == 2 for d in docs.values())


def test_deferred_events_wait_for_delivery_and_keep_their_order() -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    responder = Responder(registry=BootRegistry(),
                          endpoints=BootEndpoints("192.0.2.1", 3000, "192.0.2.1"),
                          server_ip="192.0.2.1",
                          on_event=lambda mac, step, detail, at: events.append(
                              (mac, step, detail)))
    responder.defer_events = True
    macs = []
    for i in range(3):
        mac, _, data = pxe_discover(i)
        macs.append(mac)
        assert responder.handle(data, ("0.0.0.0", 68)) is not None
    assert events == []  # the replies go out first
    responder.deliver_events()
    assert [(m, s) for m, s, _ in events] == [
        (mac, step) for mac in macs for step in ("dhcp_discover", "dhcp_offer")]
    responder.deliver_events()
    assert len(events) == 6
    # Details of one kind of client share the derived part but are each their own dict.
    assert events[0][2] is not events[2][2]
    assert events[0][2]["xid"] != events[2][2]["xid"]


async def test_store_write_waits_while_a_flood_lasts_but_not_forever(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    bootlog = BootLog(store, flush_interval=1.0)
    assert not bootlog._busy()
    for i in range(bootlog_module.BUSY_STEPS_PER_SECOND + 1):
        bootlog.record(f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", "dhcp_discover", {"xid": i})
    assert bootlog._busy()  # a flood: the periodic write waits
    bootlog.record("52:54:00:01:00:00", "dhcp_discover")
    assert not bootlog._busy()  # eased: write now
    monkeypatch.setattr(bootlog_module, "MAX_DEFER_SECONDS", 0.0)
    for i in range(bootlog_module.BUSY_STEPS_PER_SECOND + 1):
        bootlog.record("52:54:00:02:00:00", "dhcp_discover", {"xid": i})
    assert not bootlog._busy()  # put off long enough already


class FailingStore(SqliteStore):
    def __init__(self) -> None:
        super().__init__(":memory:")
        self.commits: list[int] = []
        self.fail_at = -1

    async def commit(self, ops: Any) -> Any:
        ops = list(ops)
        self.commits.append(len(ops))
        if len(self.commits) == self.fail_at:
            raise RuntimeError("disk full")
        return await super().commit(ops)


async def test_flush_writes_in_chunks_and_keeps_what_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootlog_module, "FLUSH_CHUNK", 2)
    store = FailingStore()
    await store.open()
    try:
        bootlog = BootLog(store)
        macs = [f"52:54:00:00:00:{i:02x}" for i in range(5)]
        for mac in macs:
            bootlog.record(mac, "dhcp_discover")
        store.fail_at = 2
        with pytest.raises(RuntimeError):
            await bootlog.flush()
        assert store.commits == [2, 2]
        written = {d.key for d in await store.list(BOOT)}
        assert len(written) == 2
        await bootlog.flush()  # the three not written are still due
        assert {d.key for d in await store.list(BOOT)} == set(macs)
    finally:
        await store.close()



@pytest.mark.parametrize(("arch", "vendor", "uuid", "flags"), [
    (0, b"PXEClient:Arch:00000:UNDI:002001", True, 0x8000),
    (0, b"PXEClient:Arch:00000:UNDI:002001", False, 0),
    (7, b"PXEClient:Arch:00007:UNDI:003016", True, 0),
    (16, b"HTTPClient:Arch:00016:UNDI:003016", True, 0x8000),
])
def test_the_fast_offer_is_byte_for_byte_the_encoded_one(arch: int, vendor: bytes,
                                                        uuid: bool, flags: int) -> None:
    def responder() -> Responder:
        return Responder(registry=BootRegistry(),
                         endpoints=BootEndpoints("192.0.2.1", 3000, "192.0.2.2"),
                         server_ip="192.0.2.1")

    options = {53: b"\x01", 93: o.build_client_arch(arch), 60: vendor}
    if uuid:
        options[97] = b"\x00" + bytes(range(16))
    data = encode(Packet(BOOTREQUEST, 77, bytes.fromhex("525400abcdef"), flags=flags,
                         options=options))
    fast, slow = responder(), responder()
    slow._fast_reply = lambda *args: None  # type: ignore[method-assign]
    a, b = fast.handle(data, ("0.0.0.0", 68)), slow.handle(data, ("0.0.0.0", 68))
    assert a is not None and b is not None
    assert a == b
