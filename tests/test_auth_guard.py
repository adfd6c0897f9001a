"""The molly guard: safety mode and per-node locks refuse destructive actions with 423, are
shown in machine JSON, and are audited."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dragonfly.auth.guard import DESTRUCTIVE_ACTIONS, guard_destructive
from dragonfly.errors import Locked
from tests.test_auth_fixtures import (
    add_user,
    ctx_of_client,
    installed_client,
    login,
    setup_admin,
)


async def body(response: Any) -> Any:
    return json.loads(await response.text())


def test_the_guard_covers_every_destructive_action() -> None:
    assert {"deploy", "reimage", "release"} <= DESTRUCTIVE_ACTIONS
    assert "adopt" not in DESTRUCTIVE_ACTIONS and "maintenance" not in DESTRUCTIVE_ACTIONS


async def test_safety_mode_blocks_destructive_actions(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    h = admin.headers()
    machines = (await body(await client.get("/api/machines?limit=100", headers=h)))["items"]
    by_state: dict[str, str] = {}
    for m in machines:
        by_state.setdefault(m["state"], m["id"])
    on = await client.put("/api/safety", json={"enabled": True, "reason": "change freeze"},
                          headers=h)
    assert on.status == 200
    assert (await body(await client.get("/api/safety", headers=h)))["enabled"] is True
    attempts = [("POST", f"/api/machines/{by_state['installed']}/actions/reimage"),
                ("POST", f"/api/machines/{by_state['ready']}/actions/deploy"),
                ("POST", f"/api/machines/{by_state['failed']}/actions/release"),
                ("DELETE", f"/api/machines/{by_state['discovered']}")]
    for method, path in attempts:
        response = await client.request(method, path, json={}, headers=h)
        data = await body(response)
        assert response.status == 423, (path, data)
        assert "safety mode is on" in data["error"] and "change freeze" in data["error"]
    # Nothing changed, and non-destructive actions still work.
    still = await body(await client.get(f"/api/machines/{by_state['installed']}", headers=h))
    assert still["state"] == "installed"
    adopt = await client.post(f"/api/machines/{by_state['discovered']}/actions/adopt",
                              json={}, headers=h)
    assert adopt.status == 200
    off = await client.put("/api/safety", json={"enabled": False}, headers=h)
    assert off.status == 200
    response = await client.post(f"/api/machines/{by_state['installed']}/actions/reimage",
                                 json={"template": "debian-12"}, headers=h)
    assert response.status == 200, await response.text()
    gone = await client.delete(f"/api/machines/{by_state['failed']}", headers=h)
    assert gone.status == 200
    assert (await client.get(f"/api/machines/{by_state['failed']}", headers=h)).status == 404
    log = await body(await client.get("/api/audit?action=machine", headers=h))
    outcomes = sorted((e["action"], e["outcome"]) for e in log)
    assert ("machine.reimage", "denied") in outcomes and ("machine.reimage", "ok") in outcomes
    assert ("machine.delete", "denied") in outcomes and ("machine.delete", "ok") in outcomes
    assert all(e["actor"] == "admin" for e in log)
    safety = await body(await client.get("/api/audit?action=safety", headers=h))
    assert [e["action"] for e in safety] == ["safety.off", "safety.on"]


async def test_node_locks(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    await add_user(client, admin, "ivy")
    ivy = await login(client, "ivy", "user password 22")
    machines = (await body(await client.get("/api/machines?state=installed",
                                            headers=admin.headers())))["items"]
    locked, free = machines[0]["id"], machines[1]["id"]
    # A user may lock (a protective act), only an admin may unlock.
    r = await client.put(f"/api/machines/{locked}/lock", json={"reason": "prod database"},
                         headers=ivy.headers())
    assert r.status == 200 and (await body(r))["lock"]["by"] == "ivy"
    assert (await client.delete(f"/api/machines/{locked}/lock",
                                headers=ivy.headers())).status == 403
    detail = await body(await client.get(f"/api/machines/{locked}", headers=ivy.headers()))
    assert detail["lock"]["reason"] == "prod database"
    listing = await body(await client.get("/api/machines?state=installed",
                                          headers=ivy.headers()))
    locks = {m["id"]: m["lock"] for m in listing["items"]}
    assert locks[locked]["by"] == "ivy" and locks[free] is None
    for method, path in (("POST", f"/api/machines/{locked}/actions/reimage"),
                         ("POST", f"/api/machines/{locked}/actions/release"),
                         ("DELETE", f"/api/machines/{locked}")):
        response = await client.request(method, path, json={}, headers=admin.headers())
        data = await body(response)
        assert response.status == 423, path
        assert "locked by ivy" in data["error"] and "prod database" in data["error"]
        assert data["detail"]["lock"]["machine"] == locked
    # The lock covers only its machine.
    ok = await client.post(f"/api/machines/{free}/actions/reimage",
                           json={"template": "debian-12"}, headers=admin.headers())
    assert ok.status == 200
    # Power actions (a later capability) go through the same check.
    ctx = ctx_of_client(client)
    with pytest.raises(Locked, match="power off"):
        await guard_destructive(ctx, locked, "power off")
    await guard_destructive(ctx, free, "power off")
    r = await client.delete(f"/api/machines/{locked}/lock", headers=admin.headers())
    assert r.status == 200
    assert (await body(await client.get(f"/api/machines/{locked}/lock",
                                        headers=ivy.headers())))["lock"] is None
    ok = await client.post(f"/api/machines/{locked}/actions/reimage",
                           json={"template": "debian-12"}, headers=admin.headers())
    assert ok.status == 200
    history = await body(await client.get(f"/api/machines/{locked}/history",
                                          headers=admin.headers()))
    lock_lines = [h["message"] for h in history if h["kind"] == "lock"]
    assert lock_lines == ["Unlocked by admin", "Locked by ivy: prod database"]
    audit = await body(await client.get(f"/api/audit?machine={locked}",
                                        headers=admin.headers()))
    # (the demo's machines have fake BMCs: the reimage boots the machine through its BMC,
    # audited on its own)
    assert [e["action"] for e in audit][:5] == ["machine.reimage", "machine.power.reimage",
                                                 "unlock", "machine.delete", "machine.release"]
    assert (await client.put("/api/machines/nope/lock", json={},
                             headers=admin.headers())).status == 404
