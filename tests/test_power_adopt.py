"""Workflows through the BMC, over the real routes with the fake driver (a simulated BMC: the
real ones are driven in tests/test_power_ipmi.py, tests/test_power_redfish.py and the lab):
adopt a machine never seen from its BMC address, the form's pre-fill from the BMC an agent
reported, the list's power for every machine, and reimage with one-time PXE and a cycle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from dragonfly.agent import checkin
from dragonfly.agent.checkin import parse_report
from dragonfly.domain.model import State
from dragonfly.power.adopt import ADOPTION
from dragonfly.power.drivers.fake import BMCS
from tests.test_agent_checkin import Names, report_body
from tests.test_auth_fixtures import ctx_of_client, setup_admin
from tests.test_power import power_client, power_routes_installed  # noqa: F401

SECRET = "adopt-password-never-shown"  # noqa: S105


def agent_report(mac: str, bmc_ip: str) -> Any:
    return parse_report(report_body(
        boot_mac=mac, nics=[{"name": "eth0", "mac": mac, "speed_mbps": 1000, "link": True,
                             "driver": "virtio_net", "ip": "10.99.0.77"}],
        dmi={"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": ""},
        bmc={"present": True, "interface": "ipmi0", "ip": bmc_ip,
             "mac": "52:54:00:be:ef:77", "ip_source": "static"}))


async def test_adopt_from_bmc_links_the_machine_that_reports_it(
        aiohttp_client: Any, tmp_path: Path, power_routes_installed: None) -> None:  # noqa: F811
    BMCS.clear()
    client = await power_client(aiohttp_client, tmp_path)
    h = (await setup_admin(client)).headers()
    ctx = ctx_of_client(client)
    body = {"driver": "fake", "address": "192.0.2.77", "user": "root", "password": SECRET}

    adopted = await client.post("/api/power/adopt", json=body, headers=h)
    assert adopted.status == 200, await adopted.text()
    adoption = await adopted.json()
    assert adoption["state"] == "waiting" and adoption["machine"] is None
    assert [s["step"] for s in adoption["steps"]] == ["state", "boot_pxe", "on"]
    bmc = BMCS["192.0.2.77"]
    assert bmc.state == "on" and bmc.boot == "pxe" and bmc.boot_once
    # The same BMC twice while the first waits: refused, not a second power-on.
    again = await client.post("/api/power/adopt", json=body, headers=h)
    assert again.status == 409 and adoption["id"] in (await again.json())["error"]

    # The machine PXE-boots and its agent reports the BMC at that address.
    answer = await checkin.handle_checkin(ctx.fleet, agent_report("52:54:00:77:00:01",
                                                                  "192.0.2.77"),
                                          "10.99.0.77", Names("adopted-one"))
    machine = answer["machine_id"] if "machine_id" in answer else answer["id"]

    async def linked() -> dict[str, Any]:
        for _ in range(100):
            got: dict[str, Any] = await (await client.get(
                f"/api/power/adoptions/{adoption['id']}", headers=h)).json()
            if got["state"] == "linked":
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"not linked: {got}")

    done = await linked()
    assert done["machine"] == machine
    record = await (await client.get(f"/api/machines/{machine}/bmc", headers=h)).json()
    assert record["configured"] is True and record["address"] == "192.0.2.77"
    assert record["has_password"] is True and SECRET not in json.dumps(record)
    # Power control works on the adopted machine at once.
    status = await (await client.get(f"/api/machines/{machine}/power", headers=h)).json()
    assert status["configured"] and "cycle" in status["actions"]
    listed = await (await client.get("/api/power/adoptions", headers=h)).json()
    assert [a["id"] for a in listed] == [adoption["id"]]
    for doc in await ctx.store.list(ADOPTION):
        assert SECRET not in json.dumps(doc.data)  # sealed at rest
    audit = await (await client.get("/api/audit?action=bmc.adopt", headers=h)).json()
    assert any(e["outcome"] == "ok" for e in audit) and SECRET not in json.dumps(audit)
    assert (await client.delete(f"/api/power/adoptions/{adoption['id']}",
                                headers=h)).status == 200
    assert (await client.get(f"/api/power/adoptions/{adoption['id']}",
                             headers=h)).status == 404


async def test_adopt_failures_are_clear(aiohttp_client: Any, tmp_path: Path,
                                        power_routes_installed: None) -> None:  # noqa: F811
    BMCS.clear()
    client = await power_client(aiohttp_client, tmp_path)
    h = (await setup_admin(client)).headers()
    down = await client.post("/api/power/adopt", json={
        "driver": "fake", "address": "unreachable-9", "password": SECRET}, headers=h)
    assert down.status == 502
    error = await down.json()
    assert "did not answer" in error["error"] and SECRET not in json.dumps(error)
    assert error["detail"]["adoption"]["state"] == "failed"
    wol = await client.post("/api/power/adopt", json={
        "driver": "wol", "mac": "52:54:00:00:00:09"}, headers=h)
    assert wol.status == 400 and "Wake-on-LAN" in (await wol.json())["error"]
    bad = await client.post("/api/power/adopt", json={"driver": "ipmi"}, headers=h)
    assert bad.status == 400 and "address" in (await bad.json())["error"]


async def test_prefill_and_the_list_of_power(aiohttp_client: Any, tmp_path: Path,
                                             power_routes_installed: None) -> None:  # noqa: F811
    BMCS.clear()
    client = await power_client(aiohttp_client, tmp_path)
    h = (await setup_admin(client)).headers()
    ctx = ctx_of_client(client)
    answer = await checkin.handle_checkin(ctx.fleet, agent_report("52:54:00:77:00:02",
                                                                  "192.0.2.78"),
                                          "10.99.0.78", Names("reports-a-bmc"))
    machine = answer["machine_id"] if "machine_id" in answer else answer["id"]
    form = await (await client.get(f"/api/machines/{machine}/bmc", headers=h)).json()
    assert form == {"machine": machine, "configured": False,
                    "suggested": {"driver": "ipmi", "address": "192.0.2.78"}}
    assert await (await client.get("/api/power", headers=h)).json() == []
    await client.put(f"/api/machines/{machine}/bmc",
                     json={"driver": "fake", "address": "192.0.2.78"}, headers=h)
    listed = await (await client.get("/api/power", headers=h)).json()
    assert [p["machine"] for p in listed] == [machine] and listed[0]["configured"]


async def test_reimage_boots_the_installed_machine_into_pxe_through_its_bmc(
        aiohttp_client: Any, tmp_path: Path, power_routes_installed: None) -> None:  # noqa: F811
    BMCS.clear()
    client = await power_client(aiohttp_client, tmp_path)
    h = (await setup_admin(client)).headers()
    ctx = ctx_of_client(client)
    installed = ctx.fleet.list_machines(state=State.INSTALLED.value, limit=2).items
    with_bmc, without = installed
    await client.put(f"/api/machines/{with_bmc.id}/bmc",
                     json={"driver": "fake", "address": "fake-reimage"}, headers=h)
    BMCS["fake-reimage"].state = "on"
    templates = await (await client.get("/api/templates", headers=h)).json()
    slug = templates[0]["slug"]

    done = await client.post(f"/api/machines/{with_bmc.id}/actions/reimage",
                             json={"template": slug}, headers=h)
    assert done.status == 200, await done.text()
    body = await done.json()
    assert body["bmc_boot"] == {"attempted": True, "ok": True, "ops": ["boot_pxe", "cycle"],
                             "error": ""}
    assert BMCS["fake-reimage"].boot == "pxe"
    calls = BMCS["fake-reimage"].calls
    # One-time PXE first, then the cycle (the fake has none: off, then on once it is off).
    after = calls[calls.index("boot pxe"):]
    assert "off" in after and after[-1] == "on", calls
    history = await (await client.get(f"/api/machines/{with_bmc.id}/history",
                                      headers=h)).json()
    assert any(e["kind"] == "power" and "one-time network boot" in e["message"]
               for e in history)

    plain = await (await client.post(f"/api/machines/{without.id}/actions/reimage",
                                     json={"template": slug}, headers=h)).json()
    assert plain["bmc_boot"]["attempted"] is False
    assert "no BMC configured" in plain["bmc_boot"]["error"]
