"""The deployment timer: finished workflows become history records (in a real sqlite file,
surviving a restart), the estimator learns from them (a faster machine gets a shorter
estimate; an estimate converges as a deployment proceeds; the basis says what it rests on),
and the API's figures add up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState
from dragonfly.store import SqliteStore
from dragonfly.timer.eta import MIN_SAMPLES, Estimator
from dragonfly.timer.history import (
    DEPLOYMENT,
    DeploymentHistory,
    DeploymentRecord,
    HardwareClass,
    Stage,
)

FAST = HardwareClass("Dell Inc.", "PowerEdge R650", "Xeon Gold 6338", 64, 256, "nvme", 960)
SLOW = HardwareClass("HPE", "ProLiant DL360 Gen9", "Xeon E5-2620 v4", 16, 64, "hdd", 2000)
# (stage, seconds on FAST, seconds on SLOW, bytes)
STAGES = (("prepare-image", 5, 5, 0), ("select-disk", 1, 2, 0),
          ("stream-image", 60, 240, 2_400_000_000), ("verify", 20, 80, 0),
          ("reboot", 5, 15, 0), ("first-boot", 60, 180, 0))


def record(n: int, hw: HardwareClass, template: str = "debian-12", *, ok: bool = True,
           end: float | None = None, jitter: float = 1.0) -> DeploymentRecord:
    slow = hw == SLOW
    stages, t = [], 1000.0 * n
    for name, fast_s, slow_s, size in STAGES:
        seconds = (slow_s if slow else fast_s) * jitter
        stages.append(Stage(name, name, "succeeded", t, seconds, size))
        t += seconds
    finished = end if end is not None else t
    return DeploymentRecord(f"wf{n}", f"m{n}", f"node-{n}", template, "native", hw,
                            "succeeded" if ok else "failed", "" if ok else "checksum mismatch",
                            finished - (t - 1000.0 * n), finished, stages)


def running_workflow(template: str = "debian-12") -> Workflow:
    actions = [{"name": name, "label": name, "state": "pending", "share": 0.1,
                "bytes_done": 0, "bytes_total": 0, "rate": 0.0, "started_at": None,
                "finished_at": None} for name, *_ in STAGES]
    return Workflow("wf-new", "m-new", template, state=WorkflowState.RUNNING, actions=actions,
                    started_at=0.0, image={"raw_size": 2_400_000_000})


def machine_of(hw: HardwareClass) -> Machine:
    return Machine("m-new", "node-new", State.DEPLOYING, "aa:bb:cc:dd:ee:01",
                   vendor=hw.vendor, product=hw.product,
                   cpu={"model": hw.cpu_model, "cores": hw.cores},
                   memory_bytes=hw.memory_gib << 30,
                   disks=[{"name": "nvme0n1" if hw.disk_kind == "nvme" else "sda",
                           "size_bytes": hw.disk_gib << 30, "rotational": hw.disk_kind == "hdd",
                           "removable": False}])


async def history_with(records: list[DeploymentRecord]) -> tuple[DeploymentHistory, SqliteStore]:
    store = SqliteStore(":memory:")
    await store.open()
    history = DeploymentHistory(store, lambda _id: None)
    await history.start()
    await history.ready()
    for r in records:
        await history.add(r)
    return history, store


async def test_a_faster_machine_gets_a_shorter_estimate_and_the_basis_says_why() -> None:
    records = [record(i, FAST, jitter=1 + i / 100) for i in range(5)]
    records += [record(10 + i, SLOW, jitter=1 + i / 100) for i in range(4)]
    history, store = await history_with(records)
    try:
        estimator = Estimator(history)
        fast = estimator.estimate(running_workflow(), machine_of(FAST), 0.0)
        slow = estimator.estimate(running_workflow(), machine_of(SLOW), 0.0)
        assert fast.seconds is not None and slow.seconds is not None
        assert fast.seconds < slow.seconds / 2, (fast, slow)
        assert fast.basis == "from 5 debian-12 deployments on Dell PowerEdge R650"
        assert slow.basis == "from 4 debian-12 deployments on HPE ProLiant DL360 Gen9"
        # The stream is estimated from the group's rate and the image's size.
        assert abs(fast.seconds - sum(s[1] for s in STAGES) * 1.02) < 10, fast
        # A template nobody deployed on this hardware: the same hardware, any template.
        other = estimator.estimate(running_workflow("rocky-9"), machine_of(FAST), 0.0)
        assert other.basis == "from 5 deployments on Dell PowerEdge R650"
        # Unknown hardware and template: every deployment; none at all: rough defaults.
        unknown = estimator.estimate(running_workflow("rocky-9"), None, 0.0)
        assert unknown.basis == f"from {len(records)} deployments of any template"
    finally:
        await history.stop()
        await store.close()
    empty, store = await history_with([])
    try:
        guess = Estimator(empty).estimate(running_workflow(), machine_of(FAST), 0.0)
        assert guess.basis.startswith("rough defaults") and guess.samples == 0
        assert guess.seconds and guess.seconds > 0
    finally:
        await empty.stop()
        await store.close()


async def test_the_estimate_converges_as_the_deployment_proceeds() -> None:
    history, store = await history_with([record(i, FAST) for i in range(MIN_SAMPLES + 2)])
    try:
        estimator = Estimator(history)
        wf = running_workflow()
        # Play a deployment on FAST hardware that is 50% slower than the history: the error
        # of (elapsed + estimate) against the real total shrinks to zero.
        truth = sum(s[1] for s in STAGES) * 1.5
        now, errors = 0.0, []
        for action, (_name, fast_s, _slow, size) in zip(wf.actions, STAGES, strict=True):
            action.update(state="running", started_at=now)
            if size:  # halfway through the stream, with the observed (slow) rate
                rate = size / (fast_s * 1.5)
                action.update(bytes_total=size, bytes_done=size // 2, rate=rate)
                eta = estimator.estimate(wf, machine_of(FAST), now + fast_s * 0.75).seconds
                assert eta is not None
                errors.append(abs(now + fast_s * 0.75 + eta - truth))
            now += fast_s * 1.5
            action.update(state="succeeded", finished_at=now)
            eta = estimator.estimate(wf, machine_of(FAST), now).seconds
            assert eta is not None
            errors.append(abs(now + eta - truth))
        assert errors[-1] == 0.0
        assert errors[0] > errors[len(errors) // 2] > errors[-1], errors
    finally:
        await history.stop()
        await store.close()


async def test_finished_workflows_are_recorded_once_and_survive_a_restart(
        tmp_path: Path) -> None:
    db = tmp_path / "dragonfly.db"
    store = SqliteStore(db)
    await store.open()
    fleet = Fleet(store)
    await fleet.start()
    history = DeploymentHistory(store, fleet.lookup)
    await history.start()
    machine = machine_of(FAST)
    machine.state = State.READY
    await fleet.add_machine(machine)
    wf = running_workflow()
    wf.machine_id = machine.id
    await fleet.start_workflow(machine.id, "deploy", wf)
    wf.actions[0].update(state="succeeded", started_at=time.time() - 50,
                         finished_at=time.time() - 40)
    wf.actions[1].update(state="failed", started_at=time.time() - 40,
                         finished_at=time.time() - 39, bytes_done=0)
    wf.state, wf.error, wf.finished_at = WorkflowState.FAILED, "select-disk: no disk", time.time()
    await fleet.save_workflow(wf)
    await fleet.save_workflow(wf)  # saved twice: recorded once

    for _ in range(100):
        if history.records:
            break
        await asyncio.sleep(0.01)
    assert [(r.id, r.result, r.reason) for r in history.records] == [
        ("wf-new", "failed", "select-disk: no disk")]
    assert history.records[0].hardware == HardwareClass.of(machine)
    assert [s["name"] for s in history.records[0].stages] == ["prepare-image", "select-disk"]
    await history.stop()
    fleet.stop()
    await store.close()

    store = SqliteStore(db)  # the same file, as after a restart
    await store.open()
    again = DeploymentHistory(store, lambda _id: None)
    await again.start()
    await again.ready()
    try:
        assert [r.id for r in again.records] == ["wf-new"]
        assert len(await store.list(DEPLOYMENT)) == 1
    finally:
        await again.stop()
        await store.close()


async def test_stats_add_up() -> None:
    now = time.time()
    records = [record(i, FAST, end=now - 3600 * i) for i in range(30)]
    records += [record(100 + i, SLOW, "rocky-9", ok=i % 2 == 0, end=now - 86400 * 3 - i)
                for i in range(6)]
    history, store = await history_with(records)
    try:
        stats: dict[str, Any] = history.stats()
        assert (stats["total"], stats["deployed"], stats["failed"]) == (36, 33, 3)
        assert stats["last_24h"]["deployed"] == 24  # hours 0..23 ago
        assert len(stats["recent"]) == 36 and stats["recent"][-1]["id"] == "wf0"
        by_template = {g["name"]: g for g in stats["by_template"]}
        assert (by_template["rocky-9"]["succeeded"], by_template["rocky-9"]["failed"]) == (3, 3)
        assert {g["name"] for g in stats["by_hardware"]} == {
            "Dell PowerEdge R650", "HPE ProLiant DL360 Gen9"}
        assert sum(h["succeeded"] + h["failed"] for h in stats["by_hour"]) == 36
        assert sum(d["succeeded"] + d["failed"] for d in stats["by_day"]) == 36
        fast_total = sum(s[1] for s in STAGES)
        assert by_template["debian-12"]["median_seconds"] == fast_total
    finally:
        await history.stop()
        await store.close()


async def test_the_demos_deployments_reach_the_history_and_the_api(aiohttp_client: Any) -> None:
    from dragonfly.app import create_app
    from dragonfly.compose import demo_context
    from dragonfly.context import CTX
    from dragonfly.demo.simulator import Simulator

    client = await aiohttp_client(create_app(demo_context(tick=3600)))
    sim = client.app[CTX].services[0]
    assert isinstance(sim, Simulator)
    history = client.app[CTX].timer
    assert history is not None
    before = len(history.records)
    active = (await (await client.get("/api/stats")).json())["active_workflows"]
    for _ in range(100):
        sim._doomed.clear()
        await sim.step(5)
    await asyncio.sleep(0.05)  # the history follows the store's change feed
    listed = await (await client.get("/api/deployments?limit=1000")).json()
    assert len(listed) == len(history.records) > before
    finished = {d["id"] for d in listed}
    assert {w["id"] for w in active} <= finished
    one = next(d for d in listed if d["id"] == active[0]["id"])
    assert one["result"] == "succeeded" and one["stages"] and one["model"]
    assert one["hardware"]["vendor"]  # (seconds: the test steps the simulator in no time)
    flow = await (await client.get(f"/api/workflows/{one['id']}")).json()
    assert [s["name"] for s in one["stages"]] == [a["name"] for a in flow["actions"]]
    only = await (await client.get(f"/api/deployments?machine={one['machine_id']}")).json()
    assert only and all(d["machine_id"] == one["machine_id"] for d in only)
    stats = await (await client.get("/api/deployments/stats?tz_offset=60")).json()
    assert stats["total"] == len(listed) and stats["deployed"] >= len(active)
    bad = await client.get("/api/deployments/stats?tz_offset=9999")
    assert bad.status == 400 and "tz_offset" in (await bad.json())["error"]
    # A running deployment carries the timer's estimate and its basis.
    running = (await (await client.get("/api/stats")).json())["active_workflows"]
    if running:
        flow = await (await client.get(f"/api/workflows/{running[0]['id']}")).json()
        assert flow["eta_basis"] and flow["eta_seconds"] is not None


async def test_a_stage_missing_from_the_closest_group_comes_from_a_wider_one() -> None:
    # The closest group (this template on this hardware) ran another engine's stages only:
    # a stage it never timed is taken from the deployments that did, not from the defaults.
    others = [record(i, FAST) for i in range(4)]
    tinkerbell = []
    for i in range(4):
        r = record(50 + i, SLOW, "ubuntu-24.04")
        r.stages = [Stage("image2disk", "image2disk", "succeeded", 0.0, 33.0, 0)]
        tinkerbell.append(r)
    history, store = await history_with(others + tinkerbell)
    try:
        wf = running_workflow()
        wf.actions = [{"name": "image2disk", "state": "pending", "share": 0.5}]
        found = Estimator(history).estimate(wf, machine_of(FAST), 0.0)
        assert found.seconds == 33.0, found
        assert found.basis == "from 4 debian-12 deployments on Dell PowerEdge R650"
    finally:
        await history.stop()
        await store.close()
