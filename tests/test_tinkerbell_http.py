"""Tinkerbell mode through the application: the panel's API (deploy, cancel, the cluster state,
the seed) and `dragonfly status`, against the stand-in Kubernetes API server (tests/kubeapi.py:
no Kubernetes API server can run on these machines, none is packaged)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dragonfly.app import create_app
from dragonfly.config import Config, render_toml
from dragonfly.domain.model import Machine, State, new_id
from dragonfly.ops.kubecheck import ClusterCheck
from dragonfly.ops.status import collect_status, format_status
from dragonfly.store import open_store
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.tinkerbell import translate
from dragonfly.tinkerbell.backend import TinkerbellBackend
from tests.kubeapi import NAMESPACE, FakeApi, api_server, kubeconfig
from tests.test_auth_fixtures import installed_context, setup_admin
from tests.test_install import FakeRunner
from tests.test_tinkerbell_backend import Sources, until

__all__ = ["api_server"]


async def test_deploy_and_cancel_through_the_api(api_server: FakeApi, tmp_path: Path,
                                                 aiohttp_client: Any) -> None:
    ctx = installed_context(**{"server.mode": "tinkerbell"})
    ctx.services = [s for s in ctx.services if s.name != "demo simulator"]  # no demo fleet
    assert ctx.templates is not None
    templates: TemplateCatalog = ctx.templates
    backend = TinkerbellBackend(
        ctx.fleet, ctx.store, templates, Sources(templates, None),  # type: ignore[arg-type]
        kubeconfig=kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem),
        namespace=NAMESPACE, base_url=lambda: "http://10.0.0.1:3000", retry=0.2)
    ctx.services.append(backend)
    ctx.runner = ctx.tinkerbell = backend
    client = await aiohttp_client(create_app(ctx))
    admin = await setup_admin(client)
    await until(lambda: backend.cluster.state == "ok", "the first reconcile")
    state = await (await client.get("/api/tinkerbell", headers=admin.headers())).json()
    assert state["enabled"] and state["state"] == "ok" and state["namespace"] == NAMESPACE
    assert state["power"] == "dragonfly" and state["owner"] == backend.owner

    machine = await ctx.fleet.add_machine(Machine(
        id=new_id(), name="db-01", mac="52:54:00:cc:dd:01", state=State.READY,
        disks=[{"name": "sda", "size_bytes": 10 << 30}]))
    r = await client.post(f"/api/machines/{machine.id}/actions/deploy",
                          json={"template": "ubuntu-24.04", "options": {"disk": "serial:X"}},
                          headers=admin.headers())
    refused = await r.json()
    assert r.status == 400 and "no disk with serial" in refused["error"]  # before sending
    r = await client.post(f"/api/machines/{machine.id}/actions/deploy",
                          json={"template": "ubuntu-24.04"}, headers=admin.headers())
    assert r.status == 200, await r.text()
    wf_id = ctx.fleet.get_machine(machine.id).workflow_id
    assert wf_id is not None
    name = translate.workflow_name(wf_id)
    await until(lambda: name in api_server.of_kind("Workflow"), "the Workflow")
    seed_url = api_server.of_kind("Workflow")[name]["spec"]["hardwareMap"]["seed_url"]
    path = seed_url.removeprefix("http://10.0.0.1:3000")
    r = await client.get(path + "meta-data")  # the installed OS: no login
    assert r.status == 200 and f'"instance-id": "{wf_id}"' in await r.text()

    # The panel's Tinkerbell page: the cluster's state and the running deployment.
    r = await client.get("/tinkerbell", headers=admin.headers())
    html = await r.text()
    assert r.status == 200 and 'id="tb-cluster"' in html and 'data-state="ok"' in html
    assert f'data-wf="{wf_id}"' in html and name in html and 'href="/tinkerbell"' in html

    r = await client.post(f"/api/workflows/{wf_id}/abort", headers=admin.headers())
    body = await r.json()
    assert r.status == 200 and body["error"].endswith("aborted by admin"), body
    assert name not in api_server.of_kind("Workflow")
    assert ctx.fleet.get_machine(machine.id).state is State.FAILED
    await asyncio.sleep(0)


async def test_the_page_says_when_the_mode_is_another(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(installed_context()))
    admin = await setup_admin(client)
    html = await (await client.get("/tinkerbell", headers=admin.headers())).text()
    assert "Not in Tinkerbell mode" in html and "native mode" in html
    assert 'href="/tinkerbell"' not in html  # no nav entry outside Tinkerbell mode
    state = await (await client.get("/api/tinkerbell", headers=admin.headers())).json()
    assert state == {"mode": "native", "enabled": False}


def test_status_shows_the_backends_cluster_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()

    async def store_state() -> None:
        store = open_store(state)
        await store.open()
        await store.put("tinkerbell_cluster", "state", {
            "state": "unauthorized", "message": "the cluster refused Dragonfly's token "
            "(expired or revoked): re-run `sudo dragonfly install --mode tinkerbell`"})
        await store.close()
    asyncio.run(store_state())
    config = tmp_path / "dragonfly.toml"
    config.write_text(render_toml({**Config.defaults().as_dict(), "server.mode": "tinkerbell",
                                   "server.state_dir": str(state)}))
    status = collect_status(config, runner=FakeRunner(), version_of=lambda url: "",
                            cluster_check=lambda p, ns: ClusterCheck(True, "reachable"))
    assert status.backend.startswith("unauthorized: the cluster refused Dragonfly's token")
    assert any(p.startswith("Tinkerbell backend: the cluster refused") for p in status.problems)
    assert "  backend:   unauthorized: the cluster refused" in format_status(status)


def test_tinkerbell_mode_composes_the_backend_as_the_runner(tmp_path: Path) -> None:
    from dragonfly.compose import server_context
    from dragonfly.workflow.engine import DeploymentEngine

    config = Config.load(None, env={}, overrides={
        "server.mode": "tinkerbell", "server.state_dir": str(tmp_path),
        "server.public_url": "http://10.0.0.5:3000/", "tinkerbell.namespace": "tink"})
    ctx = server_context(config)
    assert isinstance(ctx.runner, TinkerbellBackend) and ctx.tinkerbell is ctx.runner
    assert ctx.deployments is None  # no agent deploys in this mode
    assert not any(isinstance(s, DeploymentEngine) for s in ctx.services)
    assert ctx.tinkerbell in ctx.services
    assert ctx.tinkerbell.base_url() == "http://10.0.0.5:3000"
    assert ctx.tinkerbell.namespace == "tink" and ctx.tinkerbell.prepared is not None
    native = server_context(Config.load(None, env={}, overrides={
        "server.state_dir": str(tmp_path / "n")}))
    assert native.tinkerbell is None and isinstance(native.deployments, DeploymentEngine)
    assert not isinstance(native.runner, TinkerbellBackend)
