"""BMC power in Tinkerbell mode through Rufio (``tinkerbell.power = rufio``).

No Kubernetes API server (nor Rufio) can run on these machines, so the peer is the stand-in
API server of tests/kubeapi.py: real HTTPS, the API server's REST and watch protocol, every
Machine and Job checked by jsonschema_rs against Rufio's CRDs. The test plays Rufio's
controller: ``finish_job`` writes a Job's Completed or Failed condition, ``set_power`` a
Machine's powerState. The PowerService, its records (passwords encrypted at rest), the store
and the Tinkerbell backend are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dragonfly.config import Config
from dragonfly.errors import InvalidInput
from dragonfly.power.drivers import PowerError
from dragonfly.power.service import PowerService
from dragonfly.tinkerbell import schema, translate
from dragonfly.tinkerbell.rufio import DIGEST, RufioPower, machine_name, secret_name
from tests.kubeapi import NAMESPACE, FakeApi, api_server, kubeconfig
from tests.test_tinkerbell_backend import Rig, make_rig, until

__all__ = ["api_server"]

PASSWORD = "Sw0rdfish-bmc-pa55"
IPMI = {"driver": "ipmi", "address": "10.0.9.21", "user": "admin", "password": PASSWORD}


class Power:
    def __init__(self, rig: Rig, power: PowerService, rufio: RufioPower) -> None:
        self.rig, self.power, self.rufio = rig, power, rufio
        self.machine = ""

    async def job(self, op: str, index: int = 0) -> tuple[asyncio.Task[Any], dict[str, Any]]:
        """Start ``op`` and wait for its Job to reach the cluster."""
        api: FakeApi = self.rig.api  # type: ignore[attr-defined]
        before = set(api.of_kind("Job"))
        task = asyncio.create_task(self.power.act(self.machine, op))
        found = await until(lambda: [j for n, j in api.of_kind("Job").items()
                                     if n not in before], f"the Job of {op}")
        return task, found[0]


@contextlib.asynccontextmanager
async def power_rig(api: FakeApi, tmp_path: Path) -> AsyncIterator[Power]:
    kc = kubeconfig(tmp_path / "kc", api.url, api.ca_pem)
    async with make_rig(tmp_path, kc) as rig:
        rig.api = api  # type: ignore[attr-defined]
        power = PowerService(rig.store, tmp_path, monitor=False)
        rufio = RufioPower(rig.backend, power, job_timeout=10.0, retry=0.2)
        rufio.install(power.registry)
        await power.start()
        await rig.backend.start()
        await rufio.start()
        await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
        made = Power(rig, power, rufio)
        made.machine = (await rig.machine()).id
        try:
            yield made
        finally:
            await rufio.stop()
            await power.stop()


@pytest.fixture
async def rig(api_server: FakeApi, tmp_path: Path) -> AsyncIterator[Power]:
    async with power_rig(api_server, tmp_path) as made:
        yield made


async def test_a_bmc_record_becomes_a_rufio_machine_and_its_secret(api_server: FakeApi,
                                                                   rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    name = machine_name(rig.machine)
    obj = await until(lambda: api_server.of_kind("Machine").get(name), "the Machine")
    conn = obj["spec"]["connection"]
    assert conn["host"] == "10.0.9.21" and conn["port"] == 623 and conn["insecureTLS"] is False
    assert conn["authSecretRef"] == {"name": secret_name(rig.machine), "namespace": NAMESPACE}
    assert conn["providerOptions"]["preferredOrder"] == ["ipmitool"]
    assert obj["metadata"]["labels"][translate.OWNER_LABEL] == rig.rig.backend.owner
    assert schema.problems(obj) == []
    secret = api_server.of_kind("Secret")[secret_name(rig.machine)]
    assert base64.b64decode(secret["data"]["username"]).decode() == "admin"
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert PASSWORD not in json.dumps(obj)  # the Machine only refers to the Secret
    # Redfish: the URL's host and port, gofish.
    await rig.power.set_bmc(rig.machine, {"driver": "redfish",
                                          "address": "https://bmc-7.example:8443/"})
    await until(lambda: api_server.of_kind("Machine")[name]["spec"]["connection"]["host"]
                == "bmc-7.example", "the Machine updated")
    conn = api_server.of_kind("Machine")[name]["spec"]["connection"]
    assert conn["port"] == 8443 and conn["providerOptions"]["preferredOrder"] == ["gofish"]


async def test_power_operations_run_as_rufio_jobs(api_server: FakeApi, rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    expected = {"on": {"powerAction": "on"}, "off": {"powerAction": "off"},
                "cycle": {"powerAction": "cycle"}, "reset": {"powerAction": "reset"},
                "boot_pxe": {"oneTimeBootDeviceAction": {"device": ["pxe"], "efiBoot": True}}}
    for op, task_spec in expected.items():
        task, job = await rig.job(op)
        assert job["spec"]["tasks"] == [task_spec], op
        assert job["spec"]["machineRef"] == {"name": machine_name(rig.machine),
                                             "namespace": NAMESPACE}
        await asyncio.sleep(0.2)
        assert not task.done()  # waits for Rufio, through the watch
        api_server.finish_job(job["metadata"]["name"])
        assert await asyncio.wait_for(task, 10) == {"machine": rig.machine, "op": op,
                                                    "ok": True}
        assert job["metadata"]["name"] not in api_server.of_kind("Job")  # deleted once ended
    status = await rig.power.status(rig.machine)
    assert status["configured"] and "boot_pxe" in status["actions"]


async def test_a_failed_job_is_a_power_error_with_rufios_message(api_server: FakeApi,
                                                                 rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    task, job = await rig.job("on")
    api_server.finish_job(job["metadata"]["name"], ok=False,
                          message="error setting power state: ipmitool: connection timed out")
    with pytest.raises(PowerError, match="ipmitool: connection timed out") as failed:
        await asyncio.wait_for(task, 10)
    assert failed.value.status == 502 and "failed" in failed.value.message
    # Unattended reimage reports it the same way (the boot device Job fails).
    reimage = asyncio.create_task(rig.power.boot_into_pxe(rig.machine))
    job = await until(lambda: list(api_server.of_kind("Job").values()), "the boot Job")
    api_server.finish_job(job[0]["metadata"]["name"], ok=False, message="unsupported device")
    result = await asyncio.wait_for(reimage, 10)
    assert result["attempted"] and not result["ok"] and "unsupported device" in result["error"]


async def test_power_state_comes_from_the_rufio_machine(api_server: FakeApi,
                                                        rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    name = machine_name(rig.machine)
    await until(lambda: name in api_server.of_kind("Machine"), "the Machine")
    assert await rig.power.power_state(rig.machine) == "unknown"  # Rufio has not looked yet
    api_server.set_power(name, "on")
    assert await rig.power.power_state(rig.machine) == "on"
    api_server.set_power(name, "off")
    polled = await rig.power.poll(rig.machine)
    assert polled["state"] == "off" and polled["error"] == ""
    api_server.set_power(name, "unknown", contactable=False,
                         message="failed to open connection to BMC: i/o timeout")
    polled = await rig.power.poll(rig.machine)
    assert "i/o timeout" in polled["error"] and polled["reason"] == "unreachable"


async def test_the_password_is_never_logged_nor_returned(api_server: FakeApi, rig: Power,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.DEBUG)
    shown = [await rig.power.set_bmc(rig.machine, IPMI)]
    task, job = await rig.job("on")
    api_server.finish_job(job["metadata"]["name"], ok=False, message="refused")
    with pytest.raises(PowerError) as failed:
        await asyncio.wait_for(task, 10)
    api_server.set_power(machine_name(rig.machine), "on")
    shown += [await rig.power.get_bmc(rig.machine), await rig.power.status(rig.machine),
              await rig.power.test_bmc(rig.machine), await rig.power.poll(rig.machine),
              rig.rig.backend.status(), failed.value.message, rig.power.drivers()]
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    text = json.dumps(shown, default=str)
    assert shown[0]["has_password"] is True and "password" not in shown[0]
    assert PASSWORD not in text and encoded not in text
    assert PASSWORD not in caplog.text and encoded not in caplog.text
    # Only the Secret holds it; the annotation is an HMAC, not the password or its hash.
    secret = api_server.of_kind("Secret")[secret_name(rig.machine)]
    assert PASSWORD not in json.dumps(secret["metadata"])
    assert len(secret["metadata"]["annotations"][DIGEST]) == 32
    kinds = [k for k in ("Machine", "Job", "Hardware")
             for obj in api_server.of_kind(k).values() if encoded in json.dumps(obj)]
    assert kinds == []


async def test_reconcile_removes_what_it_owns_and_no_record_needs(api_server: FakeApi,
                                                                  rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    mine = machine_name(rig.machine)
    await until(lambda: mine in api_server.of_kind("Machine"), "the Machine")
    # Left by an earlier run of this installation (its owner label): a record deleted while
    # it was down, and a Job; and a Machine somebody else made.
    labels = translate.labels(rig.rig.backend.owner)
    api_server.put("Machine", {"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine",
                               "metadata": {"name": "df-gone", "labels": labels},
                               "spec": {"connection": {"host": "x", "insecureTLS": False}}})
    api_server.put("Secret", {"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "df-bmc-gone", "labels": labels},
                              "data": {"password": "eA=="}})
    api_server.put("Job", {"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Job",
                           "metadata": {"name": "df-old-job", "labels": labels},
                           "spec": {"machineRef": {"name": "df-gone", "namespace": NAMESPACE},
                                    "tasks": [{"powerAction": "on"}]}})
    api_server.put("Machine", {"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine",
                               "metadata": {"name": "someone-elses"},
                               "spec": {"connection": {"host": "y", "insecureTLS": False}}})
    api_server.remove("Secret", secret_name(rig.machine))  # lost: made again
    await rig.rufio.reconcile()  # what runs on start and after every reconnection
    assert "df-gone" not in api_server.of_kind("Machine")
    assert "df-bmc-gone" not in api_server.of_kind("Secret")
    assert "df-old-job" not in api_server.of_kind("Job")
    assert {"someone-elses", mine} <= set(api_server.of_kind("Machine"))
    assert secret_name(rig.machine) in api_server.of_kind("Secret")
    assert rig.rig.backend.status()["owned"]["Machine"] == 1

    # Records changing now reach the cluster at once (the store's feed).
    other = await rig.rig.machine("db-02", "52:54:00:aa:bb:02")
    await rig.power.set_bmc(other.id, IPMI)
    await until(lambda: secret_name(other.id) in api_server.of_kind("Secret"), "the Secret")
    digest = api_server.of_kind("Secret")[secret_name(other.id)]["metadata"]["annotations"][
        DIGEST]
    machine_version = api_server.of_kind("Machine")[machine_name(other.id)]["metadata"][
        "resourceVersion"]
    await rig.power.set_bmc(other.id, {"password": "another-one"})
    await until(lambda: api_server.of_kind("Secret")[secret_name(other.id)]["metadata"][
        "annotations"][DIGEST] != digest, "the Secret rewritten")
    assert api_server.of_kind("Machine")[machine_name(other.id)]["metadata"][
        "resourceVersion"] == machine_version  # unchanged: not sent again
    await rig.power.delete_bmc(other.id)
    await until(lambda: machine_name(other.id) not in api_server.of_kind("Machine")
                and secret_name(other.id) not in api_server.of_kind("Secret"),
                "the Machine and Secret removed")
    assert mine in api_server.of_kind("Machine")


async def test_only_ipmi_and_redfish_go_through_rufio(rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, {"driver": "wol", "mac": "52:54:00:aa:bb:01"})
    assert rig.power.supports(rig.machine) == frozenset({"on"})  # Dragonfly's own WoL
    with pytest.raises(InvalidInput, match="driver must be one of"):
        await rig.power.set_bmc(rig.machine, {"driver": "rufio", "address": "10.0.0.1"})
    assert "rufio" not in {d["name"] for d in rig.power.drivers()}


async def test_a_cluster_that_does_not_answer_is_a_readable_power_error(
        api_server: FakeApi, rig: Power) -> None:
    await rig.power.set_bmc(rig.machine, IPMI)
    await until(lambda: machine_name(rig.machine) in api_server.of_kind("Machine"), "Machine")
    api_server.answer = 403
    with pytest.raises(PowerError, match="Rufio: .*Role") as failed:
        await rig.power.act(rig.machine, "on")
    assert failed.value.reason == "config"  # the Role, not the BMC
    api_server.answer = 200
    await rig.rig.backend.stop()  # the cluster gone: the client closed, state not ok
    with pytest.raises(PowerError, match="Rufio: .*not connected") as failed:
        await rig.power.power_state(rig.machine)
    assert failed.value.reason == "unreachable"


def test_the_power_setting_takes_rufio_and_nothing_else() -> None:
    assert Config.load(None, env={}, overrides={"tinkerbell.power": "rufio"})[
        "tinkerbell.power"] == "rufio"
    with pytest.raises(InvalidInput, match="not one of dragonfly, rufio"):
        Config.load(None, env={"DRAGONFLY_TINKERBELL_POWER": "ironic"})


def test_tinkerbell_mode_with_rufio_routes_bmc_records_to_it() -> None:
    from dragonfly.compose import use_tinkerbell
    from dragonfly.workflow.sources import CatalogSources
    from tests.test_auth_fixtures import installed_context

    ctx = installed_context(**{"server.mode": "tinkerbell", "tinkerbell.power": "rufio"})
    assert isinstance(ctx.power, PowerService) and ctx.templates is not None
    use_tinkerbell(ctx, CatalogSources(ctx.templates, None))
    assert any(isinstance(s, RufioPower) for s in ctx.services)
    assert ctx.power.registry.route == {"ipmi": "rufio", "redfish": "rufio"}
    plain = installed_context(**{"server.mode": "tinkerbell"})
    assert isinstance(plain.power, PowerService)
    use_tinkerbell(plain, CatalogSources(plain.templates, None))  # type: ignore[arg-type]
    assert not any(isinstance(s, RufioPower) for s in plain.services)
    assert plain.power.registry.route == {}
