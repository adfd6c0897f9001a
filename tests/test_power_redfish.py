"""The Redfish driver against sushy-emulator (its fake systems driver, HTTP Basic auth from a
bcrypt htpasswd file: it has no SessionService), and against a stand-in aiohttp Redfish
service for what the emulator lacks: sessions, ETags, power draw (EnvironmentMetrics and the
older Power resource; no simulator here reports watts). OpenJBOD likewise against a stand-in
of its controller's API (no OpenJBOD emulator exists).

The emulator lands a power change 1-11 s after it is asked (random, not configurable): each
transition runs on its own system, concurrently, and the tests poll until the state lands."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import web

from dragonfly.power.drivers.base import DriverEnv, PowerError, Status
from dragonfly.power.drivers.openjbod import OpenJbodDriver
from dragonfly.power.drivers.redfish import RedfishDriver
from dragonfly.power.service import PowerService
from dragonfly.store import SqliteStore
from tests.conftest import free_port, wait_http

PASSWORD = "redfish-secret-9"  # noqa: S105
SYSTEMS = {"node-on": "On", "node-off": "Off", "node-reset": "On", "node-boot": "Off"}
UUIDS = {name: f"27946b59-9e44-4fa7-8e91-f3527a1ef0{n:02d}" for n, name in enumerate(SYSTEMS)}


@pytest.fixture(scope="module")
def sushy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sushy")
    (root / "htpasswd").write_text(
        "admin:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    port = free_port()
    systems = [{"uuid": UUIDS[name], "name": name, "power_state": state,
                "external_notifier": False, "nics": [{"mac": f"52:54:00:12:34:{n:02x}"}]}
               for n, (name, state) in enumerate(SYSTEMS.items())]
    (root / "state").mkdir()
    (root / "config.py").write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_STATE_DIR = '{root / 'state'}'\n"
        f"SUSHY_EMULATOR_AUTH_FILE = '{root / 'htpasswd'}'\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n")
    exe = Path(sys.executable).parent / "sushy-emulator"
    assert exe.exists(), "sushy-emulator (pip sushy-tools, the test extras) is needed"
    log = open(root / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "--config", str(root / "config.py")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:  # the root is public; answering 200 means it is up
            try:
                wait_http(f"http://127.0.0.1:{port}/redfish/v1/", 1, proc)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
async def env() -> AsyncIterator[DriverEnv]:
    env = DriverEnv(timeout=10.0, min_interval=0.0)
    try:
        yield env
    finally:
        await env.close()


def system(base: str, env: DriverEnv, name: str, password: str = PASSWORD) -> RedfishDriver:
    return RedfishDriver(base, "admin", password, env,
                         system=f"/redfish/v1/Systems/{UUIDS[name]}")


async def until(driver: RedfishDriver, state: str, limit: float = 20.0) -> float:
    started = time.monotonic()
    while (now := await driver.power_state()) != state:
        assert time.monotonic() - started < limit, f"still {now} after {limit} s"
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def test_power_operations_land_on_the_emulator(sushy: str, env: DriverEnv) -> None:
    on, off, reset = (system(sushy, env, n) for n in ("node-off", "node-on", "node-reset"))
    assert await on.power_state() == "off"
    assert await off.power_state() == "on"
    await on.power_on()
    await off.power_off()
    await reset.reset()  # the emulator goes Off at once and On 1-11 s later
    await asyncio.gather(until(on, "on"), until(off, "off"), until(reset, "on"))
    # Asking for the state it is already in is fine (the emulator accepts it quietly).
    await on.power_on()
    assert await on.health() == "ok"


async def test_unsupported_reset_types_are_not_sent(sushy: str, env: DriverEnv) -> None:
    # The emulator offers no PowerCycle (and answers 501 to it): cycle becomes off then on.
    driver = system(sushy, env, "node-boot")
    system_doc, _ = await driver._system()
    target, allowed = await driver._allowed(system_doc)
    assert "PowerCycle" not in allowed and "ForceOff" in allowed
    assert target.endswith("/Actions/ComputerSystem.Reset")


async def test_boot_override_and_wrong_credentials(sushy: str, env: DriverEnv) -> None:
    driver = system(sushy, env, "node-boot")
    await driver.set_boot_device("pxe")
    doc, _ = await driver._system()
    assert doc["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    await driver.set_boot_device("disk")
    doc, _ = await driver._system()
    assert doc["Boot"]["BootSourceOverrideTarget"] == "Hdd"
    bad = system(sushy, env, "node-boot", password="wrong")
    with pytest.raises(PowerError) as caught:
        await bad.power_state()
    assert caught.value.reason == "credentials"
    assert "refused the credentials" in caught.value.message
    # The emulator has one system per node here: without a system path, say which to pick.
    unnamed = RedfishDriver(sushy, "admin", PASSWORD, env)
    with pytest.raises(PowerError) as many:
        await unnamed.power_state()
    assert "manages 4 systems" in many.value.message


async def test_tls_is_verified_by_default(env: DriverEnv) -> None:
    driver = RedfishDriver("127.0.0.1:1", "admin", PASSWORD, env)
    assert driver.base == "https://127.0.0.1:1"
    with pytest.raises(PowerError) as caught:
        await driver.power_state()
    assert caught.value.reason == "unreachable"
    assert caught.value.message.startswith("no route to the BMC at https://127.0.0.1:1")


# --- a stand-in Redfish BMC: sessions, ETags, watts, quirks -------------------------------

class StandIn:
    """A Redfish service with a SessionService, ETags, a BootSourceOverrideMode it refuses,
    409 for On when on, and the power draw in EnvironmentMetrics (chassis 1) or the older
    Power resource (chassis 2)."""

    def __init__(self, chassis: str = "env") -> None:
        self.chassis = chassis
        self.state = "On"
        self.etag = 'W/"1"'
        self.tokens: set[str] = set()
        self.deleted: list[str] = []
        self.patches: list[tuple[dict[str, Any], str]] = []
        self.resets: list[str] = []
        self.basic_seen = False
        self.requests: list[str] = []
        app = web.Application(middlewares=[self.log])
        app.router.add_get("/redfish/v1/", self.root)
        app.router.add_post("/redfish/v1/SessionService/Sessions", self.login)
        app.router.add_delete("/redfish/v1/SessionService/Sessions/{n}", self.logout)
        app.router.add_get("/redfish/v1/Systems/1", self.system)
        app.router.add_patch("/redfish/v1/Systems/1", self.patch)
        app.router.add_post("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", self.reset)
        app.router.add_get("/redfish/v1/Chassis/1", self.chassis_doc)
        app.router.add_get("/redfish/v1/Chassis/1/EnvironmentMetrics", self.metrics)
        app.router.add_get("/redfish/v1/Chassis/1/Power", self.power)
        self.app = app

    @web.middleware
    async def log(self, request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        return await handler(request)

    def authed(self, request: web.Request) -> bool:
        if request.headers.get("Authorization"):
            self.basic_seen = True
        return request.headers.get("X-Auth-Token", "") in self.tokens

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({"Links": {"Sessions": {
            "@odata.id": "/redfish/v1/SessionService/Sessions"}}})

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body != {"UserName": "admin", "Password": PASSWORD}:
            return web.json_response({"error": {"message": "bad"}}, status=401)
        token = f"tok{len(self.tokens)}"
        self.tokens.add(token)
        return web.json_response({}, status=201, headers={
            "X-Auth-Token": token,
            "Location": f"/redfish/v1/SessionService/Sessions/{len(self.tokens)}"})

    async def logout(self, request: web.Request) -> web.Response:
        self.deleted.append(request.headers.get("X-Auth-Token", ""))
        return web.Response(status=204)

    async def system(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        return web.json_response({
            "PowerState": self.state, "Status": {"Health": "Warning"},
            "Boot": {"BootSourceOverrideMode": "UEFI", "BootSourceOverrideTarget": "None"},
            "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]},
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "PowerCycle"]}}},
            headers={"ETag": self.etag})

    async def patch(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        body = await request.json()
        self.patches.append((body, request.headers.get("If-Match", "")))
        if request.headers.get("If-Match") != self.etag:
            return web.Response(status=412)
        if "BootSourceOverrideMode" in body["Boot"]:
            return web.json_response({"error": {"@Message.ExtendedInfo": [
                {"Message": "BootSourceOverrideMode is read-only"}]}}, status=400)
        self.etag = 'W/"2"'
        return web.Response(status=204)

    async def reset(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        kind = (await request.json())["ResetType"]
        self.resets.append(kind)
        if kind == "On" and self.state == "On":
            return web.json_response({"error": {"message": "already on"}}, status=409)
        self.state = {"On": "On", "ForceOff": "Off"}.get(kind, self.state)
        return web.Response(status=204)

    async def chassis_doc(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        base = "/redfish/v1/Chassis/1"
        link = ({"EnvironmentMetrics": {"@odata.id": f"{base}/EnvironmentMetrics"}}
                if self.chassis == "env" else {"Power": {"@odata.id": f"{base}/Power"}})
        return web.json_response(link)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.json_response({"PowerWatts": {"Reading": 412.5}})

    async def power(self, request: web.Request) -> web.Response:
        return web.json_response({"PowerControl": [{"PowerConsumedWatts": 233}]})


async def serve(aiohttp_server: Any, app: web.Application) -> str:
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


async def test_sessions_etags_quirks_and_watts(aiohttp_server: Any, env: DriverEnv,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bmc = StandIn("env")
    base = await serve(aiohttp_server, bmc.app)
    driver = RedfishDriver(base, "admin", PASSWORD, env, system="/redfish/v1/Systems/1")
    assert await driver.power_state() == "on"
    assert await driver.health() == "warning"
    assert await driver.watts() == 412.5
    await driver.power_on()  # 409 "already on" counts as done
    await driver.power_cycle()  # the BMC has PowerCycle: sent as such
    assert bmc.resets == ["On", "PowerCycle"]
    await driver.set_boot_device("pxe")
    # First with the mode (refused with 400), then without; If-Match the ETag every time,
    # BootSourceOverrideEnabled every time.
    assert [(b["Boot"].get("BootSourceOverrideMode"), m) for b, m in bmc.patches] == [
        ("UEFI", 'W/"1"'), (None, 'W/"1"')]
    assert all(b["Boot"]["BootSourceOverrideEnabled"] == "Once" for b, _ in bmc.patches)
    assert not bmc.basic_seen  # a session, never Basic, when the BMC has sessions
    await driver.close()
    assert bmc.deleted == ["tok0"]
    assert PASSWORD not in caplog.text


async def test_watts_from_the_older_power_resource(aiohttp_server: Any, env: DriverEnv) -> None:
    bmc = StandIn("power")
    base = await serve(aiohttp_server, bmc.app)
    driver = RedfishDriver(base, "admin", PASSWORD, env, system="/redfish/v1/Systems/1")
    assert await driver.watts() == 233.0


async def test_sessions_are_renewed_when_the_bmc_forgets_them(aiohttp_server: Any,
                                                              env: DriverEnv) -> None:
    bmc = StandIn()
    base = await serve(aiohttp_server, bmc.app)
    driver = RedfishDriver(base, "admin", PASSWORD, env, system="/redfish/v1/Systems/1")
    await driver.power_state()
    bmc.tokens.clear()  # the BMC restarted
    assert await driver.power_state() == "on"
    assert len(bmc.tokens) == 1


async def test_one_read_returns_state_health_and_watts_from_one_get(
        aiohttp_server: Any, env: DriverEnv) -> None:
    # Monitoring's read: the system once (state and health from the same document), then the
    # draw; later reads go straight to where the draw was found.
    bmc = StandIn("env")
    base = await serve(aiohttp_server, bmc.app)
    driver = RedfishDriver(base, "admin", PASSWORD, env, system="/redfish/v1/Systems/1")
    assert await driver.read_status() == Status("on", "warning", 412.5)
    assert bmc.requests.count("GET /redfish/v1/Systems/1") == 1, bmc.requests
    seen = len(bmc.requests)
    bmc.state = "Off"
    assert await driver.read_status() == Status("off", "warning", 412.5)
    assert bmc.requests[seen:] == ["GET /redfish/v1/Systems/1",
                                   "GET /redfish/v1/Chassis/1/EnvironmentMetrics"]
    # The single reads still work on their own.
    assert (await driver.power_state(), await driver.health(), await driver.watts()) == (
        "off", "warning", 412.5)
    older = StandIn("power")
    driver = RedfishDriver(await serve(aiohttp_server, older.app), "admin", PASSWORD, env,
                           system="/redfish/v1/Systems/1")
    assert await driver.read_status() == Status("on", "warning", 233.0)


async def test_one_read_from_the_emulator(sushy: str, env: DriverEnv) -> None:
    # sushy-emulator's fake driver reports no draw (and an earlier test may have switched
    # this system off: compare with the single read).
    driver = system(sushy, env, "node-on")
    status = await driver.read_status()
    assert status == Status(await driver.power_state(), "ok", None)
    assert status.state in ("on", "off")


async def power_service(tmp_path: Path) -> tuple[PowerService, SqliteStore]:
    store = SqliteStore(":memory:")
    await store.open()
    service = PowerService(store, tmp_path, monitor=False, min_interval=0.0)
    await service.start()
    return service, store


async def test_a_poll_leaves_no_connection_open(aiohttp_server: Any, tmp_path: Path) -> None:
    # Polls of a BMC are a minute apart: a connection kept after one is never reused, and an
    # idle TLS connection holds ~256 KiB (1,000 BMCs: ~285 MiB). The poll closes its own.
    bmc = StandIn("env")
    server = await aiohttp_server(bmc.app)
    service, store = await power_service(tmp_path)
    try:
        await service.set_bmc("m1", {"driver": "redfish", "user": "admin",
                                     "address": f"http://127.0.0.1:{server.port}",
                                     "password": PASSWORD, "system": "/redfish/v1/Systems/1"})
        for _ in range(2):
            polled = await service.poll("m1")
            assert (polled["state"], polled["health"], polled["watts"], polled["error"]) == (
                "on", "warning", 412.5, "")
            for _ in range(50):  # the close reaches the server within a moment
                if not server.handler.connections:
                    break
                await asyncio.sleep(0.02)
            assert server.handler.connections == []
        assert bmc.requests.count("GET /redfish/v1/Systems/1") == 2, bmc.requests
    finally:
        await service.stop()
        await store.close()


async def test_replaced_drivers_are_logged_out_and_let_go(aiohttp_server: Any,
                                                          tmp_path: Path) -> None:
    # Every edit of a record and every "test connection" builds a new driver: the old one is
    # logged out and nothing keeps it (its close) until shutdown.
    bmc = StandIn("env")
    base = await serve(aiohttp_server, bmc.app)
    service, store = await power_service(tmp_path)
    try:
        await service.set_bmc("m1", {"driver": "redfish", "address": base, "user": "admin",
                                     "password": PASSWORD, "system": "/redfish/v1/Systems/1"})
        olds = []
        for n in range(4):
            polled = await service.poll("m1")
            assert polled["error"] == "", polled
            olds.append(weakref.ref(service._drivers["m1"]))
            if n % 2:
                await service.set_bmc("m1", {"address": base + "/"})
            else:
                assert (await service.test_bmc("m1"))["ok"] is True
        await service.poll("m1")
        assert service.env.pending_closers == 1  # the current driver's, only
        gc.collect()
        assert [ref() for ref in olds] == [None] * 4
        assert len(bmc.deleted) == 4  # each old session logged out (test_bmc's too)
    finally:
        await service.stop()
        await store.close()
    assert service.env.pending_closers == 0
    assert len(bmc.deleted) == 5  # and the last one at shutdown


# --- OpenJBOD stand-in ------------------------------------------------------------------------

def openjbod_app(newer: bool) -> tuple[web.Application, dict[str, Any]]:
    """The tank firmware's power API: Basic auth (documented releases) or a bearer token
    (newer firmware); GET /api/power's two documented shapes."""
    seen: dict[str, Any] = {"on": False, "calls": []}

    def ok(request: web.Request) -> bool:
        import base64

        header = request.headers.get("Authorization", "")
        if newer:
            return header == f"Bearer {PASSWORD}"
        return header == "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()

    async def power(request: web.Request) -> web.Response:
        if not ok(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        seen["calls"].append(f"{request.method} {request.path}")
        if request.path.endswith("/on"):
            seen["on"] = True
            return web.json_response({"status": "power_on", "result": "success"})
        if request.path.endswith("/off"):
            seen["on"] = False
            return web.json_response({"status": "power_off", "result": "success"})
        if newer:
            return web.json_response({"status": "power_status",
                                      "state": "on" if seen["on"] else "off"})
        return web.json_response({"powered_on": seen["on"]})

    async def status(request: web.Request) -> web.Response:
        if not ok(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"temperature": {"ds18b20_valid": True, "rp2040_valid": True},
                                  "fan": {"fan_rpm": 1200, "fan_fault": False}})

    app = web.Application()
    for path in ("/api/power", "/api/power/on", "/api/power/off"):
        app.router.add_route("*", path, power)
    app.router.add_get("/api/status", status)
    return app, seen


@pytest.mark.parametrize("newer", [False, True])
async def test_openjbod(aiohttp_server: Any, env: DriverEnv, newer: bool) -> None:
    app, seen = openjbod_app(newer)
    base = await serve(aiohttp_server, app)
    driver = OpenJbodDriver(base, "" if newer else "admin", PASSWORD, env)
    assert await driver.power_state() == "off"
    await driver.power_on()
    assert await driver.power_state() == "on"
    driver.cycle_pause = 0.0
    await driver.power_cycle()
    assert seen["calls"][-3:] == ["POST /api/power/off", "GET /api/power", "POST /api/power/on"]
    assert await driver.health() == "ok"
    wrong = OpenJbodDriver(base, "admin", "nope", env)
    with pytest.raises(PowerError) as caught:
        await wrong.power_state()
    assert caught.value.reason == "credentials"
    assert json.dumps(seen).find(PASSWORD) == -1
