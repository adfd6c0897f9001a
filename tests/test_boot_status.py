"""GET /api/boot/status: the boot edge's health, with a real DHCP service and TFTP server on
loopback ephemeral ports (a DhcpService on UDP 67 would answer the host's real network); the
dashboard's banner when the edge failed, followed live; the demo's simulated status."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from dragonfly.app import create_app
from dragonfly.boot.loaders import Loaders
from dragonfly.boot.log import BootLog
from dragonfly.boot.registry import BootRegistry
from dragonfly.compose import demo_context
from dragonfly.config import Config
from dragonfly.context import AppContext
from dragonfly.demo.simulator import Simulator
from dragonfly.domain.fleet import Fleet
from dragonfly.edge.dhcp.server import DhcpPorts, DhcpService
from dragonfly.edge.service import BootEdge, BootStack, StackBuilder
from dragonfly.edge.settings import registry_from_settings
from dragonfly.edge.tftp.server import TftpServer
from dragonfly.errors import InvalidInput
from dragonfly.store import SqliteStore, Store
from tests.test_auth_fixtures import Client, Who, installed_client, setup_admin
from tests.test_tftp import download

PAYLOAD = b"dragonfly" * 200  # 1800 bytes: four TFTP blocks


def loopback_builder(tftp_port: int = 0) -> StackBuilder:
    """Stacks like ``build_boot_stack``'s, but on 127.0.0.1 and ephemeral ports (TFTP on
    ``tftp_port`` when given), serving one file over TFTP."""
    def build(values: Mapping[str, Any], store: Store, fleet: Fleet, bootlog: BootLog,
              loaders: Loaders) -> BootStack:
        registry: BootRegistry = registry_from_settings(values)
        stack = BootStack(registry, loaders, bootlog, None, "127.0.0.1", None, None)
        stack.dhcp = DhcpService(
            interface=values["boot.interface"] or None, server_ip="127.0.0.1",
            http_port=3000, registry=registry, on_event=bootlog.record,
            ports=DhcpPorts.loopback(client_port=9))
        stack.tftp = TftpServer(lambda path: PAYLOAD if path == "hello.bin" else None,
                                host="127.0.0.1", port=tftp_port,
                                on_transfer=stack.on_tftp_transfer)
        return stack
    return build


def with_edge(ctx: AppContext, build: StackBuilder) -> BootEdge:
    assert ctx.bootlog is not None
    edge = BootEdge(ctx.config, ctx.store, ctx.fleet, ctx.bootlog, build=build)
    ctx.services.append(edge)
    ctx.edge = edge
    return edge


async def edge_client(aiohttp_client: Any, tmp_path: Path, build: StackBuilder,
                      **settings: Any) -> tuple[Client, Who, BootEdge]:
    """An installed instance (after setup, its admin signed in) running ``build``'s edge."""
    holder: dict[str, BootEdge] = {}

    async def factory(app: Any, **kw: Any) -> Any:
        from dragonfly.context import CTX

        holder["edge"] = with_edge(app[CTX], build)
        return await aiohttp_client(app, **kw)

    client = await installed_client(factory, **{"server.state_dir": str(tmp_path),
                                                **settings})
    return client, await setup_admin(client), holder["edge"]


async def status_of(client: Client, who: Who) -> dict[str, Any]:
    response = await client.get("/api/boot/status", headers=who.headers())
    data: dict[str, Any] = json.loads(await response.text())
    assert response.status == 200, data
    return data


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def banner(page: str, element_id: str) -> str:
    found = re.search(rf'<section [^>]*id="{element_id}"[^>]*>.*?</section>', page, re.S)
    assert found, element_id
    return found.group(0)


def hidden(section: str) -> bool:
    return re.search(r"^<section [^>]*\shidden[\s>]", section) is not None


async def test_running_edge_reports_addresses_and_counters(aiohttp_client: Any,
                                                           tmp_path: Path) -> None:
    client, admin, edge = await edge_client(aiohttp_client, tmp_path, loopback_builder())
    status = await status_of(client, admin)
    assert status["state"] == "running" and status["reason"] == ""
    assert status["simulated"] is False and status["dhcp_mode"] == "auto"
    assert status["boot_address"] == "127.0.0.1"
    stack = edge.stack
    assert stack is not None and stack.dhcp is not None and stack.tftp is not None
    server_port, pxe_port = stack.dhcp.bound_ports
    dhcp, tftp = status["services"]["dhcp"], status["services"]["tftp"]
    assert dhcp["state"] == "running" and dhcp["mode"] == "auto"
    assert dhcp["addresses"] == [f"127.0.0.1:{server_port}", f"127.0.0.1:{pxe_port}"]
    assert dhcp["counters"]["received"] == 0 and dhcp["counters"]["malformed"] == 0
    assert tftp["state"] == "running"
    assert tftp["addresses"] == [f"127.0.0.1:{stack.tftp.port}"]
    # Nothing built into the temporary state directory: discovery says what it lacks.
    discovery = status["discovery"]
    assert discovery["ready"] is False
    assert discovery["missing"] == [str(tmp_path / "discovery" / "vmlinuz"),
                                    str(tmp_path / "discovery" / "initrd.img")]
    assert "dragonfly discovery build" in discovery["how_to_obtain"]

    # A malformed DHCP packet is dropped and counted.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x01" * 10, ("127.0.0.1", server_port))

    async def counted() -> bool:
        c = (await status_of(client, admin))["services"]["dhcp"]["counters"]
        return bool(c["malformed"] == 1 and c["received"] == 1 and c["answered"] == 0)
    await until(counted, "the malformed packet to be counted")
    counters = (await status_of(client, admin))["services"]["dhcp"]["counters"]
    assert counters["malformed_by_reason"] == {"too short for a BOOTP header (N < N bytes)": 1}

    # A TFTP download and a refused one.
    got = await download(stack.tftp.port, "hello.bin")
    assert got.content == PAYLOAD
    missing = await download(stack.tftp.port, "nope.bin")
    assert missing.error is not None

    async def served() -> bool:
        c = (await status_of(client, admin))["services"]["tftp"]["counters"]
        return bool(c["transfers_ok"] == 1 and c["refused"] == 1)
    await until(served, "the TFTP transfers to be counted")
    tftp_counters = (await status_of(client, admin))["services"]["tftp"]["counters"]
    assert tftp_counters["bytes_sent"] == len(PAYLOAD) and tftp_counters["requests"] == 2

    page = await (await client.get("/", headers=admin.headers())).text()
    assert hidden(banner(page, "boot-edge-banner"))
    missing_note = banner(page, "discovery-missing")
    assert not hidden(missing_note) and "vmlinuz" in missing_note


async def test_failed_edge_says_why_and_the_dashboard_shows_it_live(aiohttp_client: Any,
                                                                    tmp_path: Path) -> None:
    client, admin, edge = await edge_client(aiohttp_client, tmp_path, loopback_builder(),
                                            **{"boot.interface": "dfnosuch0"})
    status = await status_of(client, admin)
    assert status["state"] == "failed" and status["failed"] == "dhcp"
    assert "cannot open the DHCP sockets on dfnosuch0" in status["reason"]
    dhcp, tftp = status["services"]["dhcp"], status["services"]["tftp"]
    assert dhcp["state"] == "failed" and dhcp["reason"] == status["reason"]
    assert tftp["state"] == "off" and "DHCP failed to start" in tftp["reason"]

    page = await (await client.get("/", headers=admin.headers())).text()
    section = banner(page, "boot-edge-banner")
    assert not hidden(section)
    assert "Boot services failed to start" in section and "dfnosuch0" in section
    assert hidden(banner(page, "discovery-missing"))  # the failure is the news
    assert json.loads(re.search(r'id="page-data">(.*?)</script>', page, re.S).group(1)
                      )["boot_edge"]["state"] == "failed"

    # The operator fixes the setting: the edge rebuilds, and the event stream says so.
    events = await client.get("/api/events", headers=admin.headers())
    assert b"event: hello" in await asyncio.wait_for(events.content.readuntil(b"\n\n"), 5)
    await edge.store.put("setting", "boot.interface", {"value": ""})
    frame = b""
    while b"event: boot_edge" not in frame:
        frame = await asyncio.wait_for(events.content.readuntil(b"\n\n"), 5)
    events.close()
    assert json.loads(frame.split(b"data: ", 1)[1])["data"]["state"] == "running"
    status = await status_of(client, admin)
    assert status["state"] == "running" and status["services"]["tftp"]["state"] == "running"
    page = await (await client.get("/", headers=admin.headers())).text()
    assert hidden(banner(page, "boot-edge-banner"))


async def edge_alone(tmp_path: Path, build: StackBuilder | None = None,
                     **settings: Any) -> tuple[BootEdge, SqliteStore, Fleet]:
    store = SqliteStore(":memory:")
    await store.open()
    fleet = Fleet(store)
    await fleet.start()
    config = Config.load(None, env={}, overrides={"server.state_dir": str(tmp_path),
                                                  **settings})
    kw = {"build": build} if build is not None else {}
    edge = BootEdge(config, store, fleet, BootLog(store), **kw)
    await edge.start()
    return edge, store, fleet


async def close(edge: BootEdge, store: SqliteStore, fleet: Fleet) -> None:
    await edge.stop()
    fleet.stop()
    await store.close()


async def test_a_busy_tftp_port_fails_the_edge_with_the_reason(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        edge, store, fleet = await edge_alone(tmp_path, loopback_builder(tftp_port=port))
        try:
            status = await edge.status()
            assert status["state"] == "failed" and status["failed"] == "tftp"
            assert f"cannot open the TFTP socket on UDP port {port}" in status["reason"]
            assert "in use" in status["reason"]
            assert status["services"]["tftp"]["state"] == "failed"
            # DHCP had started, and was stopped again: no half edge.
            assert status["services"]["dhcp"]["state"] == "off"
            assert edge.stack is None
            doc = await store.get("boot_edge", "state")
            assert doc is not None and doc.data["state"] == "failed"
        finally:
            await close(edge, store, fleet)


async def test_unbuildable_settings_fail_both_services(tmp_path: Path) -> None:
    def broken(*_: Any) -> BootStack:
        raise InvalidInput("boot.loader_uefi: no such loader")

    edge, store, fleet = await edge_alone(tmp_path, broken)
    try:
        status = await edge.status()
        assert status["state"] == "failed" and status["failed"] == "settings"
        assert {s["state"] for s in status["services"].values()} == {"failed"}
        assert all("no such loader" in s["reason"] for s in status["services"].values())
    finally:
        await close(edge, store, fleet)


async def test_dhcp_mode_off_is_off_not_failed(tmp_path: Path) -> None:
    edge, store, fleet = await edge_alone(tmp_path, **{"boot.dhcp_mode": "off",
                                                       "boot.address": "192.0.2.1"})
    try:
        status = await edge.status()
        assert status["state"] == "off" and "boot.dhcp_mode is off" in status["reason"]
        assert {s["state"] for s in status["services"].values()} == {"off"}
        assert status["boot_address"] == "192.0.2.1"
    finally:
        await close(edge, store, fleet)


async def test_the_demo_simulates_a_healthy_edge(aiohttp_client: Any) -> None:
    ctx = demo_context(tick=3600)
    client = await aiohttp_client(create_app(ctx))
    response = await client.get("/api/boot/status")
    status = await response.json()
    assert response.status == 200
    assert status["simulated"] is True and status["state"] == "running"
    assert status["services"]["dhcp"]["addresses"] == ["0.0.0.0:67", "0.0.0.0:4011"]
    assert status["discovery"]["ready"] is True
    before = status["services"]["dhcp"]["counters"]
    tftp_before = status["services"]["tftp"]["counters"]["transfers_ok"]
    assert before["answered"] > 0 and tftp_before > 0  # the seeded machines booted
    sim = ctx.services[0]
    assert isinstance(sim, Simulator)
    start = sim.boot_edge.started
    sim.boot_edge.clock = lambda: start + 7200  # two hours of LAN chatter
    after = (await (await client.get("/api/boot/status")).json())["services"]["dhcp"]
    assert after["counters"]["ignored"] == 1800 and after["counters"]["malformed"] == 4
    assert after["counters"]["received"] == (after["counters"]["answered"]
                                             + after["counters"]["ignored"]
                                             + after["counters"]["malformed"])
    page = await (await client.get("/")).text()
    assert hidden(banner(page, "boot-edge-banner"))
    assert hidden(banner(page, "discovery-missing"))


async def test_without_boot_services_the_status_is_503(aiohttp_client: Any) -> None:
    ctx = demo_context(tick=3600)
    ctx.edge = None
    client = await aiohttp_client(create_app(ctx))
    response = await client.get("/api/boot/status")
    assert response.status == 503 and "not running" in (await response.json())["error"]
    page = await (await client.get("/")).text()
    assert hidden(banner(page, "boot-edge-banner"))


def test_status_is_declared_before_the_mac_route() -> None:
    from dragonfly.app import build_api_router

    paths = [r.path for r in build_api_router().routes]
    assert paths.index("/api/boot/status") < paths.index("/api/boot/{mac}")


async def test_loader_over_http_answers_head_and_only_get_is_the_fetch(
        aiohttp_client: Any, tmp_path: Path) -> None:
    """EDK2's UEFI HTTP boot asks HEAD for the loader's size before it GETs it, and gives up
    on a 405 (seen with OVMF in tests/lab/test_lab_e2e.py). The boot doctor records the GET."""
    (tmp_path / "loaders").mkdir()
    (tmp_path / "loaders" / "ipxe.efi").write_bytes(PAYLOAD)
    client, _, edge = await edge_client(aiohttp_client, tmp_path, loopback_builder())
    stack = edge.stack
    assert stack is not None
    mac = "52:54:00:12:34:56"
    stack.bootlog.learn_ip("127.0.0.1", mac)
    head = await client.head("/boot/loaders/ipxe.efi")
    assert head.status == 200 and head.content_length == len(PAYLOAD)
    assert await head.read() == b""
    assert stack.bootlog.timeline(mac)["steps"] == []
    assert (await client.head("/boot/loaders/nope.efi")).status == 404
    get = await client.get("/boot/loaders/ipxe.efi")
    assert get.status == 200 and await get.read() == PAYLOAD
    steps = stack.bootlog.timeline(mac)["steps"]
    assert [(s["step"], s["detail"]["file"], s["count"]) for s in steps] == [
        ("http_loader", "ipxe.efi", 1)]
