"""Tinkerbell mode's backend against the stand-in Kubernetes API server (tests/kubeapi.py).

No Kubernetes API server can run on these machines (none is packaged), so the peer is that
stand-in: real HTTPS and the API server's REST and watch protocol, every object checked by
jsonschema_rs against Tinkerbell's CRDs. The test plays tink-controller's part by writing
Workflow status (``set_status``). The store, fleet and template catalog are the real ones;
only image preparation is a stand-in (no network: the image store is tested on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState, new_id
from dragonfly.errors import NotFound
from dragonfly.store import SqliteStore
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.tinkerbell import translate
from dragonfly.tinkerbell.backend import TinkerbellBackend, new_actions
from dragonfly.workflow.engine import PreparedImage
from dragonfly.workflow.sources import CatalogSources
from tests.conftest import free_port
from tests.kubeapi import NAMESPACE, TOKEN, FakeApi, api_server, kubeconfig, make_ca, pem

__all__ = ["api_server"]

IMAGE = PreparedImage(digest="ab" * 32, format="qcow2", size=1000, raw_size=4096,
                      raw_sha256="cd" * 32)
BASE = "http://10.0.0.1:3000"
TEMPLATE = "ubuntu-24.04"


class Sources(CatalogSources):
    """The real catalog and seed; the image is "prepared" at once (a stand-in: no network)."""

    async def prepare_image(self, slug: str) -> PreparedImage:
        await self.templates.get(slug)
        return IMAGE


async def until(check: Callable[[], Any], what: str, limit: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Rig:
    def __init__(self, store: SqliteStore, fleet: Fleet, backend: TinkerbellBackend) -> None:
        self.store, self.fleet, self.backend = store, fleet, backend

    async def machine(self, name: str = "web-01", mac: str = "52:54:00:aa:bb:01") -> Machine:
        return await self.fleet.add_machine(Machine(
            id=new_id(), name=name, mac=mac, macs=[mac], state=State.READY, ip="10.0.0.21",
            disks=[{"name": "vda", "size_bytes": 20 << 30, "removable": False}]))


@contextlib.asynccontextmanager
async def make_rig(tmp_path: Path, kc: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(":memory:")
    await store.open()
    fleet = Fleet(store)
    await fleet.start()
    templates = TemplateCatalog(store, None)
    backend = TinkerbellBackend(fleet, store, templates, Sources(templates, None),  # type: ignore[arg-type]
                                kubeconfig=kc, namespace=NAMESPACE, base_url=lambda: BASE,
                                retry=0.2, retry_max=0.5)
    rig = Rig(store, fleet, backend)
    try:
        yield rig
    finally:
        await backend.stop()
        fleet.stop()
        await store.close()


@pytest.fixture
async def rig(api_server: FakeApi, tmp_path: Path) -> AsyncIterator[Rig]:
    kc = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem)
    async with make_rig(tmp_path, kc) as made:
        yield made


def status_of(*actions: tuple[str, str], state: str = "STATE_RUNNING",
              message: str = "") -> dict[str, Any]:
    return {"state": state, "currentState": {"actionName": actions[-1][0]},
            "tasks": [{"name": "os-installation", "id": "t1", "agentID": "52:54:00:aa:bb:01",
                       "actions": [{"id": f"a{i}", "name": name, "state": st,
                                    **({"message": message} if st == "STATE_FAILED" else {})}
                                   for i, (name, st) in enumerate(actions)]}]}


def allow_pxe(api: FakeApi, machine: Machine) -> bool:
    hw = api.of_kind("Hardware")[translate.hardware_name(machine.id)]
    return bool(hw["spec"]["interfaces"][0]["netboot"]["allowPXE"])


async def test_deployment_runs_through_tinkerbell_to_installed(api_server: FakeApi,
                                                               rig: Rig) -> None:
    machine = await rig.machine()
    await rig.backend.start()
    await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
    assert allow_pxe(api_server, machine) is False  # mirrored, not deploying

    wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
    name = translate.workflow_name(wf.id)
    await until(lambda: name in api_server.of_kind("Workflow"), "the Workflow")
    obj = api_server.of_kind("Workflow")[name]
    assert obj["spec"]["templateRef"] == "df-ubuntu-24.04"
    assert obj["metadata"]["labels"][translate.OWNER_LABEL] == rig.backend.owner
    seed_url = obj["spec"]["hardwareMap"]["seed_url"]
    assert seed_url.startswith(f"{BASE}/api/tinkerbell/seed/{wf.id}/") and seed_url.endswith("/")
    template = api_server.of_kind("Template")["df-ubuntu-24.04"]
    assert f"{BASE}/images/{IMAGE.digest}" in template["spec"]["data"]
    assert allow_pxe(api_server, machine) is True
    doc = await until(lambda: _submitted(rig, wf.id), "the submit step")
    assert doc.stage == "Waiting for Tinkerbell to boot the machine"

    # tink-controller reports progress: the watch brings it in (no polling by Dragonfly).
    api_server.set_status("Workflow", name, status_of(("stream-image", "STATE_RUNNING")))
    doc = await until(lambda: _action_state(rig, wf.id, "stream-image", "running"), "running")
    assert doc.stage == "Stream the image to disk" and 0 < doc.progress < 100
    api_server.set_status("Workflow", name, status_of(
        ("stream-image", "STATE_SUCCESS"), ("write-seed", "STATE_SUCCESS"),
        ("boot-os", "STATE_SUCCESS"), state="STATE_SUCCESS"))
    await until(lambda: rig.fleet.get_machine(machine.id).state is State.INSTALLED, "Installed")
    done = await rig.fleet.get_workflow(wf.id)
    assert done.state is WorkflowState.SUCCEEDED and done.stage == "Installed"
    assert all(a["state"] == "succeeded" for a in done.actions)
    assert allow_pxe(api_server, machine) is False  # cannot loop into the installer
    assert rig.fleet.get_machine(machine.id).os == TEMPLATE

    # The seed the installed OS fetches (seedfrom), and its one-time phone home.
    token = seed_url.rstrip("/").rsplit("/", 1)[1]
    user_data = await rig.backend.seed_file(wf.id, token, "user-data")
    assert user_data.startswith("#cloud-config") and f"/api/tinkerbell/phone-home/{wf.id}/" \
        f"{token}" in user_data
    with pytest.raises(NotFound):
        await rig.backend.seed_file(wf.id, "0" * 32, "user-data")
    assert await rig.backend.phone_home(wf.id, token, {"hostname": "web-01"}) == {"ok": True}
    assert (await rig.fleet.get_workflow(wf.id)).installed["hostname"] == "web-01"


async def _submitted(rig: Rig, wf_id: str) -> Any:
    doc = await rig.fleet.get_workflow(wf_id)
    return doc if doc.action("submit") and doc.action("submit")["state"] == "succeeded" \
        else None  # type: ignore[index]


async def _action_state(rig: Rig, wf_id: str, name: str, state: str) -> Any:
    doc = await rig.fleet.get_workflow(wf_id)
    action = doc.action(name)
    return doc if action is not None and action["state"] == state else None


async def test_a_failing_action_fails_the_deployment_with_its_message(api_server: FakeApi,
                                                                      rig: Rig) -> None:
    machine = await rig.machine()
    await rig.backend.start()
    wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
    name = translate.workflow_name(wf.id)
    await until(lambda: _submitted(rig, wf.id), "the submit step")
    api_server.set_status("Workflow", name, status_of(
        ("stream-image", "STATE_SUCCESS"), ("write-seed", "STATE_FAILED"),
        state="STATE_FAILED", message="mounting /dev/disk/by-label/cloudimg-rootfs: no such "
                                      "device"))
    await until(lambda: rig.fleet.get_machine(machine.id).state is State.FAILED, "Failed")
    doc = await rig.fleet.get_workflow(wf.id)
    assert doc.state is WorkflowState.FAILED and doc.failed_action == "write-seed"
    assert doc.error == ("Write the cloud-init seed: mounting /dev/disk/by-label/"
                         "cloudimg-rootfs: no such device")
    assert rig.fleet.get_machine(machine.id).state_reason == doc.error


async def test_cancel_deletes_the_workflow(api_server: FakeApi, rig: Rig) -> None:
    machine = await rig.machine()
    await rig.backend.start()
    wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
    name = translate.workflow_name(wf.id)
    await until(lambda: _submitted(rig, wf.id), "the submit step")
    ended = await rig.backend.abort(wf.id, "alice")
    assert name not in api_server.of_kind("Workflow")
    assert ("DELETE", f"/apis/tinkerbell.org/v1alpha1/namespaces/{NAMESPACE}/workflows/"
                      f"{name}") in api_server.methods
    assert ended.state is WorkflowState.FAILED and ended.error.endswith("aborted by alice")
    assert rig.fleet.get_machine(machine.id).state is State.FAILED


async def test_a_template_without_a_label_fails_with_the_reason_when_its_image_is_unreadable(
        api_server: FakeApi, rig: Rig) -> None:
    # debian-12 names its root only by GPT type: the partition is read from the stored image.
    # This rig's image is a stand-in that is not in any image store, so that read fails, and
    # the deployment fails at the image step with the reason (tests/test_tinkerbell_rootpart.py
    # deploys it from a real GPT image).
    machine = await rig.machine()
    await rig.backend.start()
    await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
    wf = await rig.backend.start_deployment(machine, "deploy", "debian-12", "admin")
    done = await until(lambda: _ended(rig, wf.id), "the deployment to fail")
    assert done.state is WorkflowState.FAILED and done.failed_action == "prepare-image"
    assert "root partition cannot be read" in done.error
    assert not api_server.of_kind("Workflow") and not api_server.of_kind("Template")


async def _ended(rig: Rig, workflow_id: str) -> Workflow | None:
    wf = await rig.fleet.get_workflow(workflow_id)
    return None if wf.active else wf


async def test_start_reconciles_owned_objects_and_leaves_others_alone(api_server: FakeApi,
                                                                      rig: Rig) -> None:
    machine = await rig.machine()
    await rig.store.put("tinkerbell", "instance", {"owner": "0a1b2c3d4e5f", "key": "00" * 32})
    ours = translate.labels("0a1b2c3d4e5f")
    api_server.put("Hardware", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
                                "metadata": {"name": "df-gone", "labels": ours}, "spec": {}})
    api_server.put("Hardware", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
                                "metadata": {"name": "someone-elses"}, "spec": {}})
    api_server.put("Hardware", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
                                "metadata": {"name": "other-install", "labels": translate.labels(
                                    "ffffffffffff")}, "spec": {}})
    api_server.put("Template", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Template",
                                "metadata": {"name": "df-deleted", "labels": {
                                    **ours, translate.TEMPLATE_LABEL: "deleted-os"}},
                                "spec": {"data": "{}"}})
    api_server.put("Workflow", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
                                "metadata": {"name": "df-old", "labels": {
                                    **ours, translate.WORKFLOW_LABEL: "nosuch.0001"}},
                                "spec": {}})

    async def prepared(slug: str) -> PreparedImage | None:  # only this one's image is stored
        return IMAGE if slug == TEMPLATE else None
    rig.backend.prepared = prepared
    await rig.backend.start()
    await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
    hardware = api_server.of_kind("Hardware")
    assert set(hardware) == {"someone-elses", "other-install",
                             translate.hardware_name(machine.id)}
    assert set(api_server.of_kind("Template")) == {"df-ubuntu-24.04"}
    assert not api_server.of_kind("Workflow")
    assert rig.backend.status()["owned"] == {"Hardware": 1, "Template": 1, "Workflow": 0}
    # A second reconcile (the connection came back) sends nothing that is already there.
    writes = len(api_server.methods)
    await rig.backend.reconcile()
    assert len(api_server.methods) == writes


async def test_a_deployment_interrupted_before_it_was_sent_is_sent_on_start(
        api_server: FakeApi, tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem)
    async with make_rig(tmp_path, kc) as first:
        machine = await first.machine()
        api_server.answer = 503  # the cluster is down while the deployment starts
        await first.backend.start()
        await until(lambda: first.backend.cluster.state == "error", "the error state")
        assert "HTTP 503" in first.backend.cluster.message
        await first.backend.stop()
        # a deployment recorded while nothing could be sent (as after a crash)
        wf = Workflow(id=first.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                      template=TEMPLATE, engine="tinkerbell", state=WorkflowState.RUNNING,
                      actions=new_actions())
        await first.fleet.start_workflow(machine.id, "deploy", wf, "admin")
        api_server.answer = 200
        await first.backend.start()
        name = translate.workflow_name(wf.id)
        await until(lambda: name in api_server.of_kind("Workflow"), "the Workflow sent")


@pytest.mark.parametrize(("fault", "state", "words"), [
    ("token", "unauthorized", "refused Dragonfly's token (expired or revoked)"),
    (403, "forbidden", "its Role is missing"),
    (404, "no-crds", "CRDs are not installed"),
])
async def test_cluster_errors_are_readable_states(api_server: FakeApi, tmp_path: Path,
                                                  fault: object, state: str,
                                                  words: str) -> None:
    kc = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem,
                    token="expired" if fault == "token" else TOKEN)
    if fault != "token":
        api_server.answer = int(str(fault))
    async with make_rig(tmp_path, kc) as rig:
        await rig.backend.start()
        await until(lambda: rig.backend.cluster.state == state, state)
        assert words in rig.backend.cluster.message
        stored = await rig.store.get("tinkerbell_cluster", "state")
        assert stored is not None and stored.data["state"] == state  # for `dragonfly status`
        if fault == 403:
            api_server.answer = 200  # RBAC fixed: the supervisor retries and recovers
            await until(lambda: rig.backend.cluster.state == "ok", "recovery")


async def test_unreachable_api_fails_a_deployment_with_the_reason(tmp_path: Path) -> None:
    _, ca = make_ca("k3s")
    kc = kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{free_port()}", pem(ca))
    async with make_rig(tmp_path, kc) as rig:
        machine = await rig.machine()
        await rig.backend.start()
        await until(lambda: rig.backend.cluster.state == "unreachable", "unreachable")
        assert "does not answer" in rig.backend.cluster.message
        wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
        await until(lambda: rig.fleet.get_machine(machine.id).state is State.FAILED, "Failed")
        doc = await rig.fleet.get_workflow(wf.id)
        assert doc.failed_action == "submit" and "does not answer" in doc.error


async def test_missing_kubeconfig_is_a_readable_state(tmp_path: Path) -> None:
    async with make_rig(tmp_path, tmp_path / "absent") as rig:
        await rig.backend.start()
        await until(lambda: rig.backend.cluster.state == "error", "error")
        assert rig.backend.cluster.message.startswith(f"no kubeconfig at {tmp_path}/absent")


async def test_machines_are_mirrored_as_they_come_and_go(api_server: FakeApi, rig: Rig) -> None:
    await rig.backend.start()
    await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
    machine = await rig.machine("db-07", "52:54:00:aa:bb:07")
    name = translate.hardware_name(machine.id)
    await until(lambda: name in api_server.of_kind("Hardware"), "the new machine's Hardware")
    assert allow_pxe(api_server, machine) is False
    writes = len(api_server.methods)
    await rig.fleet.set_tags(machine.id, ["db"])
    await until(lambda: api_server.of_kind("Hardware")[name]["spec"]["metadata"]["instance"][
        "tags"] == ["db"], "the tag in the Hardware")
    await rig.fleet.record(machine.id, "note", "nothing the Hardware shows")
    await rig.fleet.update_machine(machine.id, lambda m: None)  # no change to the spec
    await asyncio.sleep(0.3)
    assert len(api_server.methods) == writes + 1  # the tag's replace; nothing for the rest
    await rig.fleet.delete_machine(machine.id)
    await until(lambda: name not in api_server.of_kind("Hardware"), "the Hardware removed")


async def test_watch_survives_compaction_and_reports_a_token_expiring(
        api_server: FakeApi, tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem)
    async with make_rig(tmp_path, kc) as rig:
        rig.backend.watch_timeout = 1  # the stand-in closes each watch after a second
        machine = await rig.machine()
        await rig.backend.start()
        wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
        name = translate.workflow_name(wf.id)
        await until(lambda: _submitted(rig, wf.id), "the submit step")
        api_server.set_status("Workflow", name, status_of(("stream-image", "STATE_RUNNING")))
        await until(lambda: _action_state(rig, wf.id, "stream-image", "running"), "running")
        # Others write (newer revisions the Workflow watch does not see), then etcd compacts:
        # the watch's next resourceVersion is too old (410), so the backend lists again and
        # goes on watching; the status written meanwhile still arrives.
        api_server.put("Template", {"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Template",
                                    "metadata": {"name": "someone-elses"}, "spec": {}})
        api_server.compact()
        await asyncio.sleep(1.5)  # the watch reconnects after the compaction
        api_server.set_status("Workflow", name, status_of(
            ("stream-image", "STATE_SUCCESS"), ("write-seed", "STATE_RUNNING")))
        await until(lambda: _action_state(rig, wf.id, "write-seed", "running"), "write-seed")
        assert api_server.expired >= 1  # the 410 path was taken
        # The token expires: the next watch is refused, and the page's state says so.
        api_server.token = "rotated"
        await until(lambda: rig.backend.cluster.state == "unauthorized", "unauthorized")
        assert "expired or revoked" in rig.backend.cluster.message
        doc = await rig.fleet.get_workflow(wf.id)
        assert doc.active  # a cluster outage does not fail a running deployment
        # Re-running install writes a kubeconfig with a new token: the backend reads it again.
        kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem, token="rotated")
        await until(lambda: rig.backend.cluster.state == "ok", "back with the new token")
        api_server.set_status("Workflow", name, status_of(
            ("stream-image", "STATE_SUCCESS"), ("write-seed", "STATE_SUCCESS"),
            ("boot-os", "STATE_SUCCESS"), state="STATE_SUCCESS"))
        await until(lambda: rig.fleet.get_machine(machine.id).state is State.INSTALLED,
                    "Installed after the outage")


async def test_cancel_while_the_cluster_is_down_deletes_the_workflow_later(
        api_server: FakeApi, tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem)
    async with make_rig(tmp_path, kc) as rig:
        rig.backend.watch_timeout = 1
        machine = await rig.machine()
        await rig.backend.start()
        wf = await rig.backend.start_deployment(machine, "deploy", TEMPLATE, "admin")
        name = translate.workflow_name(wf.id)
        await until(lambda: _submitted(rig, wf.id), "the submit step")
        api_server.answer = 503
        ended = await rig.backend.abort(wf.id, "alice")
        assert ended.state is WorkflowState.FAILED
        assert "aborted by alice (its Workflow is deleted when the cluster answers" in ended.error
        assert name in api_server.of_kind("Workflow")
        await until(lambda: rig.backend.cluster.state == "error", "the outage noticed")
        api_server.answer = 200
        await until(lambda: name not in api_server.of_kind("Workflow"), "deleted on reconcile")
        assert translate.hardware_name(machine.id) in api_server.of_kind("Hardware")
