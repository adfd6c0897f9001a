"""The demo simulator keeps the fleet alive indefinitely.

The simulator is driven by hand: a fake clock shared with the fleet, and ``step(dt)`` called in a
loop, so two simulated hours take a couple of seconds. A listener on the store records every
change the simulator makes, so the assertions are about what the panel would have shown.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from dragonfly.auth import guard
from dragonfly.boot.log import BootLog
from dragonfly.demo import tinkerbell
from dragonfly.demo.simulator import MAX_MACHINES, MIN_MACHINES, Simulator
from dragonfly.domain import catalog
from dragonfly.domain.fleet import HISTORY, MACHINE, WORKFLOW, Fleet
from dragonfly.domain.model import TRANSITIONS, State, Workflow, check_transition
from dragonfly.store import Change, SqliteStore

START = 1_700_000_000.0
HOUR = 3600.0
STEP = 5.0  # simulated seconds per step; the live demo steps every second


@dataclass
class Sample:
    at: float
    size: int
    states: dict[str, int]
    active: list[Workflow]


@dataclass
class Trace:
    """Everything the simulator did, as seen from the store's change feed."""

    # (at, machine id, state before or None when registered, state after or None when deleted)
    moves: list[tuple[float, str, State | None, State | None]] = field(default_factory=list)
    # (at, machine id, action, from, to, message): the history line each transition writes
    actions: list[tuple[float, str, str, str, str, str]] = field(default_factory=list)
    started: dict[str, tuple[float, Workflow]] = field(default_factory=dict)
    finished: dict[str, tuple[float, Workflow]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # machine id -> last state_reason
    samples: list[Sample] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # fleet size after every step

    def actions_between(self, start: float, end: float) -> Counter[str]:
        return Counter(a[2] for a in self.actions if start <= a[0] < end)


class Harness:
    """A demo fleet over an in-memory store, a fake clock, and a recording of every change."""

    def __init__(self, seed: int = 7) -> None:
        self.now = START
        self.store = SqliteStore(":memory:")
        self.fleet = Fleet(self.store, clock=self.clock)
        self.sim = Simulator(self.fleet, seed=seed, clock=self.clock,
                             bootlog=BootLog(self.store, clock=self.clock))
        self.trace = Trace()
        self._states: dict[str, State] = {}

    def clock(self) -> float:
        return self.now

    async def __aenter__(self) -> Harness:
        await self.store.open()
        await self.fleet.start()
        self.store.add_listener(self._record)
        await self.sim.seed()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.store.remove_listener(self._record)
        self.fleet.stop()
        await self.store.close()

    def _record(self, change: Change) -> None:
        trace = self.trace
        if change.kind == MACHINE:
            before = self._states.get(change.key)
            if change.op == "delete":
                trace.moves.append((self.now, change.key, before, None))
                self._states.pop(change.key, None)
                return
            assert change.data is not None
            after = State(change.data["state"])
            trace.reasons[change.key] = change.data["state_reason"]
            if after is not before:
                trace.moves.append((self.now, change.key, before, after))
                self._states[change.key] = after
        elif change.kind == HISTORY and change.op == "put" and change.data is not None:
            data = change.data["data"]
            if change.data["kind"] == "state" and "action" in data:
                trace.actions.append((self.now, change.data["machine_id"], data["action"],
                                      data["from"], data["to"], change.data["message"]))
        elif change.kind == WORKFLOW and change.op == "put" and change.data is not None:
            wf = Workflow.from_dict(change.data)
            trace.started.setdefault(wf.id, (self.now, wf))
            if not wf.active:
                trace.finished.setdefault(wf.id, (self.now, wf))

    async def run(self, seconds: float, sample_every: float = 60.0) -> None:
        end = self.now + seconds
        next_sample = self.now
        while self.now < end:
            self.now += STEP
            await self.sim.step(STEP)
            self.trace.sizes.append(self.fleet.machine_count())
            if self.now >= next_sample:
                next_sample += sample_every
                stats = self.fleet.stats()
                self.trace.samples.append(Sample(self.now, stats["total"], stats["states"],
                                                 self.fleet.active_workflows()))


async def simulate(seed: int, seconds: float) -> Trace:
    async with Harness(seed) as harness:
        await harness.run(seconds)
        return harness.trace


@pytest.fixture(scope="module")
def two_hours() -> Iterator[Trace]:
    """Two simulated hours of the default demo (seed 7), shared by the steady-state tests."""
    yield asyncio.run(simulate(7, 2 * HOUR))


# --- the steady state -----------------------------------------------------------------------

def test_a_deployment_is_always_running(two_hours: Trace) -> None:
    after_warm_up = [s for s in two_hours.samples if s.at >= START + 600]
    assert len(after_warm_up) >= 100  # a sample every simulated minute
    idle = [round((s.at - START) / 60) for s in after_warm_up if not s.active]
    assert not idle, f"no deployment running at minute(s) {idle}"
    # and they move: deployments have a stage, progress, bytes and an ETA
    shown = [wf for sample in after_warm_up for wf in sample.active]
    assert all(0 <= wf.progress < 100 and wf.bytes_total > 0 for wf in shown)
    underway = [wf for wf in shown if wf.progress > 0]
    assert len(underway) > 0.8 * len(shown)  # the rest started this very step
    assert all(wf.stage and wf.eta_seconds and wf.eta_seconds > 0 for wf in underway)
    assert sum(1 for wf in underway if wf.bytes_done > 0) > 0.5 * len(underway)


def test_the_fleet_size_stays_within_bounds(two_hours: Trace) -> None:
    assert min(two_hours.sizes) >= MIN_MACHINES
    assert max(two_hours.sizes) <= MAX_MACHINES
    # ...and it is not pinned at the top, where discovery would stop
    second_hour = [s.size for s in two_hours.samples if s.at >= START + HOUR]
    assert min(second_hour) < MAX_MACHINES


def test_discovery_and_retirement_go_on(two_hours: Trace) -> None:
    late = START + HOUR
    registered = [m for m in two_hours.moves if m[2] is None and m[0] >= late]
    assert len(registered) >= 3, "no machine discovered in the second hour"
    assert all(m[3] is State.DISCOVERED for m in registered)
    deleted = [m for m in two_hours.moves if m[3] is None and m[0] >= late]
    assert len(deleted) >= 3, "no machine retired in the second hour"
    # retired through maintenance, with the reason saying so
    assert all(m[2] is State.MAINTENANCE for m in deleted)
    for _, machine_id, _, _ in deleted:
        assert two_hours.reasons[machine_id].startswith("Decommissioning:")


def test_deployments_finish_and_some_fail_with_a_reason(two_hours: Trace) -> None:
    late = START + HOUR
    finished = [wf for at, wf in two_hours.finished.values() if at >= late]
    succeeded = [wf for wf in finished if wf.state == "succeeded"]
    failed = [wf for wf in finished if wf.state == "failed"]
    assert len(succeeded) >= 20
    assert failed, "no deployment failed in the second hour"
    assert len(failed) < len(succeeded) / 5, "failures should be occasional"
    for wf in failed:
        assert wf.error and not wf.error.startswith("cancelled")
        failing = [a for a in wf.actions if a["state"] == "failed"]
        assert len(failing) == 1
        # the reason names the step the progress bar shows as failed
        assert wf.error.startswith(failing[0]["name"]), (wf.error, failing[0]["name"])
        assert wf.stage == failing[0]["name"] and wf.progress < 100
    # the machine carries the same reason, in its state and in its history
    errors = {(wf.machine_id, wf.error) for wf in failed}
    fails = [a for a in two_hours.actions if a[2] == "fail" and a[0] >= late]
    assert len(fails) == len(failed)
    for _, machine_id, _, _, _, message in fails:
        reason = message.split("(fail): ", 1)[1]
        assert (machine_id, reason) in errors


def test_failed_machines_are_recovered(two_hours: Trace) -> None:
    end = START + 2 * HOUR
    out_of_failed = [a for a in two_hours.actions if a[3] == "failed"]
    assert Counter(a[2] for a in out_of_failed)["deploy"] >= 5, "failed machines never retried"
    failures = [m for m in two_hours.moves if m[3] is State.FAILED and m[0] < end - 1200]
    assert len(failures) >= 5
    for at, machine_id, _, _ in failures:
        left = [m for m in two_hours.moves if m[1] == machine_id and m[2] is State.FAILED
                and at < m[0] <= at + 1200]
        assert left, f"machine {machine_id} stayed failed for 20 minutes"


def test_every_state_and_operator_action_shows_up(two_hours: Trace) -> None:
    late = [s for s in two_hours.samples if s.at >= START + HOUR]
    for state in State:
        share = sum(1 for s in late if s.states[state.value]) / len(late)
        assert share > 0.1, f"{state.value} is shown in only {share:.0%} of the second hour"
    actions = two_hours.actions_between(START + HOUR, START + 2 * HOUR)
    for action in ("adopt", "deploy", "reimage", "deployed", "fail", "maintenance",
                   "resume"):
        assert actions[action], f"nobody did {action} in the second hour"
    overall = two_hours.actions_between(START, START + 2 * HOUR)
    assert overall["release"] and overall["rediscover"]
    assert set(overall) <= set(TRANSITIONS)


def test_every_state_change_is_an_allowed_transition(two_hours: Trace) -> None:
    for at, machine_id, action, before, after, _ in two_hours.actions:
        assert check_transition(State(before), action).target.value == after, (at, machine_id)
    changes = [m for m in two_hours.moves if m[2] is not None and m[3] is not None]
    for _, _, before, after in changes:
        assert before is not None and after is not None
        assert any(before in t.sources and t.target is after for t in TRANSITIONS.values()), (
            f"{before.value} → {after.value} is not in the lifecycle table")
    # and each one went through Fleet.transition (which writes the history line)
    assert len(changes) == len(two_hours.actions) > 500


def test_tinkerbell_workflows_keep_appearing(two_hours: Trace) -> None:
    late = [wf for at, wf in two_hours.started.values() if at >= START + HOUR]
    engines = Counter(wf.engine for wf in late)
    assert engines["tinkerbell"] >= 10 and engines["native"] >= 10
    shown = [s for s in two_hours.samples
             if s.at >= START + HOUR and any(w.engine == "tinkerbell" for w in s.active)]
    assert len(shown) >= 10


# --- a Tinkerbell workflow up close ---------------------------------------------------------

async def test_a_tinkerbell_workflow_shows_its_actions_progressing() -> None:
    # The demo's Tinkerbell deployments carry the actions the real backend's translation
    # makes for their template (dragonfly.tinkerbell.translate).
    async with Harness(seed=5) as harness:
        fleet, sim = harness.fleet, harness.sim
        flow: Workflow | None = None
        for _ in range(200):  # an operator-started one, not one made up by the test
            await harness.run(STEP, sample_every=STEP)
            flow = next((w for w in fleet.active_workflows() if w.engine == "tinkerbell"
                         and w.progress < 20), None)
            if flow is not None:
                break
        assert flow is not None, "the simulator never started a Tinkerbell workflow"
        sim._doomed.pop(flow.id, None)  # see it through to the end
        made = tinkerbell.actions_for(catalog.template(flow.template))
        assert made is not None
        assert [a["name"] for a in flow.actions] == [n for n, _, _ in made] == [
            "stream-image", "write-seed", "boot-os"]
        assert [a["image"] for a in flow.actions] == [i for _, i, _ in made]

        running_seen: dict[str, list[float]] = {}
        last = -1.0
        while True:
            current = await fleet.get_workflow(flow.id)
            assert current.progress >= last
            last = current.progress
            states = [a["state"] for a in current.actions]
            # succeeded..., at most one running, then pending...
            order = {"succeeded": 0, "running": 1, "pending": 2}
            assert states == sorted(states, key=order.__getitem__), states
            assert states.count("running") <= 1
            for action in current.actions:
                if action["state"] == "running":
                    running_seen.setdefault(action["name"], []).append(action["progress"])
                    assert current.stage == action["name"]
                    assert action["started_at"] is not None
                if action["state"] == "succeeded":
                    assert action["progress"] == 100.0 and action["finished_at"] is not None
            if current.stage == "stream-image":
                assert 0 < current.bytes_done < current.bytes_total
                assert current.eta_seconds is not None and current.eta_seconds > 0
            if not current.active:
                break
            await harness.run(STEP, sample_every=HOUR)

        assert current.state == "succeeded" and current.progress == 100.0
        assert all(a["state"] == "succeeded" for a in current.actions)
        assert current.bytes_done == current.bytes_total
        # the long action was watched partway, with rising progress
        streaming = running_seen["stream-image"]
        assert len(streaming) >= 3 and streaming == sorted(streaming)
        assert 0 < streaming[0] < streaming[-1] < 100
        machine = fleet.get_machine(current.machine_id)
        assert machine.state is State.INSTALLED and machine.os == current.template
        assert any(a[1] == machine.id and a[2] == "deployed" for a in harness.trace.actions)


# --- determinism, guards and people poking at the demo --------------------------------------

def _story(trace: Trace, names: dict[str, str]) -> list[tuple[float, str, str]]:
    return [(at, names.get(machine_id, "?"), action)
            for at, machine_id, action, _, _, _ in trace.actions]


async def test_the_same_seed_tells_the_same_story() -> None:
    stories = []
    for _ in range(2):
        async with Harness(seed=11) as harness:
            names: dict[str, str] = {}
            harness.store.add_listener(
                lambda c, n=names: n.setdefault(c.key, c.data["name"])
                if c.kind == MACHINE and c.data else None)
            for machine in harness.fleet.list_machines(limit=100).items:
                names[machine.id] = machine.name
            await harness.run(900)
            stories.append(_story(harness.trace, names))
    assert len(stories[0]) > 50
    assert stories[0] == stories[1]


async def test_locks_and_safety_mode_hold_off_the_simulated_operator() -> None:
    destructive = {name for name, t in TRANSITIONS.items() if t.destructive}
    async with Harness(seed=3) as harness:
        store = harness.store
        await harness.run(300)
        locked = [m.id for m in harness.fleet.list_machines(limit=100).items
                  if m.state in (State.INSTALLED, State.READY)][:6]
        for machine_id in locked:
            await guard.set_lock(store, machine_id, "demo test", "tester", harness.now)
        mark = harness.now
        await harness.run(1200)
        touched = [a for a in harness.trace.actions if a[0] > mark and a[1] in locked
                   and a[2] in destructive]
        assert not touched
        assert not [m for m in harness.trace.moves if m[0] > mark and m[1] in locked
                    and m[3] is None]
        assert harness.trace.actions_between(mark, harness.now)["reimage"]  # others go on

        await guard.set_safety(store, True, "change freeze", "tester", harness.now)
        mark = harness.now
        await harness.run(1200)
        late = harness.trace.actions_between(mark + 1, harness.now)
        assert not set(late) & destructive, late
        assert not [m for m in harness.trace.moves if m[0] > mark and m[3] is None]
        assert late["adopt"] or late["maintenance"] or late["resume"]  # the rest goes on

        await guard.set_safety(store, False, "", "tester", harness.now)
        mark = harness.now
        await harness.run(300)
        assert harness.trace.actions_between(mark, harness.now)["reimage"]


async def test_a_machine_deleted_mid_deployment_ends_its_workflow() -> None:
    async with Harness(seed=7) as harness:
        flow = harness.fleet.active_workflows()[0]
        harness.sim._doomed.pop(flow.id, None)
        await harness.fleet.delete_machine(flow.machine_id)
        await harness.run(STEP)
        ended = await harness.fleet.get_workflow(flow.id)
        assert ended.state == "failed"
        assert ended.error == "cancelled: the machine was deleted from the inventory"
        assert flow.id not in {w.id for w in harness.fleet.active_workflows()}
        await harness.run(600)  # and the demo carries on
        assert harness.fleet.active_workflows()


def test_trace_helpers_see_what_they_should() -> None:
    """The recorder itself: a failing assertion above must mean the simulator, not the test."""
    async def go() -> Trace:
        async with Harness(seed=7) as harness:
            machine = next(m for m in harness.fleet.list_machines(limit=100).items
                           if m.state is State.READY)
            await harness.fleet.transition(machine.id, "maintenance", "test")
            return harness.trace
    trace = asyncio.run(go())
    assert trace.actions[-1][2:5] == ("maintenance", "ready", "maintenance")
    assert trace.moves[-1][2:] == (State.READY, State.MAINTENANCE)
    assert trace.reasons[trace.moves[-1][1]] == "test"
