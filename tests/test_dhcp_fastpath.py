"""The proxy's fast path (dragonfly.edge.dhcp.fastpath): a known kind of DISCOVER answered
from its bytes gets exactly what the full path would send, its boot-doctor steps are the full
path's, and whatever the full path must judge (history, relays, selective mode, odd options)
still goes there. Plus the flood hand-over of those steps in ``DhcpService``."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from dragonfly.boot.log import BootLog
from dragonfly.boot.registry import BootEndpoints, BootRegistry
from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp import server as server_module
from dragonfly.edge.dhcp.codec import BOOTREQUEST, MessageType, Packet, encode
from dragonfly.edge.dhcp.fastpath import KnownOffers, offer_key
from dragonfly.edge.dhcp.options import uuid_text
from dragonfly.edge.dhcp.responder import Responder
from dragonfly.edge.dhcp.server import DhcpPorts, DhcpService
from dragonfly.store import SqliteStore

SOURCE = ("0.0.0.0", 68)
Events = list[tuple[str, str, dict[str, Any], float]]


def discover(i: int, *, uuid: bytes | None = None, flags: int = 0x8000,
             extra: dict[int, bytes] | None = None, mtype: int = 1,
             giaddr: str = "0.0.0.0", xid: int | None = None) -> bytes:
    """A BIOS PXE ROM's DISCOVER from machine ``i`` (its own MAC and UUID)."""
    options = {53: bytes((mtype,)), **(extra or {}), 93: o.build_client_arch(0),
               94: b"\x01\x02\x01", 60: b"PXEClient:Arch:00000:UNDI:002001",
               97: b"\x00" + (uuid if uuid is not None else os.urandom(16))}
    mac = bytes((0x52, 0x54, 0x00, 0xCD)) + i.to_bytes(2, "big")
    return encode(Packet(BOOTREQUEST, 0x7000 + i if xid is None else xid, mac, flags=flags,
                         giaddr=giaddr, options=options))


def responder(events: Events | None = None, **kw: Any) -> Responder:
    def record(mac: str, step: str, detail: dict[str, Any], at: float) -> None:
        assert events is not None
        events.append((mac, step, detail, at))

    return Responder(registry=BootRegistry(),
                     endpoints=BootEndpoints("192.0.2.1", 3000, "192.0.2.2"),
                     server_ip="192.0.2.1", on_event=record if events is not None else None,
                     **kw)


def full_path_answer(data: bytes) -> bytes | None:
    """What a responder that has never seen this kind of client sends (the full path)."""
    reply = responder().handle(data, SOURCE)
    return None if reply is None else reply.data


def test_known_kinds_are_answered_from_bytes_exactly_as_the_full_path_answers() -> None:
    r = responder()
    packets = [discover(i, flags=0x8000 if i % 2 else 0) for i in range(200)]
    replies = [r.handle(data, SOURCE) for data in packets]
    assert r.counters.fast == 199  # the first one taught the kind
    assert r.counters.answered == r.counters.received == 200
    for data, reply in zip(packets, replies, strict=True):
        assert reply is not None
        assert reply.data == full_path_answer(data)
        assert reply.addr == ("255.255.255.255", 68)


def test_the_fast_path_records_the_decision_in_boot_memory() -> None:
    r = responder()
    for i in range(3):
        r.handle(discover(i), SOURCE)
    mac = "52:54:00:cd:00:02"
    remembered = r.memory.get(mac)
    assert remembered is not None and remembered.xid == 0x7002
    assert remembered.loader == "undionly.kpxe"


def test_a_mac_with_history_takes_the_full_path() -> None:
    r = responder()
    r.handle(discover(0), SOURCE)
    r.handle(discover(1), SOURCE)
    assert r.counters.fast == 1
    again = discover(1, xid=0x7001)  # a retransmission: same MAC and xid
    reply = r.handle(again, SOURCE)
    assert reply is not None and r.counters.fast == 1
    # The full path's answer for a MAC we already sent a loader to (same transaction).
    assert o.vendor_class(_decoded(reply.data)) == "PXEClient"


def _decoded(data: bytes) -> Packet:
    from dragonfly.edge.dhcp.codec import decode

    packet = decode(data).packet
    assert packet is not None
    return packet


@pytest.mark.parametrize("case", ["relayed", "request", "no uuid", "odd uuid"])
def test_what_is_not_the_usual_discover_is_answered_by_the_full_path(case: str) -> None:
    r = responder()
    make: dict[str, Any] = {
        "relayed": lambda i: discover(i, giaddr="198.51.100.1"),
        "request": lambda i: discover(i, mtype=3, extra={54: bytes((192, 0, 2, 1))}),
        "no uuid": lambda i: discover(i).replace(b"\x61\x11\x00", b"\x61\x11\x01"),
        "odd uuid": lambda i: discover(i, uuid=b"\x61\x11\x00" + bytes(13)),
    }
    packets = [make[case](i) for i in range(5)]
    replies = [r.handle(p, SOURCE) for p in packets]
    if case == "relayed":
        assert r.counters.fast == 0
        assert all(rep is not None and rep.addr == ("198.51.100.1", 67) for rep in replies)
        return
    if case == "request":
        assert r.counters.fast == 0
        return
    # A UUID whose type is not 0 is part of the key (one kind per machine); a UUID that
    # itself contains the option's header is found at the right place: both still right.
    for data, reply in zip(packets, replies, strict=True):
        assert reply is not None and reply.data == full_path_answer(data)


def test_an_option_that_contains_the_uuid_header_is_not_learnt() -> None:
    # Option 43 carrying the bytes of option 97's header before the real option 97: the
    # search lands inside option 43, so this kind is never answered from bytes.
    extra = {43: b"\x61\x11\x00" + bytes(16)}
    r = responder()
    packets = [discover(i, extra=extra) for i in range(4)]
    for data in packets:
        reply = r.handle(data, SOURCE)
        assert reply is not None and reply.data == full_path_answer(data)
    assert r.counters.fast == 0
    key = offer_key(packets[0])
    assert key is not None and key[0] > 0
    reply = full_path_answer(packets[0])
    assert reply is not None
    offers = KnownOffers()
    assert offers.learn(key, packets[0], reply, r.memory.get("52:54:00:cd:00:00").decision,  # type: ignore[union-attr]
                        {}, "x") is None


def test_offer_key_cuts_only_the_uuid() -> None:
    a, b = discover(1, uuid=bytes(16)), discover(2, uuid=b"\xff" * 16)
    ka, kb = offer_key(a), offer_key(b)
    assert ka is not None and ka == kb
    assert offer_key(discover(1, giaddr="198.51.100.1")) is None
    assert offer_key(a[:200]) is None
    assert uuid_text(bytes(range(16))) == "00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_fast_answers_give_the_boot_doctor_the_full_paths_steps() -> None:
    fast_events: Events = []
    r = responder(fast_events)
    uuids = [os.urandom(16) for _ in range(3)]
    for i, uuid in enumerate(uuids):
        r.handle(discover(i, uuid=uuid), SOURCE)
    assert r.counters.fast == 2
    for i, uuid in enumerate(uuids):
        slow_events: Events = []
        responder(slow_events).handle(discover(i, uuid=uuid), SOURCE)
        mine = [(m, s, d) for m, s, d, _ in fast_events if m == f"52:54:00:cd:00:{i:02x}"]
        assert mine == [(m, s, d) for m, s, d, _ in slow_events]
        assert mine[0][2]["uuid"] == uuid_text(uuid)


def test_deferred_fast_steps_wait_and_a_later_step_of_the_mac_brings_them_first() -> None:
    events: Events = []
    clock = iter(range(100, 200))
    r = responder(events, clock=lambda: float(next(clock)))
    r.defer_events = True
    r.handle(discover(0), SOURCE)  # the full path: queued as before
    r.handle(discover(1), SOURCE)  # fast: waits in the backlog
    r.handle(discover(2), SOURCE)
    assert r.backlog == 2
    r.deliver_events(max_macs=0)  # only the others' steps
    assert [(m[-2:], s) for m, s, _, _ in events] == [("00", "dhcp_discover"),
                                                       ("00", "dhcp_offer")]
    # MAC 1 takes the PXE boot server's REQUEST: its waiting steps come out before it.
    request = discover(1, mtype=3, xid=0x7001, extra={54: bytes((192, 0, 2, 1))})
    r.handle(request, ("192.0.2.50", 68), pxe_port=True)
    r.deliver_events(max_macs=0)
    assert [(m[-2:], s) for m, s, _, _ in events[2:]] == [
        ("01", "dhcp_discover"), ("01", "dhcp_offer"), ("01", "dhcp_request"),
        ("01", "dhcp_ack")]
    assert r.backlog == 1
    r.deliver_events()
    assert [(m[-2:], s) for m, s, _, _ in events[6:]] == [("02", "dhcp_discover"),
                                                         ("02", "dhcp_offer")]
    # Each step keeps the time it happened, not the time it was handed over.
    fast_discover = events[2]
    assert fast_discover[3] < events[4][3]


def test_a_backlog_beyond_the_boot_logs_size_lets_the_oldest_go_and_counts_them() -> None:
    events: Events = []
    r = responder(events)
    r.defer_events = True
    r.backlog_limit = 3
    for i in range(7):  # the first one is the full path's
        r.handle(discover(i), SOURCE)
    r.deliver_events()
    assert r.counters.steps_let_go == 6  # MACs 1-3, two steps each
    assert sorted({m for m, *_ in events}) == [
        "52:54:00:cd:00:00", "52:54:00:cd:00:04", "52:54:00:cd:00:05", "52:54:00:cd:00:06"]


def test_selective_mode_asks_for_every_mac_on_the_fast_path_too() -> None:
    events: Events = []
    allowed = {"52:54:00:cd:00:00", "52:54:00:cd:00:02"}
    r = responder(events, mode="selective", allow=allowed.__contains__)
    replies = [r.handle(discover(i), SOURCE) for i in range(4)]
    assert [rep is not None for rep in replies] == [True, False, True, False]
    assert r.counters.fast == 1
    ignored = [(m, d["reason"]) for m, s, d, _ in events if s == "dhcp_ignored"]
    assert ignored == [("52:54:00:cd:00:01", "not allowed (selective mode)"),
                       ("52:54:00:cd:00:03", "not allowed (selective mode)")]


def test_full_mode_has_no_fast_path() -> None:
    from dragonfly.edge.dhcp.leases import FullModeSettings, LeasePool

    settings = FullModeSettings(range_start="192.0.2.100", range_end="192.0.2.110",
                                netmask="255.255.255.0")
    r = Responder(registry=BootRegistry(), endpoints=BootEndpoints("192.0.2.1", 3000,
                                                                   "192.0.2.1"),
                  server_ip="192.0.2.1", mode="full", pool=LeasePool(settings, "192.0.2.1"))
    for i in range(3):
        reply = r.handle(discover(i), SOURCE)
        assert reply is not None
        assert _decoded(reply.data).message_type == MessageType.OFFER
    assert r.counters.fast == 0


# --- the service: steps handed over after a flood ----------------------------------------------

async def test_a_flood_defers_the_steps_then_hands_all_of_them_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback sockets, a real boot log on a real SQLite store: a burst above the flood rate
    leaves steps waiting while it lasts; afterwards every MAC has both steps, the boot log
    is poked to write at once and does not write while the flood lasts."""
    monkeypatch.setattr(server_module, "FLOOD_PACKETS_PER_SECOND", 200)
    monkeypatch.setattr(server_module, "DRAIN_MACS_FLOODING", 5)
    store = SqliteStore(":memory:")
    await store.open()
    bootlog = BootLog(store)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    svc = DhcpService(interface=None, server_ip="192.0.2.1", http_port=3000,
                      on_event=bootlog.record, clock=bootlog.clock,
                      ports=DhcpPorts.loopback(client.getsockname()[1]))
    pokes: list[bool] = []
    bootlog.busy_hint = svc.busy

    def calm() -> None:
        pokes.append(bootlog._busy())
        bootlog.poke()

    svc.on_calm = calm
    await bootlog.start()
    await svc.start()
    count = 600
    backlog_seen = 0
    busy_seen = False
    replies = 0

    def read_replies() -> int:
        got = 0
        while True:
            try:
                client.recv(2048)
            except BlockingIOError:
                return got
            got += 1

    try:
        macs = []
        for i in range(count):
            data = discover(i)
            macs.append(data[28:34].hex(":"))
            client.sendto(data, ("127.0.0.1", svc.bound_ports[0]))
            if i % 50 == 49:  # ~1,000/s in bursts: a flood for the patched threshold
                await asyncio.sleep(0.02)
                replies += read_replies()
                backlog_seen = max(backlog_seen, svc.responder.backlog)
                busy_seen = busy_seen or (svc.busy() and bootlog._busy())
        async with asyncio.timeout(10):
            while svc.responder.backlog or not pokes or replies < count:
                await asyncio.sleep(0.05)
                replies += read_replies()
    finally:
        await svc.stop()
        client.close()
        await bootlog.stop()
        await store.close()
    assert backlog_seen > 0  # steps waited while the burst lasted
    assert busy_seen  # and the boot log put its write off
    assert pokes and pokes[-1] is False  # poked once it was over, and free to write then
    assert svc.counters.fast == count - 1
    for mac in macs:
        assert [s["step"] for s in bootlog.timeline(mac)["steps"]] == ["dhcp_discover",
                                                                       "dhcp_offer"]


async def test_steps_handed_over_late_keep_their_time_and_do_not_count_as_a_flood() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    try:
        bootlog = BootLog(store, clock=lambda: 1000.0)
        for i in range(2500):
            bootlog.record(f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", "dhcp_discover",
                           {"xid": i}, at=900.0)
        assert bootlog.timeline("52:54:00:00:00:01")["steps"][0]["at"] == 900.0
        assert not bootlog._busy()  # the DHCP server says when it floods (busy_hint)
        bootlog.busy_hint = lambda: True
        assert bootlog._busy()
    finally:
        await store.close()
