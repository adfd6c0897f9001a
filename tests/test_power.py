"""Power: the driver registry and the fake driver, BMC records (passwords encrypted at rest,
write-only in the API), Wake-on-LAN's magic packet captured on a loopback UDP socket, the
service's monitoring, and the routes (admin only, molly guard, audit, bulk)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

import dragonfly.app as app_module
from dragonfly.errors import InvalidInput
from dragonfly.http.router import ApiRouter
from dragonfly.power import routes as power_routes
from dragonfly.power.drivers import default_registry
from dragonfly.power.drivers.base import ACTIONS, PowerError, Unsupported
from dragonfly.power.drivers.fake import BMCS, FakeDriver
from dragonfly.power.drivers.wol import WolDriver, directed_broadcast
from dragonfly.power.magic import magic_packet, secureon_bytes
from dragonfly.power.records import BMC, SecretBox
from dragonfly.power.service import POWER, PowerService
from dragonfly.store import SqliteStore
from tests.test_auth_fixtures import (
    add_user,
    ctx_of_client,
    installed_context,
    login,
    setup_admin,
)

SECRET = "bmc-password-never-shown"  # noqa: S105


async def open_store() -> SqliteStore:
    store = SqliteStore(":memory:")
    await store.open()
    return store


def test_registry_declares_what_each_driver_supports() -> None:
    specs = default_registry().specs
    assert set(specs) == {"ipmi", "redfish", "wol", "openjbod", "fake"}
    assert specs["wol"].supports == {"on"}
    assert {"on", "off", "cycle", "state", "health"} == set(specs["openjbod"].supports)
    assert set(ACTIONS) <= specs["ipmi"].supports and set(ACTIONS) <= specs["redfish"].supports


async def test_fake_driver_lags_like_a_bmc() -> None:
    BMCS.clear()
    bmc = FakeDriver("fake-lag", delay=0.2)
    await bmc.power_on()
    assert await bmc.power_state() == "off"
    await asyncio.sleep(0.25)
    assert await bmc.power_state() == "on"
    await bmc.set_boot_device("pxe")
    assert BMCS["fake-lag"].boot == "pxe"
    assert await bmc.watts() and await bmc.health() == "ok"
    with pytest.raises(PowerError) as caught:
        await FakeDriver("unreachable-1").power_state()
    assert caught.value.reason == "timeout"


async def test_wol_magic_packet_reaches_the_broadcast_address() -> None:
    """Captured on a UDP socket bound to 127.0.0.1 (the driver pointed at it as its
    broadcast); the directed broadcast itself is computed from the interface below."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(2)
        port = sink.getsockname()[1]
        driver = WolDriver("52:54:00:AB:cd:01", broadcast="127.0.0.1", port=port,
                           password="01:02:03:04:05:06", repeat=2)
        await driver.power_on()
        packets = [sink.recvfrom(200) for _ in range(2)]
    mac = bytes.fromhex("525400abcd01")
    for data, (host, _port) in packets:
        assert host == "127.0.0.1"
        assert data == b"\xff" * 6 + mac * 16 + bytes([1, 2, 3, 4, 5, 6])
        assert len(data) == 108
    assert driver.supports == {"on"}
    with pytest.raises(Unsupported):
        await driver.power_off()


def test_magic_packet_and_secureon() -> None:
    assert len(magic_packet("aa-bb-cc-dd-ee-ff")) == 102
    assert secureon_bytes("192.168.1.2") == bytes([192, 168, 1, 2])
    assert secureon_bytes("") == b""
    with pytest.raises(InvalidInput):
        secureon_bytes("hello")
    with pytest.raises(InvalidInput):
        magic_packet("aa:bb")


def test_directed_broadcast_of_an_interface() -> None:
    assert directed_broadcast("lo") == "127.255.255.255"
    with pytest.raises(PowerError) as caught:
        directed_broadcast("no-such-if0")
    assert "no-such-if0" in caught.value.message


async def test_secret_box_key_file(tmp_path: Path) -> None:
    box = SecretBox(tmp_path)
    sealed = box.seal(SECRET)
    assert SECRET not in sealed
    key = tmp_path / "bmc.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert SecretBox(tmp_path).open(sealed) == SECRET  # the same key, read back
    assert SecretBox(None).seal("") == ""


async def test_records_are_validated_and_the_password_is_write_only(tmp_path: Path) -> None:
    store = await open_store()
    service = PowerService(store, tmp_path, monitor=False)
    await service.start()
    try:
        with pytest.raises(InvalidInput):
            await service.set_bmc("m", {"driver": "telnet"})
        with pytest.raises(InvalidInput):
            await service.set_bmc("m", {"driver": "ipmi"})  # no address
        with pytest.raises(InvalidInput):
            await service.set_bmc("m", {"driver": "wol", "mac": "zz"})
        with pytest.raises(InvalidInput):
            await service.set_bmc("m", {"driver": "redfish", "address": "bmc",
                                        "system": "/x"})
        with pytest.raises(InvalidInput):
            await service.set_bmc("m", {"driver": "ipmi", "address": "bmc", "colour": 1})
        saved = await service.set_bmc("m", {"driver": "ipmi", "address": "10.0.0.5",
                                            "user": "root", "password": SECRET})
        assert saved["has_password"] and "password" not in saved
        kept = await service.set_bmc("m", {"address": "10.0.0.6"})  # no password: kept
        assert kept["has_password"] and kept["address"] == "10.0.0.6"
        doc = await store.get(BMC, "m")
        assert doc is not None and SECRET not in json.dumps(doc.data)
        assert service.record("m").password == SECRET
        cleared = await service.set_bmc("m", {"password": ""})
        assert cleared["has_password"] is False
    finally:
        await service.stop()
        await store.close()


async def test_monitoring_polls_with_history_and_backs_off(tmp_path: Path) -> None:
    BMCS.clear()
    store = await open_store()
    service = PowerService(store, tmp_path, interval=0.2, history=3, write_every=0)
    await service.start()
    try:
        await service.set_bmc("good", {"driver": "fake", "address": "fake-good"})
        await service.set_bmc("gone", {"driver": "fake", "address": "unreachable-bmc"})
        await service.act("good", "on")
        for _ in range(100):
            await asyncio.sleep(0.05)
            good = await service.status("good")
            if len(good["watts_history"]) >= 3:
                break
        assert good["state"] == "on" and good["watts"] and good["error"] == ""
        assert len(good["watts_history"]) == 3  # the last N samples only
        assert good["supports"] == sorted(default_registry().specs["fake"].supports)
        gone = await service.status("gone")
        assert gone["failures"] >= 1 and gone["reason"] == "timeout"
        assert "did not answer" in gone["error"]
        # Backed off: the next check is further away than the interval.
        assert gone["next_check"] - gone["checked_at"] > 0.2 * 0.85
        doc = await store.get(POWER, "good")
        assert doc is not None and doc.data["state"] == "on"
        await service.delete_bmc("gone")
        assert await store.get(POWER, "gone") is None
        assert (await service.status("gone"))["configured"] is False
    finally:
        await service.stop()
        await store.close()


async def test_concurrency_is_capped(tmp_path: Path) -> None:
    BMCS.clear()
    store = await open_store()
    service = PowerService(store, tmp_path, interval=0.05, concurrency=4)
    running = peak = 0
    original = FakeDriver.power_state

    async def slow_state(self: FakeDriver) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return await original(self)

    FakeDriver.power_state = slow_state  # type: ignore[method-assign]
    try:
        await service.start()
        for n in range(40):
            await service.set_bmc(f"m{n}", {"driver": "fake", "address": f"fake-{n}"})
        await asyncio.sleep(0.6)
        assert 1 < peak <= 4
    finally:
        FakeDriver.power_state = original  # type: ignore[method-assign]
        await service.stop()
        await store.close()


# --- routes ---------------------------------------------------------------------------------

@pytest.fixture
def power_routes_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lead wires in app.py: the power routes among the API's."""
    original = app_module.build_api_router

    def build() -> ApiRouter:
        router = original()
        router.extend(power_routes.api)
        return router

    monkeypatch.setattr(app_module, "build_api_router", build)


async def power_client(aiohttp_client: Any, tmp_path: Path) -> Any:
    from aiohttp import DummyCookieJar

    ctx = installed_context()
    # Not the demo's fake BMCs (its machines all get one): this test sets its own records.
    ctx.services = [s for s in ctx.services if s.name not in ("power", "demo BMCs")]
    service = PowerService(ctx.store, tmp_path, interval=3600, registry=default_registry())
    ctx.power = service
    ctx.services.append(service)
    return await aiohttp_client(app_module.create_app(ctx), cookie_jar=DummyCookieJar())


async def test_routes_guard_audit_and_never_show_the_password(
        aiohttp_client: Any, tmp_path: Path, power_routes_installed: None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    BMCS.clear()
    client = await power_client(aiohttp_client, tmp_path)
    admin = await setup_admin(client)
    h = admin.headers()
    await add_user(client, admin, "ivy")
    ivy = await login(client, "ivy", "user password 22")
    items = (await (await client.get("/api/machines?limit=3", headers=h)).json())["items"]
    m1, m2, m3 = (m["id"] for m in items)

    none = await (await client.get(f"/api/machines/{m1}/power", headers=h)).json()
    assert none["configured"] is False and none["actions"] == []
    unset = await (await client.get(f"/api/machines/{m1}/bmc", headers=h)).json()
    assert unset["configured"] is False and "password" not in unset
    body = {"driver": "fake", "address": "fake-r1", "user": "admin", "password": SECRET}
    assert (await client.put(f"/api/machines/{m1}/bmc", json=body,
                             headers=ivy.headers())).status == 403
    put = await client.put(f"/api/machines/{m1}/bmc", json=body, headers=h)
    assert put.status == 200, await put.text()
    for m, addr in ((m2, "fake-r2"), (m3, "fake-r3")):
        await client.put(f"/api/machines/{m}/bmc", json={"driver": "fake", "address": addr},
                         headers=h)
    # The record (address, user) is for admins; a user sees only the power state.
    assert (await client.get(f"/api/machines/{m1}/bmc", headers=ivy.headers())).status == 403
    shown = await client.get(f"/api/machines/{m1}/bmc", headers=h)
    shown_text = await shown.text()
    assert shown.status == 200 and SECRET not in shown_text
    assert json.loads(shown_text)["has_password"] is True

    test = await (await client.post(f"/api/machines/{m1}/bmc/test", headers=h)).json()
    assert test["ok"] is True and [s["step"] for s in test["steps"]] == [
        "state", "health", "watts"]

    assert (await client.post(f"/api/machines/{m1}/power/on",
                              headers=ivy.headers())).status == 403
    on = await client.post(f"/api/machines/{m1}/power/on", headers=h)
    assert on.status == 200, await on.text()
    assert (await client.post(f"/api/machines/{m1}/power/explode", headers=h)).status == 400
    status = await (await client.get(f"/api/machines/{m1}/power", headers=h)).json()
    assert "cycle" in status["actions"] and status["configured"]

    # A node lock and safety mode refuse power actions with 423.
    assert (await client.put(f"/api/machines/{m2}/lock", json={"reason": "burn-in"},
                             headers=h)).status == 200
    locked = await client.post(f"/api/machines/{m2}/power/off", headers=h)
    assert locked.status == 423 and "burn-in" in (await locked.json())["error"]
    bulk = await (await client.post("/api/power/bulk/off", json={
        "machines": [m1, m2, m3, "no-such-machine"]}, headers=h)).json()
    by = {r["machine"]: r for r in bulk["results"]}
    assert by[m1]["ok"] and by[m3]["ok"]
    assert by[m2]["status"] == 423 and by["no-such-machine"]["status"] == 404
    assert (bulk["ok"], bulk["failed"]) == (2, 2)
    await client.put("/api/safety", json={"enabled": True, "reason": "freeze"}, headers=h)
    frozen = await client.post(f"/api/machines/{m1}/power/cycle", headers=h)
    assert frozen.status == 423 and "safety mode" in (await frozen.json())["error"]
    await client.put("/api/safety", json={"enabled": False}, headers=h)

    audit = await (await client.get("/api/audit?action=machine.power", headers=h)).json()
    seen = {(e["action"], e["machine"], e["outcome"]) for e in audit}
    assert ("machine.power.on", m1, "ok") in seen
    assert ("machine.power.off", m2, "denied") in seen
    assert ("machine.power.off", m3, "ok") in seen
    assert ("machine.power.cycle", m1, "denied") in seen

    # A BMC that fails: 502 with the reason, audited as failed.
    await client.put(f"/api/machines/{m3}/bmc", json={"address": "unreachable-3"}, headers=h)
    failed = await client.post(f"/api/machines/{m3}/power/on", headers=h)
    assert failed.status == 502 and "did not answer" in (await failed.json())["error"]
    audit = await (await client.get("/api/audit?action=machine.power.on", headers=h)).json()
    assert any(e["machine"] == m3 and e["outcome"] == "failed" for e in audit)

    assert (await client.delete(f"/api/machines/{m1}/bmc", headers=h)).status == 200
    gone = await (await client.get(f"/api/machines/{m1}/bmc", headers=h)).json()
    assert gone["configured"] is False

    store = ctx_of_client(client).store
    for kind in ("audit", "power", "bmc", "history"):
        for doc in await store.list(kind):
            assert SECRET not in json.dumps(doc.data), kind
    assert SECRET not in caplog.text


async def test_closing_logs_out_at_once_and_within_its_limit() -> None:
    # 40 logouts of 0.5 s each, one of them to a BMC that never answers: together, and the
    # shutdown is bounded (one at a time they took 20 s and more; systemd allows 20).
    from dragonfly.power.drivers.base import DriverEnv

    env = DriverEnv(timeout=30.0)
    done: list[int] = []

    def logout(n: int) -> Any:
        async def run() -> None:
            await asyncio.sleep(3600 if n == 0 else 0.5)
            done.append(n)
        return run
    for n in range(40):
        env.on_close(logout(n))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await env.close(limit=2.0)
    took = loop.time() - started
    assert 1.9 < took < 3.0, took
    assert sorted(done) == list(range(1, 40))


STUCK_SCRIPT = '''
import asyncio, sys, time
from pathlib import Path

from dragonfly.power.drivers import default_registry
from dragonfly.power.drivers.base import STATE, DriverEnv, PowerDriver
from dragonfly.power.service import PowerService
from dragonfly.store import SqliteStore


class Stuck(PowerDriver):
    """A stand-in for a blocking BMC client that never returns (pyghmi in a call to a BMC
    that stopped answering is the real case; it gives up after seconds, this never does)."""
    name = "stuck"
    supports = frozenset({STATE})

    def __init__(self, env: DriverEnv) -> None:
        super().__init__("stuck")
        self.env = env

    async def power_state(self) -> str:
        return await self.env.run_blocking("stuck", lambda: time.sleep(120) or "on", "state")


async def main() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    registry = default_registry()
    registry.register("stuck", Stuck.supports, lambda r, env, i: Stuck(env), "stand-in")
    service = PowerService(store, Path(sys.argv[1]), timeout=1.0, interval=3600,
                           registry=registry)
    await service.start()
    await service.set_bmc("m", {"driver": "stuck", "address": "stuck"})  # polled at once
    while (await service.status("m"))["reason"] != "timeout":
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await service.stop()
    await store.close()
    print(f"stopped {time.monotonic() - started:.2f}", flush=True)

asyncio.run(main())
print("loop closed", flush=True)
'''


def test_a_stuck_bmc_call_does_not_hold_the_process_exit(tmp_path: Path) -> None:
    # systemd kills the service 20 s after SIGTERM. A thread stuck in a BMC call must not
    # hold stop() beyond its 10 s bound, nor the loop's close (asyncio.run joins its default
    # executor without a limit), nor the interpreter's exit (which joins ThreadPoolExecutor
    # threads): the BMC pool's threads are daemons, and nothing is left in the default one.
    import subprocess
    import sys
    import time

    script = tmp_path / "stuck.py"
    script.write_text(STUCK_SCRIPT)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("stopped ") and lines[1] == "loop closed", done.stdout
    assert float(lines[0].split()[1]) < 10.5
    assert took < 20, took  # start, a 1 s poll, the 10 s stop; not the 120 s call
