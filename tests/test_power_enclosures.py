"""OpenJBOD enclosures over the real routes, against a stand-in of the tank firmware's
documented HTTP API (tests/test_power_redfish.py's; no OpenJBOD simulator exists to run):
registered once with credentials, attached to machines, their state on those machines' pages,
power guarded by every attached machine's lock, audited, the password never shown."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dragonfly.power.enclosures import ENCLOSURE
from tests.test_auth_fixtures import add_user, ctx_of_client, login, setup_admin
from tests.test_power import power_client, power_routes_installed  # noqa: F401
from tests.test_power_redfish import PASSWORD, openjbod_app, serve


async def test_enclosures_are_registered_attached_guarded_and_switched(
        aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path,
        power_routes_installed: None, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    app, seen = openjbod_app(newer=False)
    base = await serve(aiohttp_server, app)
    client = await power_client(aiohttp_client, tmp_path)
    admin = await setup_admin(client)
    h = admin.headers()
    await add_user(client, admin, "ivy")
    ivy = await login(client, "ivy", "user password 22")
    items = (await (await client.get("/api/machines?limit=3", headers=h)).json())["items"]
    m1, m2, m3 = (m["id"] for m in items)

    body = {"name": "shelf-1", "address": base, "user": "admin", "password": PASSWORD,
            "machines": [m1, m2]}
    assert (await client.post("/api/enclosures", json=body,
                              headers=ivy.headers())).status == 403
    made = await client.post("/api/enclosures", json=body, headers=h)
    assert made.status == 200, await made.text()
    shown = await made.json()
    assert shown["machines"] == [m1, m2] and shown["has_password"] is True
    assert PASSWORD not in json.dumps(shown)
    assert (await client.post("/api/enclosures", json=body, headers=h)).status == 409
    bad = await client.post("/api/enclosures", json={**body, "name": "Shelf One"}, headers=h)
    assert bad.status == 400 and "name" in (await bad.json())["error"]

    # The attached machines' pages ask the controller; another machine has none.
    status = await (await client.get(f"/api/machines/{m1}/enclosures",
                                     headers=ivy.headers())).json()
    assert [(s["name"], s["state"], s["health"]) for s in status] == [("shelf-1", "off", "ok")]
    assert status[0]["actions"] == ["on", "off", "cycle"]
    assert await (await client.get(f"/api/machines/{m3}/enclosures", headers=h)).json() == []

    assert (await client.post("/api/enclosures/shelf-1/power/on",
                              headers=ivy.headers())).status == 403
    on = await client.post("/api/enclosures/shelf-1/power/on", headers=h)
    assert on.status == 200, await on.text()
    assert seen["on"] is True and seen["calls"][-1] == "POST /api/power/on"
    # A lock on any attached machine refuses switching its enclosure.
    await client.put(f"/api/machines/{m2}/lock", json={"reason": "rebuilding raid"}, headers=h)
    locked = await client.post("/api/enclosures/shelf-1/power/off", headers=h)
    assert locked.status == 423 and "rebuilding raid" in (await locked.json())["error"]
    assert seen["on"] is True
    # Detached, the lock no longer matters.
    moved = await client.put("/api/enclosures/shelf-1", json={"machines": [m1]}, headers=h)
    assert (await moved.json())["machines"] == [m1]
    assert (await client.post("/api/enclosures/shelf-1/power/off", headers=h)).status == 200
    assert seen["on"] is False

    # Wrong credentials: the page says so, in words.
    await client.put("/api/enclosures/shelf-1", json={"password": "wrong"}, headers=h)
    refused = await (await client.get(f"/api/machines/{m1}/enclosures", headers=h)).json()
    assert refused[0]["reason"] == "credentials" and "refused" in refused[0]["error"]

    audit = await (await client.get("/api/audit?action=enclosure", headers=h)).json()
    seen_audit = {(e["action"], e["outcome"]) for e in audit}
    assert {("enclosure.power.on", "ok"), ("enclosure.power.off", "denied"),
            ("enclosure.power.off", "ok"), ("enclosure.set", "ok")} <= seen_audit
    assert (await client.delete("/api/enclosures/shelf-1", headers=h)).status == 200
    assert (await client.get("/api/enclosures/shelf-1", headers=h)).status == 404
    store = ctx_of_client(client).store
    for kind in ("audit", ENCLOSURE, "history"):
        for doc in await store.list(kind):
            assert PASSWORD not in json.dumps(doc.data), kind
    assert PASSWORD not in caplog.text
