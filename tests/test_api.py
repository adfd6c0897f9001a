"""The JSON API through aiohttp's test client, over the demo fleet (simulator paused)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dragonfly.app import create_app
from dragonfly.compose import demo_context
from dragonfly.demo.simulator import Simulator


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    # A tick of an hour: the simulator never moves on its own; tests call step() instead.
    ctx = demo_context(tick=3600)
    return await aiohttp_client(create_app(ctx))


def simulator(client: TestClient) -> Simulator:
    from dragonfly.context import CTX

    sim = client.app[CTX].services[0]
    assert isinstance(sim, Simulator)
    return sim


async def machines(client: TestClient, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/machines{query}")
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def test_demo_fleet_has_every_state(client: TestClient) -> None:
    data = await machines(client)
    assert data["total"] == 24
    assert all(count > 0 for count in data["states"].values())
    assert set(data["states"]) == {"discovered", "ready", "deploying", "installed", "failed",
                                   "maintenance"}
    row = data["items"][0]
    for field in ("id", "name", "state", "mac", "ip", "vendor", "serial", "tags",
                  "memory_bytes", "cpu_threads", "disk_bytes"):
        assert field in row


async def test_search_filter_sort(client: TestClient) -> None:
    everything = (await machines(client))["items"]
    target = everything[5]
    for term in (target["name"], target["mac"].upper(), target["ip"], target["serial"].lower()):
        found = (await machines(client, f"?q={term}"))["items"]
        assert target["id"] in [m["id"] for m in found], term
    tag = target["tags"][0]
    tagged = (await machines(client, f"?tag={tag}"))["items"]
    assert tagged and all(tag in m["tags"] for m in tagged)
    failed = await machines(client, "?state=failed")
    assert failed["total"] == 2 and all(m["state"] == "failed" for m in failed["items"])
    assert failed["states"]["installed"] == 10  # facet counts ignore the state filter
    by_memory = (await machines(client, "?sort=memory&order=desc"))["items"]
    assert [m["memory_bytes"] for m in by_memory] == sorted(
        (m["memory_bytes"] for m in everything), reverse=True)
    page = await machines(client, "?limit=5&offset=20")
    assert len(page["items"]) == 4 and page["total"] == 24


@pytest.mark.parametrize("query", ["?state=bogus", "?sort=nope", "?order=sideways",
                                   "?limit=0", "?limit=abc", "?offset=-1"])
async def test_bad_queries_are_400(client: TestClient, query: str) -> None:
    response = await client.get(f"/api/machines{query}")
    assert response.status == 400
    assert "error" in await response.json()


async def test_machine_detail_and_history(client: TestClient) -> None:
    row = (await machines(client, "?state=installed"))["items"][0]
    response = await client.get(f"/api/machines/{row['id']}")
    detail = await response.json()
    assert detail["nics"] and detail["disks"] and detail["bmc"]["ip"]
    assert detail["cpu"]["threads"] >= detail["cpu"]["cores"]
    assert "reimage" in detail["actions"]
    history = await (await client.get(f"/api/machines/{row['id']}/history")).json()
    assert history and history[0]["machine_id"] == row["id"]


async def test_tag_editing(client: TestClient) -> None:
    row = (await machines(client))["items"][0]
    url = f"/api/machines/{row['id']}/tags"
    response = await client.put(url, json={"tags": ["gpu", " rack-z9 ", "gpu"]})
    assert response.status == 200
    assert (await response.json())["tags"] == ["gpu", "rack-z9"]
    assert (await machines(client, "?tag=rack-z9"))["total"] == 1
    history = await (await client.get(f"/api/machines/{row['id']}/history")).json()
    assert history[0]["kind"] == "tags" and "rack-z9" in history[0]["message"]
    tags = await (await client.get("/api/tags")).json()
    assert {"name": "rack-z9", "count": 1} in tags


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"nope": 1}', 400, "tags"),
    (b'{"tags": "gpu"}', 400, "list"),
    (b'{"tags": [""]}', 400, "empty"),
    (b'{"tags": ["' + b"x" * 65 + b'"]}', 400, "at most 64"),
    (b'{"tags": ["bad\\u0007bell"]}', 400, "control"),
    (b'{"tags": [1]}', 400, "string"),
    (b"\xff\xfe", 400, "not valid JSON"),
])
async def test_bad_tag_bodies(client: TestClient, body: bytes, status: int,
                              message: str) -> None:
    row = (await machines(client))["items"][0]
    response = await client.put(f"/api/machines/{row['id']}/tags", data=body,
                                headers={"Content-Type": "application/json"})
    assert response.status == status
    payload = await response.json()
    assert message in payload["error"]


async def test_oversized_body_is_413(client: TestClient) -> None:
    row = (await machines(client))["items"][0]
    response = await client.put(f"/api/machines/{row['id']}/tags",
                                data=b'{"tags": ["' + b"a" * (2 << 20) + b'"]}',
                                headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "error" in await response.json()


async def test_unknown_ids_and_routes(client: TestClient) -> None:
    for method, url in [("GET", "/api/machines/nope"), ("PUT", "/api/machines/nope/tags"),
                        ("GET", "/api/workflows/nope"), ("GET", "/api/nothing-here"),
                        ("DELETE", "/api/tags/never-used")]:
        response = await client.request(method, url, json={"tags": []})
        assert response.status == 404, url
        assert (await response.json())["error"]
    response = await client.post("/api/version")
    assert response.status == 405
    assert "error" in await response.json()


async def test_bulk_tags_all_or_nothing(client: TestClient) -> None:
    rows = (await machines(client))["items"][:3]
    ids = [r["id"] for r in rows]
    response = await client.post("/api/machines/bulk/tags",
                                 json={"ids": [*ids, "missing"], "add": ["bulk"]})
    assert response.status == 404
    assert (await machines(client, "?tag=bulk"))["total"] == 0
    response = await client.post("/api/machines/bulk/tags",
                                 json={"ids": ids, "add": ["bulk"], "remove": [rows[0]["tags"][0]]})
    assert response.status == 200 and (await response.json())["updated"] == 3
    assert (await machines(client, "?tag=bulk"))["total"] == 3
    response = await client.post("/api/machines/bulk/tags", json={"ids": "x"})
    assert response.status == 400


async def test_rename_and_delete_tag(client: TestClient) -> None:
    rows = (await machines(client))["items"][:2]
    await client.post("/api/machines/bulk/tags", json={"ids": [r["id"] for r in rows],
                                                       "add": ["old-name"]})
    response = await client.put("/api/tags/old-name", json={"name": "new-name"})
    assert (await response.json())["updated"] == 2
    assert (await machines(client, "?tag=new-name"))["total"] == 2
    assert (await machines(client, "?tag=old-name"))["total"] == 0
    response = await client.delete("/api/tags/new-name")
    assert (await response.json())["updated"] == 2
    assert (await machines(client, "?tag=new-name"))["total"] == 0


async def test_lifecycle_actions(client: TestClient) -> None:
    discovered = (await machines(client, "?state=discovered"))["items"][0]
    response = await client.post(f"/api/machines/{discovered['id']}/actions/adopt")
    assert response.status == 200 and (await response.json())["state"] == "ready"
    response = await client.post(f"/api/machines/{discovered['id']}/actions/resume")
    assert response.status == 409
    assert "cannot resume" in (await response.json())["error"]
    response = await client.post(f"/api/machines/{discovered['id']}/actions/deploy",
                                 json={"template": "windows-95"})
    assert response.status == 400
    response = await client.post(f"/api/machines/{discovered['id']}/actions/deployed")
    assert response.status == 400  # internal transitions are not operator actions
    response = await client.post(f"/api/machines/{discovered['id']}/actions/deploy",
                                 json={"template": "debian-12"})
    body = await response.json()
    assert response.status == 200 and body["state"] == "deploying" and body["workflow_id"]
    workflow = await (await client.get(f"/api/workflows/{body['workflow_id']}")).json()
    assert workflow["template"] == "debian-12" and workflow["state"] == "running"


async def test_simulated_deployments_progress_and_finish(client: TestClient) -> None:
    sim = simulator(client)
    sim._doomed.clear()  # no failures in this test
    before = {w["id"]: w["progress"] for w in
              (await (await client.get("/api/stats")).json())["active_workflows"]}
    assert len(before) == 4
    await sim.step(5)
    after = {w["id"]: w for w in
             (await (await client.get("/api/stats")).json())["active_workflows"]}
    assert all(after[i]["progress"] > before[i] for i in before if i in after)
    for _ in range(100):
        sim._doomed.clear()
        await sim.step(5)
    for workflow_id in before:
        flow = await (await client.get(f"/api/workflows/{workflow_id}")).json()
        assert flow["state"] == "succeeded" and flow["progress"] == 100.0
        machine = await (await client.get(f"/api/machines/{flow['machine_id']}")).json()
        assert machine["state"] in ("installed", "deploying")  # may be redeployed by then


async def test_simulated_failure_leaves_a_reason(client: TestClient) -> None:
    sim = simulator(client)
    flows = (await (await client.get("/api/stats")).json())["active_workflows"]
    doomed = flows[0]["id"]
    sim._doomed[doomed] = (flows[0]["progress"] + 1, "stream image: disk on fire")
    await sim.step(30)
    flow = await (await client.get(f"/api/workflows/{doomed}")).json()
    assert flow["state"] == "failed" and flow["error"] == "stream image: disk on fire"
    machine = await (await client.get(f"/api/machines/{flow['machine_id']}")).json()
    assert machine["state"] == "failed"
    assert machine["state_reason"] == "stream image: disk on fire"


async def test_server_sent_events_deliver_changes(client: TestClient) -> None:
    row = (await machines(client))["items"][0]
    response = await client.get("/api/events")
    assert response.headers["Content-Type"] == "text/event-stream"
    hello = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert b"event: hello" in hello
    await client.put(f"/api/machines/{row['id']}/tags", json={"tags": ["sse-check"]})
    frames = []
    while not any(b"event: machine" in f for f in frames):
        frames.append(await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5))
    frame = next(f for f in frames if b"event: machine" in f)
    data = json.loads(frame.split(b"data: ", 1)[1])
    assert data["id"] == row["id"] and data["data"]["tags"] == ["sse-check"]
    response.close()


async def test_openapi_describes_every_route(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    from dragonfly.context import CTX

    for route in client.app[CTX].router.routes:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] and op["x-dragonfly-access"] in ("public", "read", "user",
                                                               "admin", "agent")
    assert "/api/machines/{id}/tags" in doc["paths"]


async def test_version(client: TestClient) -> None:
    data = await (await client.get("/api/version")).json()
    assert data["demo"] is True and data["version"]


async def test_register_machine_by_mac(client: TestClient) -> None:
    response = await client.post("/api/machines", json={"mac": "52-54-00-AA-BB-01",
                                                        "tags": ["staged"], "role": "db"})
    assert response.status == 201
    row = await response.json()
    assert row["mac"] == "52:54:00:aa:bb:01" and row["state"] == "discovered"
    assert row["name"] and row["tags"] == ["staged"]
    again = await client.post("/api/machines", json={"mac": "52:54:00:aa:bb:01"})
    assert again.status == 409
    for bad in ({"mac": "nope"}, {}, {"mac": "52:54:00:aa:bb:02", "tags": [""]},
                {"mac": "52:54:00:aa:bb:03", "name": "x" * 80}):
        response = await client.post("/api/machines", json=bad)
        assert response.status == 400, bad


async def test_the_demo_lists_no_images_and_refuses_image_bytes(client: TestClient) -> None:
    # The demo has no image store: its templates page lists nothing cached (not a 503), and
    # serving an image still says plainly that there is no store.
    listed = await client.get("/api/images")
    assert listed.status == 200 and await listed.json() == {"images": [], "downloads": []}
    served = await client.get("/images/" + "0" * 64)
    assert served.status == 503 and "no image store" in (await served.json())["error"]
