"""Operator commands for a machine's discovery agent through the API: queued by an admin,
collected exactly once by the agent's next heartbeat or check-in, refused by the molly guard
(423), to users (403), for unknown machines (404), bad commands (400) and machines without a
live agent (409); recorded in the history (and so on the event stream) and the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.test_agent_checkin import report_body
from tests.test_auth_fixtures import (
    Client,
    Clock,
    Who,
    add_user,
    ctx_of_client,
    installed_client,
    login,
    setup_admin,
)

URL = "/api/machines/{}/agent/commands"


async def body(response: Any) -> Any:
    return json.loads(await response.text())


async def people(aiohttp_client: Any) -> tuple[Client, Who, Who, Clock]:
    client = await installed_client(aiohttp_client)
    clock = Clock(1_900_000_000.0)
    ctx_of_client(client).fleet.clock = clock
    admin = await setup_admin(client)
    await add_user(client, admin, "uma")
    return client, admin, await login(client, "uma", "user password 22"), clock


async def agent_checks_in(client: Client) -> str:
    """A discovery agent reports in (the agent routes need no login); its machine's id."""
    response = await client.post("/api/agent/checkin", json=report_body())
    answer = await body(response)
    assert response.status == 200 and answer["action"] == "wait", answer
    return str(answer["machine_id"])


async def heartbeat(client: Client, machine_id: str) -> str:
    response = await client.post("/api/agent/heartbeat", json={"machine_id": machine_id})
    assert response.status == 200
    return str((await body(response))["action"])


async def test_queued_command_reaches_the_next_heartbeat_exactly_once(aiohttp_client: Any
                                                                      ) -> None:
    client, admin, _, _ = await people(aiohttp_client)
    machine_id = await agent_checks_in(client)
    status = await body(await client.get(f"/api/machines/{machine_id}/agent",
                                         headers=admin.headers()))
    assert status["live"] is True and status["pending"] is None

    events = await client.get("/api/events", headers=admin.headers())
    assert b"event: hello" in await asyncio.wait_for(events.content.readuntil(b"\n\n"), 5)

    response = await client.post(URL.format(machine_id), json={"command": "reboot"},
                                 headers=admin.headers())
    data = await body(response)
    assert response.status == 202, data
    assert data["command"] == "reboot" and data["replaced"] is None
    assert data["agent"]["pending"]["command"] == "reboot"
    assert data["agent"]["pending"]["by"] == "admin"

    # The history line goes out on the event stream.
    frames: list[bytes] = []
    while not any(b"requested by admin" in f for f in frames):
        frames.append(await asyncio.wait_for(events.content.readuntil(b"\n\n"), 5))
    frame = next(f for f in frames if b"requested by admin" in f)
    assert frame.startswith(b"event: history")
    event = json.loads(frame.split(b"data: ", 1)[1])
    assert event["data"]["machine_id"] == machine_id
    assert event["data"]["data"]["action"] == "reboot"
    events.close()

    assert await heartbeat(client, machine_id) == "reboot"
    # Collected: the agent has left, so nothing more can be queued until it reports again.
    status = await body(await client.get(f"/api/machines/{machine_id}/agent",
                                         headers=admin.headers()))
    assert status["live"] is False and "told to reboot" in status["reason"]
    refused = await client.post(URL.format(machine_id), json={"command": "poweroff"},
                                headers=admin.headers())
    assert refused.status == 409
    assert "told to reboot" in (await body(refused))["error"]
    assert await heartbeat(client, machine_id) == "wait"  # once only

    history = await body(await client.get(f"/api/machines/{machine_id}/history",
                                          headers=admin.headers()))
    messages = [h["message"] for h in history if h["kind"] == "agent"]
    assert messages[0] == "Told the agent to reboot"
    assert messages[1] == ("Reboot requested by admin: the agent gets it at its next "
                           "heartbeat")
    audit = await body(await client.get(f"/api/audit?machine={machine_id}",
                                        headers=admin.headers()))
    assert [(e["action"], e["outcome"]) for e in audit] == [
        ("machine.power.off", "failed"), ("machine.power.reboot", "ok")]
    assert audit[1]["actor"] == "admin" and audit[1]["detail"]["command"] == "reboot"


async def test_a_check_in_collects_it_too_and_a_new_command_replaces_the_old(
        aiohttp_client: Any) -> None:
    client, admin, _, _ = await people(aiohttp_client)
    machine_id = await agent_checks_in(client)
    for command in ("reboot", "localboot"):
        response = await client.post(URL.format(machine_id), json={"command": command},
                                     headers=admin.headers())
        assert response.status == 202
    assert (await body(response))["replaced"]["command"] == "reboot"
    response = await client.post("/api/agent/checkin", json=report_body())
    assert (await body(response))["action"] == "localboot"
    assert await heartbeat(client, machine_id) == "wait"


async def test_a_pending_command_can_be_withdrawn(aiohttp_client: Any) -> None:
    client, admin, user, _ = await people(aiohttp_client)
    machine_id = await agent_checks_in(client)
    await client.post(URL.format(machine_id), json={"command": "poweroff"},
                      headers=admin.headers())
    assert (await client.delete(URL.format(machine_id), headers=user.headers())).status == 403
    response = await client.delete(URL.format(machine_id), headers=admin.headers())
    assert (await body(response))["cancelled"]["command"] == "poweroff"
    assert await heartbeat(client, machine_id) == "wait"
    again = await body(await client.delete(URL.format(machine_id), headers=admin.headers()))
    assert again["cancelled"] is None
    # Deleting the machine drops what was queued for it.
    await client.post(URL.format(machine_id), json={"command": "reboot"},
                      headers=admin.headers())
    commands = ctx_of_client(client).commands
    assert commands.pending(machine_id) == "reboot"
    gone = await client.delete(f"/api/machines/{machine_id}", headers=admin.headers())
    assert gone.status == 200
    assert commands.pending(machine_id) is None and commands.last_answer(machine_id) is None


async def test_refusals(aiohttp_client: Any) -> None:
    client, admin, user, clock = await people(aiohttp_client)
    machine_id = await agent_checks_in(client)
    url = URL.format(machine_id)

    response = await client.post(url, json={"command": "reboot"}, headers=user.headers())
    data = await body(response)
    assert response.status == 403 and data["detail"]["refused"] == "access"
    response = await client.post(URL.format("no-such-machine"), json={"command": "reboot"},
                                 headers=admin.headers())
    assert response.status == 404 and "no-such-machine" in (await body(response))["error"]
    for bad in ({"command": "format-disk"}, {"command": 3}, {}, []):
        response = await client.post(url, json=bad, headers=admin.headers())
        data = await body(response)
        assert response.status == 400, bad
        assert "reboot, poweroff, localboot" in data["error"] or "JSON object" in data["error"]
    response = await client.post(url, data=b"", headers={**admin.headers(),
                                                         "Content-Type": "application/json"})
    assert response.status == 400

    # A machine nobody has heard from lately: 409, saying when it was last heard from.
    clock.advance(600)
    response = await client.post(url, json={"command": "reboot"}, headers=admin.headers())
    data = await body(response)
    assert response.status == 409
    assert "last heard from 10 min ago" in data["error"]
    assert data["detail"]["agent"]["live"] is False
    assert await heartbeat(client, machine_id) == "wait"  # back, and live again


async def test_safety_mode_and_locks_refuse_with_423(aiohttp_client: Any) -> None:
    client, admin, user, _ = await people(aiohttp_client)
    machine_id = await agent_checks_in(client)
    url = URL.format(machine_id)
    on = await client.put("/api/safety", json={"enabled": True, "reason": "change freeze"},
                          headers=admin.headers())
    assert on.status == 200
    for command, what in (("reboot", "reboot"), ("poweroff", "power off"),
                          ("localboot", "reboot to the local disk")):
        response = await client.post(url, json={"command": command}, headers=admin.headers())
        data = await body(response)
        assert response.status == 423, data
        assert f"safety mode is on: {what} is disabled" in data["error"]
        assert "change freeze" in data["error"]
    await client.put("/api/safety", json={"enabled": False}, headers=admin.headers())

    lock = await client.put(f"/api/machines/{machine_id}/lock", json={"reason": "burn-in"},
                            headers=user.headers())
    assert lock.status == 200
    response = await client.post(url, json={"command": "poweroff"}, headers=admin.headers())
    data = await body(response)
    assert response.status == 423 and "locked by uma" in data["error"]
    assert "burn-in" in data["error"] and data["detail"]["lock"]["machine"] == machine_id
    assert await heartbeat(client, machine_id) == "wait"  # nothing was queued

    await client.delete(f"/api/machines/{machine_id}/lock", headers=admin.headers())
    response = await client.post(url, json={"command": "poweroff"}, headers=admin.headers())
    assert response.status == 202
    audit = await body(await client.get("/api/audit?action=machine.power",
                                        headers=admin.headers()))
    outcomes = [(e["action"], e["outcome"]) for e in audit]
    assert outcomes == [("machine.power.off", "ok"), ("machine.power.off", "denied"),
                        ("machine.power.localboot", "denied"), ("machine.power.off", "denied"),
                        ("machine.power.reboot", "denied")]
    assert all(e["detail"].get("blocked_by") == "guard" for e in audit[1:])


async def test_the_demo_agents_heartbeat_and_obey(aiohttp_client: Any) -> None:
    from dragonfly.app import create_app
    from dragonfly.compose import demo_context
    from dragonfly.demo.simulator import REBOOT_SECONDS, Simulator

    ctx = demo_context(tick=3600)
    client = await aiohttp_client(create_app(ctx))
    sim = ctx.services[0]
    assert isinstance(sim, Simulator)
    clock = Clock(ctx.fleet.clock())
    sim.clock = ctx.fleet.clock = clock
    await sim.step(0)  # every powered discovered machine's agent reports in
    rows = (await body(await client.get("/api/machines?state=discovered")))["items"]
    machine_id = next(r["id"] for r in rows if r["power"] == "on")
    status = await body(await client.get(f"/api/machines/{machine_id}/agent"))
    assert status["live"] is True, status

    response = await client.post(URL.format(machine_id), json={"command": "reboot"})
    assert response.status == 202, await response.text()
    clock.advance(1)
    await sim.step(1)  # the next heartbeat collects it at once
    status = await body(await client.get(f"/api/machines/{machine_id}/agent"))
    assert status["live"] is False and "told to reboot" in status["reason"]
    clock.advance(REBOOT_SECONDS)
    await sim.step(REBOOT_SECONDS)
    status = await body(await client.get(f"/api/machines/{machine_id}/agent"))
    assert status["live"] is True
    history = await body(await client.get(f"/api/machines/{machine_id}/history"))
    assert [h["message"] for h in history[:2]] == [
        "Rebooted into discovery; the agent checked in again", "Told the agent to reboot"]

    response = await client.post(URL.format(machine_id), json={"command": "poweroff"})
    assert response.status == 202
    clock.advance(1)
    await sim.step(1)
    machine = await body(await client.get(f"/api/machines/{machine_id}"))
    assert machine["power"] == "off"
    clock.advance(300)
    await sim.step(300)
    status = await body(await client.get(f"/api/machines/{machine_id}/agent"))
    assert status["live"] is False  # powered off: no more heartbeats
