"""The native deployment engine over its real HTTP routes and a real sqlite store.

The template catalog and the image store are replaced by ``StandInSources`` here (a stand-in:
they are tested on their own in test_templates*/test_images*, and end to end in the lab); the
agent's side is played by the test, following docs/deployment-protocol.md the way agent.sh
does (tests/test_agent_deploy.py runs the real agent against this protocol).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dragonfly.agent import checkin
from dragonfly.context import AppContext
from dragonfly.domain.model import Machine, State, WorkflowState, new_id
from dragonfly.errors import InvalidInput
from dragonfly.store import SqliteStore
from dragonfly.workflow import routes as workflow_routes
from dragonfly.workflow.engine import (
    DeploymentEngine,
    DeployTemplate,
    PreparedImage,
    validate_options,
)
from tests.lab.harness import agent_app, make_context

Client = TestClient[web.Request, web.Application]
MAC = "52:54:00:aa:bb:01"
IMAGE = PreparedImage(digest="ab" * 32, format="xz", size=1000, raw_size=4096,
                      raw_sha256="cd" * 32)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class StandInSources:
    """Stand-in for the template catalog and the image store (see the module docstring)."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.fail_with: str = ""
        self.prepared = 0

    async def template(self, slug: str) -> DeployTemplate:
        if slug != "debian-12":
            raise InvalidInput(f"unknown OS template {slug!r}")
        return DeployTemplate(slug, "Debian 12", {"label": "root", "parttype": "", "fstype":
                                                  "ext4"}, "\\EFI\\debian\\shimx64.efi", 600.0)

    async def prepare_image(self, slug: str) -> PreparedImage:
        await self.ready.wait()
        self.prepared += 1
        if self.fail_with:
            from dragonfly.errors import Unavailable
            raise Unavailable(self.fail_with)
        return IMAGE

    async def render_seed(self, slug: str, machine: Machine, options: dict[str, Any],
                          instance_id: str, phone_home_url: str) -> dict[str, str]:
        return {"meta-data": f"instance-id: {instance_id}\nlocal-hostname: "
                             f"{options['hostname'] or machine.name}\n",
                "user-data": f"#cloud-config\nphone_home: {{url: {phone_home_url}}}\n",
                "network-config": "version: 2\n"}


def deploy_app(ctx: AppContext) -> web.Application:
    app = agent_app(ctx)
    for route in workflow_routes.api.routes:
        app.router.add_route(route.method, route.path, route.handler)
    assert ctx.deployments is not None
    engine = ctx.deployments

    async def run_engine(app: web.Application) -> Any:
        await engine.start()
        yield
        await engine.stop()

    app.cleanup_ctx.append(run_engine)
    return app


@pytest.fixture
def sources() -> StandInSources:
    return StandInSources()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(tmp_path: Path, sources: StandInSources, clock: Clock) -> AppContext:
    ctx = make_context(tmp_path / "state", poll_seconds=4)
    ctx.store = SqliteStore(tmp_path / "dragonfly.db")
    from dragonfly.domain.fleet import Fleet
    ctx.fleet = Fleet(ctx.store, clock=clock)
    ctx.deployments = DeploymentEngine(ctx.fleet, ctx.store, sources, clock=clock, tick=3600)
    ctx.runner = ctx.deployments
    return ctx


@pytest.fixture
async def client(ctx: AppContext, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(deploy_app(ctx))


async def ready_machine(ctx: AppContext) -> Machine:
    machine = Machine(id=new_id(), name="node-01", mac=MAC, state=State.READY, ip="10.0.0.9")
    return await ctx.fleet.add_machine(machine)


async def deploy(ctx: AppContext, machine: Machine, **options: Any) -> str:
    assert ctx.deployments is not None
    wf = await ctx.deployments.start_deployment(machine, "deploy", "debian-12", "admin",
                                                options or None)
    for _ in range(100):  # the image is prepared in the background
        current = await ctx.fleet.get_workflow(wf.id)
        if current.actions[0]["state"] != "running":
            break
        await asyncio.sleep(0.01)
    return wf.id


async def heartbeat(client: Client, machine: Machine) -> dict[str, Any]:
    r = await client.post("/api/agent/heartbeat", json={"machine_id": machine.id, "mac": MAC})
    assert r.status == 200
    answer: dict[str, Any] = await r.json()
    return answer


async def next_action(client: Client, wf: str) -> dict[str, Any]:
    r = await client.get(f"/api/agent/workflows/{wf}/next")
    assert r.status == 200, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def report(client: Client, wf: str, index: int, **body: Any) -> dict[str, Any]:
    r = await client.post(f"/api/agent/workflows/{wf}/actions/{index}", json=body)
    assert r.status == 200, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def run_agent_to_reboot(client: Client, wf: str) -> list[str]:
    """Play the agent through every action, as agent.sh does; returns the action names."""
    names = []
    results = {"select-disk": {"disk": "/dev/vda", "disk_bytes": 8 << 30},
               "verify": {"sha256": IMAGE.raw_sha256}}
    while True:
        step = await next_action(client, wf)
        if step["name"] == "done":
            return names
        names.append(step["name"])
        if step["name"] == "stream-image":
            await report(client, wf, step["index"], state="running", bytes_done=2048,
                         bytes_total=4096, rate=1024.0)
        await report(client, wf, step["index"], state="succeeded",
                     **results.get(step["name"], {}))
        if step["name"] == "reboot":
            return names


async def test_a_deployment_runs_in_order_and_installs_only_when_the_os_phones_home(
        client: Client, ctx: AppContext, clock: Clock) -> None:
    machine = await ready_machine(ctx)
    wf = await deploy(ctx, machine, hostname="web-1")
    assert ctx.fleet.get_machine(machine.id).state is State.DEPLOYING
    answer = await heartbeat(client, machine)
    assert answer["action"] == "deploy" and answer["workflow_id"] == wf
    script = await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert "discovery" in script  # nothing written yet: a reboot comes back to the agent

    first = await next_action(client, wf)
    assert first == {"workflow_id": wf, "index": 1, "name": "select-disk", "disk": "",
                     "min_bytes": IMAGE.raw_size, "poll_seconds": 2}
    names = await run_agent_to_reboot(client, wf)
    assert names == ["select-disk", "wipe", "stream-image", "verify", "fix-gpt",
                     "write-seed", "boot-entry", "reboot"]
    stored = await ctx.fleet.get_workflow(wf)
    stream = stored.action("stream-image")
    assert stream is not None and stream["bytes_done"] == 2048 and stream["rate"] == 1024.0
    assert stored.written_at is not None and stored.rebooted_at is not None
    # Rebooted, not installed: the machine is still deploying, and PXE now boots the disk.
    assert ctx.fleet.get_machine(machine.id).state is State.DEPLOYING
    script = await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert "booting the local disk" in script
    assert (await heartbeat(client, machine))["action"] == "localboot"

    seed = await (await client.get(f"/api/agent/workflows/{wf}/seed/meta-data")).text()
    assert f"instance-id: {wf}" in seed and "local-hostname: web-1" in seed
    user_data = await (await client.get(f"/api/agent/workflows/{wf}/seed/user-data")).text()
    url = user_data.split("url: ")[1].split("}")[0]
    path = url.split("://", 1)[1].split("/", 1)[1]
    r = await client.post("/" + path, data={"hostname": "web-1", "fqdn": "web-1.lab",
                                            "instance_id": wf,
                                            "pub_key_ed25519": "ssh-ed25519 AAAAC3 root@web-1"})
    assert r.status == 200, await r.text()
    installed = ctx.fleet.get_machine(machine.id)
    assert installed.state is State.INSTALLED and installed.os == "debian-12"
    done = await ctx.fleet.get_workflow(wf)
    assert done.state is WorkflowState.SUCCEEDED
    assert done.installed["host_keys"] == {"pub_key_ed25519": "ssh-ed25519 AAAAC3 root@web-1"}
    again = await client.post("/" + path, data={"hostname": "web-1"})
    assert again.status == 409  # one-time
    forged = await client.post(f"/api/phone-home/{wf}/{'0' * 32}", data={"hostname": "x"})
    assert forged.status == 404


async def test_the_agent_waits_while_the_image_is_prepared(
        client: Client, ctx: AppContext, sources: StandInSources) -> None:
    sources.ready.clear()
    machine = await ready_machine(ctx)
    assert ctx.deployments is not None
    wf = await ctx.deployments.start_deployment(machine, "deploy", "debian-12", "admin")
    answer = await heartbeat(client, machine)
    assert answer["action"] == "wait" and answer["poll_seconds"] <= 5
    assert (await next_action(client, wf.id))["name"] == "wait"
    sources.ready.set()
    for _ in range(100):
        if (await ctx.fleet.get_workflow(wf.id)).actions[0]["state"] == "succeeded":
            break
        await asyncio.sleep(0.01)
    assert (await heartbeat(client, machine))["action"] == "deploy"


async def test_a_failed_action_fails_the_machine_with_the_action_and_the_reason(
        client: Client, ctx: AppContext) -> None:
    machine = await ready_machine(ctx)
    wf = await deploy(ctx, machine)
    step = await next_action(client, wf)
    await report(client, wf, step["index"], state="succeeded", disk="/dev/vda")
    await report(client, wf, (await next_action(client, wf))["index"], state="succeeded")
    step = await next_action(client, wf)
    assert step["name"] == "stream-image"
    await report(client, wf, step["index"], state="failed",
                 message="HTTP 404 fetching the image", log="wget: server returned 404")
    failed = ctx.fleet.get_machine(machine.id)
    assert failed.state is State.FAILED
    assert failed.state_reason == "Stream the image to disk: HTTP 404 fetching the image"
    stored = await ctx.fleet.get_workflow(wf)
    assert stored.state is WorkflowState.FAILED and stored.failed_action == "stream-image"
    assert stored.action("stream-image")["log"] == "wget: server returned 404"  # type: ignore
    # The agent's next question is answered with an abort, and PXE goes back to discovery.
    after = await next_action(client, wf)
    assert after["name"] == "done" and after["abort"] is True
    assert "discovery" in await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert (await report(client, wf, 3, state="running"))["abort"] is True


async def test_an_image_that_cannot_be_prepared_fails_the_deployment(
        client: Client, ctx: AppContext, sources: StandInSources) -> None:
    sources.fail_with = "checksum mismatch: the vendor's SHA512SUMS says 12ab, the download is 34cd"
    machine = await ready_machine(ctx)
    await deploy(ctx, machine)
    failed = ctx.fleet.get_machine(machine.id)
    assert failed.state is State.FAILED
    assert failed.state_reason.startswith("Fetch and verify the image: checksum mismatch")
    assert (await heartbeat(client, machine))["action"] == "wait"  # back to waiting


async def test_no_phone_home_within_the_timeout_fails(
        client: Client, ctx: AppContext, clock: Clock) -> None:
    machine = await ready_machine(ctx)
    wf = await deploy(ctx, machine)
    await run_agent_to_reboot(client, wf)
    assert ctx.deployments is not None
    clock.t += 599
    await ctx.deployments.check_deadlines()
    assert ctx.fleet.get_machine(machine.id).state is State.DEPLOYING
    clock.t += 2
    await ctx.deployments.check_deadlines()
    failed = ctx.fleet.get_machine(machine.id)
    assert failed.state is State.FAILED
    assert "did not phone home within 10 min" in failed.state_reason


async def test_a_silent_agent_fails_the_running_action(
        client: Client, ctx: AppContext, clock: Clock) -> None:
    machine = await ready_machine(ctx)
    wf = await deploy(ctx, machine)
    step = await next_action(client, wf)
    assert ctx.deployments is not None
    clock.t += ctx.deployments.agent_silence + 1
    await ctx.deployments.check_deadlines()
    failed = ctx.fleet.get_machine(machine.id)
    assert failed.state is State.FAILED and "stopped reporting" in failed.state_reason
    assert (await ctx.fleet.get_workflow(wf)).failed_action == step["name"]


async def test_abort(client: Client, ctx: AppContext) -> None:
    machine = await ready_machine(ctx)
    wf = await deploy(ctx, machine)
    assert ctx.deployments is not None
    await ctx.deployments.abort(wf, "alice")
    failed = ctx.fleet.get_machine(machine.id)
    assert failed.state is State.FAILED and failed.state_reason.endswith("aborted by alice")


async def test_a_restarted_server_keeps_tracking_the_deployment(
        tmp_path: Path, sources: StandInSources, clock: Clock,
        aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    """The store is a real file: a second server over it picks the deployment up where the
    agent is (its next report lands), as after kill -9 of the first."""
    def build() -> AppContext:
        ctx = make_context(tmp_path / "state", poll_seconds=4)
        ctx.store = SqliteStore(tmp_path / "dragonfly.db")
        from dragonfly.domain.fleet import Fleet
        ctx.fleet = Fleet(ctx.store, clock=clock)
        ctx.deployments = DeploymentEngine(ctx.fleet, ctx.store, sources, clock=clock,
                                           tick=3600)
        ctx.runner = ctx.deployments
        return ctx

    first = build()
    client = await aiohttp_client(deploy_app(first))
    machine = await ready_machine(first)
    wf = await deploy(first, machine)
    step = await next_action(client, wf)
    await report(client, wf, step["index"], state="succeeded", disk="/dev/vda")
    await client.close()

    second = build()
    client = await aiohttp_client(deploy_app(second))
    step = await next_action(client, wf)
    assert step["name"] == "wipe" and step["disk"] == "/dev/vda"  # the first's result kept
    names = await run_agent_to_reboot(client, wf)
    assert names[-1] == "reboot"
    assert second.fleet.get_machine(machine.id).state is State.DEPLOYING


async def test_restart_while_preparing_prepares_again(
        tmp_path: Path, sources: StandInSources, clock: Clock) -> None:
    sources.ready.clear()
    store = SqliteStore(tmp_path / "dragonfly.db")
    from dragonfly.domain.fleet import Fleet
    await store.open()
    fleet = Fleet(store, clock=clock)
    await fleet.start()
    engine = DeploymentEngine(fleet, store, sources, clock=clock, tick=3600)
    await engine.start()
    machine = await fleet.add_machine(Machine(id=new_id(), name="n", mac=MAC,
                                              state=State.READY))
    wf = await engine.start_deployment(machine, "deploy", "debian-12", "admin")
    await engine.stop()  # the download is interrupted
    sources.ready.set()
    again = DeploymentEngine(fleet, store, sources, clock=clock, tick=3600)
    await again.start()
    for _ in range(100):
        if (await fleet.get_workflow(wf.id)).actions[0]["state"] == "succeeded":
            break
        await asyncio.sleep(0.01)
    assert (await fleet.get_workflow(wf.id)).image["digest"] == IMAGE.digest
    await again.stop()
    fleet.stop()
    await store.close()


def test_deploy_options_are_checked() -> None:
    machine = Machine(id="m", name="Node-01", mac=MAC, state=State.READY)
    assert validate_options(None, machine) == {"hostname": "", "ssh_keys": [], "disk": ""}
    assert validate_options({"hostname": "Web-1.Lab"}, machine)["hostname"] == "web-1.lab"
    with pytest.raises(InvalidInput, match="is not a host name"):
        validate_options({"hostname": "bad_name!"}, machine)
    with pytest.raises(InvalidInput, match="ssh"):
        validate_options({"ssh_keys": ["password123"]}, machine)
    with pytest.raises(InvalidInput, match="unknown deploy option: color"):
        validate_options({"color": "red"}, machine)
    with pytest.raises(InvalidInput, match="disk must be"):
        validate_options({"disk": "sda; rm -rf /"}, machine)


def test_answer_for_a_deploying_machine_without_the_engine_boots_the_disk() -> None:
    # The demo's and Tinkerbell's workflows carry no prepare-image: the disk, as before.
    machine = Machine(id="m", name="n", mac=MAC, state=State.DEPLOYING)
    assert checkin.answer_for(machine)["action"] == "localboot"


async def test_unknown_workflow_is_404(client: Client) -> None:
    r = await client.get("/api/agent/workflows/nope/next")
    assert r.status == 404 and "no workflow" in (await r.json())["error"]


async def test_reimaging_an_installed_machine_runs_the_deployment_at_its_next_pxe_boot(
        client: Client, ctx: AppContext) -> None:
    """The installed OS runs no agent: the reimage waits for the machine's next network boot,
    which now gets discovery (not its disk), and the agent's check-in gets the deployment."""
    from tests.test_agent_checkin import report_body

    machine = await ctx.fleet.add_machine(Machine(id=new_id(), name="node-02", mac=MAC,
                                                  state=State.INSTALLED, os="debian-12"))
    assert "booting the local disk" in await (await client.get(f"/boot/{MAC}.ipxe")).text()
    assert ctx.deployments is not None
    wf = await ctx.deployments.start_deployment(machine, "reimage", "debian-12", "admin")
    for _ in range(100):
        if (await ctx.fleet.get_workflow(wf.id)).actions[0]["state"] == "succeeded":
            break
        await asyncio.sleep(0.01)
    assert "discovery" in await (await client.get(f"/boot/{MAC}.ipxe")).text()
    r = await client.post("/api/agent/checkin", json=report_body(
        boot_mac=MAC, nics=[{"name": "eth0", "mac": MAC, "ip": "10.0.0.9"}]))
    answer = await r.json()
    assert r.status == 200 and answer["action"] == "deploy" and answer["workflow_id"] == wf.id
    assert ctx.fleet.get_machine(machine.id).state is State.DEPLOYING
