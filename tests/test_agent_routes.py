"""The agent and boot HTTP routes: check-in, heartbeat, per-MAC iPXE script, kernel, initrd."""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dragonfly.agent import cpio, initramfs, routes
from dragonfly.boot.discovery import discovery_status
from dragonfly.config import Config
from dragonfly.context import AppContext
from dragonfly.domain.model import State
from dragonfly.edge import routes as edge_routes
from tests.lab.harness import RecordingBootLog, agent_app, make_context
from tests.test_agent_checkin import report_body

MAC = "52:54:00:12:34:56"
Client = TestClient[Any, Any]


async def named(ip: str | None, mac: str) -> str:
    return "node-" + mac[-2:]


@pytest.fixture
def ctx(tmp_path: Path) -> AppContext:
    return make_context(tmp_path / "state", resolve_name=named, poll_seconds=4)


@pytest.fixture
async def client(ctx: AppContext, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(agent_app(ctx))


async def test_checkin_then_heartbeat(client: Client, ctx: AppContext) -> None:
    r = await client.post("/api/agent/checkin", json=report_body())
    assert r.status == 200, await r.text()
    answer = await r.json()
    assert answer["action"] == "wait" and answer["poll_seconds"] == 4
    assert answer["name"] == "node-56" and answer["state"] == "discovered"
    machine = ctx.fleet.get_machine(answer["machine_id"])
    assert machine.ip == "127.0.0.1"  # the address the request came from
    r = await client.post("/api/agent/heartbeat",
                          json={"machine_id": machine.id, "mac": MAC, "uptime_seconds": 3})
    assert r.status == 200 and (await r.json())["action"] == "wait"
    ctx.commands.queue(machine.id, "reboot")
    r = await client.post("/api/agent/heartbeat", json={"machine_id": machine.id})
    assert (await r.json())["action"] == "reboot"
    r = await client.post("/api/agent/heartbeat", json={"machine_id": "gone"})
    assert r.status == 404 and "check in again" in (await r.json())["error"]


@pytest.mark.parametrize("body, status, message", [
    (b"{nope", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b'{"nics": [{"mac": "xx"}]}', 400, "report.nics[0].mac is not a MAC"),
    (b'{"cpu": {"threads": "many"}, "boot_mac": "52:54:00:12:34:56"}', 400,
     "report.cpu.threads must be an integer"),
    (b'{"dmi": {"vendor": "' + b"v" * 300_000 + b'"}}', 413, "larger than"),
])
async def test_checkin_rejects_bad_bodies(client: Client, body: bytes, status: int,
                                          message: str) -> None:
    r = await client.post("/api/agent/checkin", data=body,
                          headers={"Content-Type": "application/json"})
    assert r.status == status
    assert message in (await r.json())["error"]


async def test_ipxe_script_unknown_machine_boots_discovery(client: Client) -> None:
    r = await client.get("/boot/52-54-00-AA-BB-CC.ipxe", headers={"Host": "10.0.0.5:3000"})
    assert r.status == 200 and r.content_type == "text/plain"
    text = await r.text()
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    kernel = next(line for line in lines if line.startswith("kernel "))
    assert kernel.split()[1] == "http://10.0.0.5:3000/boot/discovery/vmlinuz?mac=52:54:00:aa:bb:cc"
    assert "initrd=initrd.img" in kernel.split()
    assert "dragonfly.url=http://10.0.0.5:3000" in kernel.split()
    assert "dragonfly.mac=52:54:00:aa:bb:cc" in kernel.split()
    assert "console=ttyS0,115200n8" in kernel.split()
    assert ("initrd --name initrd.img "
            "http://10.0.0.5:3000/boot/discovery/initrd.img?mac=52:54:00:aa:bb:cc") in lines
    assert lines[-1] == "boot"


async def test_ipxe_script_installed_machine_boots_its_disk(client: Client,
                                                            ctx: AppContext) -> None:
    r = await client.post("/api/agent/checkin", json=report_body())
    machine_id = (await r.json())["machine_id"]
    text = await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert "kernel " in text  # discovered: discovery again
    for move in ("adopt", "deploy", "deployed"):
        await ctx.fleet.transition(machine_id, move)
    assert ctx.fleet.get_machine(machine_id).state is State.INSTALLED
    # Any of its MACs finds it.
    text = await (await client.get("/boot/52:54:00:ab:cd:ef.ipxe")).text()
    assert "kernel " not in text
    assert "sanboot --no-describe --drive 0x80" in text and "exit" in text


async def test_ipxe_script_rejects_bad_mac_and_bad_host(client: Client) -> None:
    r = await client.get("/boot/not-a-mac.ipxe")
    assert r.status == 400 and "not a MAC" in (await r.json())["error"]
    # A Host header that could smuggle words onto the kernel command line is not used.
    r = await client.get(f"/boot/{MAC}.ipxe", headers={"Host": "evil host"})
    text = await r.text()
    assert "evil" not in text
    assert f"dragonfly.url=http://127.0.0.1:{client.port}" in text


async def test_public_url_wins(tmp_path: Path,
                               aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    ctx = make_context(tmp_path)
    values = ctx.config.as_dict()
    values["server.public_url"] = "http://boot.example:8080/"
    ctx.config = Config(values)
    client = await aiohttp_client(agent_app(ctx))
    text = await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert "dragonfly.url=http://boot.example:8080 " in text


async def test_missing_discovery_files_say_what_and_how(client: Client, ctx: AppContext
                                                        ) -> None:
    for path, what in (("vmlinuz", "kernel"), ("initrd.img", "initrd")):
        r = await client.get(f"/boot/discovery/{path}")
        assert r.status == 404
        body = await r.json()
        missing = str(ctx.config.state_dir / "discovery" / path)
        assert body["error"] == f"the discovery {what} is missing: {missing} does not exist"
        assert body["detail"]["missing"] == missing
        assert "dragonfly discovery build" in body["detail"]["how_to_obtain"]
    status = discovery_status(ctx.config)
    assert not status["ready"] and len(status["missing"]) == 2


def write_stock(ctx: AppContext, size_mod4: int) -> bytes:
    d = ctx.config.state_dir / "discovery"
    d.mkdir(parents=True, exist_ok=True)
    stock = gzip.compress(cpio.pack([cpio.regular("init", b"#!/bin/sh\necho stock\n", 0o755),
                                     cpio.regular("bin/busybox", os.urandom(700_000), 0o755)]))
    stock += b"\0" * ((size_mod4 - len(stock)) % 4)  # gzip ignores trailing zeros
    assert len(stock) % 4 == size_mod4
    (d / "initrd.img").write_bytes(stock)
    (d / "vmlinuz").write_bytes(b"kernel-bytes" * 1000)
    return stock


@pytest.mark.parametrize("size_mod4", [0, 1, 2, 3])
async def test_initrd_is_stock_plus_overlay(client: Client, ctx: AppContext,
                                            size_mod4: int) -> None:
    stock = write_stock(ctx, size_mod4)
    r = await client.get("/boot/discovery/initrd.img?mac=52:54:00:12:34:56")
    assert r.status == 200
    body = await r.read()
    overlay = initramfs.cached_overlay()
    assert int(r.headers["Content-Length"]) == len(body)
    assert body == stock + initramfs.padding_after(len(stock)) + overlay.data
    assert (len(stock) + len(initramfs.padding_after(len(stock)))) % 4 == 0
    unpacked = cpio.unpack_all(body)
    assert unpacked.ok, unpacked.invalid_reason
    files = unpacked.by_name()
    assert files["init"].data == initramfs.agent_file("init.sh")  # ours wins
    assert files["dragonfly/agent.sh"].data == initramfs.agent_file("agent.sh")
    assert len(files["bin/busybox"].data) == 700_000  # the stock content is still there
    etag = r.headers["ETag"]
    again = await client.get("/boot/discovery/initrd.img", headers={"If-None-Match": etag})
    assert again.status == 304
    assert discovery_status(ctx.config)["ready"]


async def test_kernel_is_served_as_is(client: Client, ctx: AppContext) -> None:
    write_stock(ctx, 0)
    r = await client.get("/boot/discovery/vmlinuz")
    assert r.status == 200 and await r.read() == b"kernel-bytes" * 1000


async def test_observer_sees_every_boot_step(client: Client, ctx: AppContext) -> None:
    write_stock(ctx, 0)
    ctx.bootlog = bootlog = RecordingBootLog(ctx.store)
    seen = bootlog.seen
    await client.get(f"/boot/{MAC}.ipxe")
    await client.get(f"/boot/discovery/vmlinuz?mac={MAC}")
    await client.get(f"/boot/discovery/initrd.img?mac={MAC}")
    await client.post("/api/agent/checkin", json=report_body())
    assert seen == [(MAC, "ipxe_script"), (MAC, "kernel"), (MAC, "initrd"), (MAC, "checkin")]


def test_routes_are_declared_for_the_agent() -> None:
    # The agent's own routes, and the boot edge's files it boots from (not the boot doctor's
    # /api/boot views or the loaders, which the edge serves to firmware).
    edge_files = [r for r in edge_routes.api.routes
                  if r.path.startswith("/boot/") and not r.path.startswith("/boot/loaders/")]
    declared = {(r.method, r.path): r for r in [*routes.api.routes, *edge_files]}
    assert set(declared) == {
        ("POST", "/api/agent/checkin"), ("POST", "/api/agent/heartbeat"),
        ("GET", "/boot/{mac}.ipxe"), ("GET", "/boot/discovery/vmlinuz"),
        ("GET", "/boot/discovery/initrd.img")}
    assert all(r.access == "agent" for r in declared.values())
