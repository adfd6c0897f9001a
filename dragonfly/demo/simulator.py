"""Drives the demo fleet live: deployments advance, machines get discovered, some fail.

A simulated operator keeps the fleet in a steady state, however long the demo runs: when few
deployments are running it starts more (deploys ready machines, reimages installed ones), adopts
what discovery found, retries failed machines after a while, releases machines back to the pool,
sends one to maintenance and brings it back, and decommissions old machines (maintenance, then
delete) so that discovery keeps finding new ones while the fleet stays between
``MIN_MACHINES`` and ``MAX_MACHINES``. It respects node locks and safety mode like a person
using the panel would.

The simulator only goes through ``Fleet`` (and so through the lifecycle table), exactly as the
real agent and workflow engine do. ``step(dt)`` is deterministic for a given seed and clock, so
tests advance it by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dragonfly.agent.checkin import POLL_DEFAULT, AgentCommands, Heartbeat, handle_heartbeat
from dragonfly.auth import guard
from dragonfly.boot.log import BootLog
from dragonfly.demo import tinkerbell
from dragonfly.demo.bootedge import DemoBootEdge
from dragonfly.demo.fleet import (
    FAILURES,
    MAINTENANCE_REASONS,
    RETIRE_REASONS,
    STAGE_FAILURES,
    START_STATES,
    make_machine,
)
from dragonfly.domain import catalog
from dragonfly.domain.fleet import WORKFLOW, Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState
from dragonfly.domain.naming import memorable_name
from dragonfly.errors import Conflict, NotFound
from dragonfly.store import Delete

log = logging.getLogger(__name__)

MAX_MACHINES = 32  # discovery pauses at this fleet size...
MIN_MACHINES = 24  # ...and decommissioning never takes the fleet below this one
RETIRE_FROM = 28  # the operator only decommissions machines once the fleet is this big
MIN_ACTIVE = 2  # with fewer deployments running, the operator starts one on the next tick
MAX_ACTIVE = 5  # and never more than this many at once
REBOOT_SECONDS = 20.0  # a demo machine told to reboot is back in discovery after this long
DEMO_SPEED_BYTES = (45_000_000, 120_000_000)  # bytes/s per deployment: a demo deploy takes ~1 min
FAIL_CHANCE = 0.06
TINKERBELL_SHARE = 0.4  # of the deployments the operator starts

# How long (simulated seconds) a machine stays in a state before the operator acts on it.
DWELL: dict[State, tuple[float, float]] = {
    State.DISCOVERED: (120, 480),
    State.READY: (180, 900),
    State.DEPLOYING: (0, 0),
    State.INSTALLED: (600, 1800),
    State.FAILED: (180, 480),
    State.MAINTENANCE: (300, 900),
}
RETIRE_AFTER = (90, 240)  # a decommissioned machine waits in maintenance, then is deleted
OPERATOR_EVERY = (15, 30)
URGENT_EVERY = (3, 8)  # spacing of "too few deployments" starts
DISCOVERY_EVERY = (30, 90)  # while the fleet is small
DISCOVERY_EVERY_FULL = (180, 420)  # once it is big enough to be decommissioning machines
# Chances, per operator tick (every ~20 s), of the chores nothing forces.
MAINTENANCE_CHANCE = 0.03
RELEASE_CHANCE = 0.03
DECOMMISSION_CHANCE = 0.15

def demo_name(role: str, index: int, state: State, rng: random.Random) -> str:
    if role:
        return f"{role}-{index:02d}"
    return memorable_name(":".join(f"{rng.randrange(256):02x}" for _ in range(6)))


class Simulator:
    name = "demo simulator"

    def __init__(self, fleet: Fleet, seed: int = 7, tick: float = 1.0,
                 clock: Callable[[], float] = time.time, bootlog: BootLog | None = None,
                 commands: AgentCommands | None = None) -> None:
        self.fleet = fleet
        self.bootlog = bootlog
        # The discovery agents of discovered machines: they heartbeat and obey commands.
        self.commands = commands
        self._rebooting: dict[str, float] = {}  # machine id -> when it is back in discovery
        self.boot_edge = DemoBootEdge(clock)  # GET /api/boot/status without sockets
        self.rng = random.Random(seed)
        self.tick = tick
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._rates: dict[str, float] = {}
        self._doomed: dict[str, tuple[float, str]] = {}  # workflow id -> (fail at %, reason)
        self._next_discovery = 0.0
        self._next_deploy = 0.0
        self._next_start = 0.0
        self._index = 0
        # What the operator knows about each machine: the state it last saw it in and when it
        # will next act on it; and the decommissioned machines waiting to be deleted.
        self._seen: dict[str, State] = {}
        self._due: dict[str, float] = {}
        self._retiring: dict[str, float] = {}  # machine id -> delete at

    # --- Service ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.fleet.machine_count() == 0:
            await self.seed()
        self._task = asyncio.create_task(self._run(), name="demo-simulator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        last = self.clock()
        while True:
            await asyncio.sleep(self.tick)
            now = self.clock()
            try:
                await self.step(now - last)
            except Exception:
                # A demo hiccup must never kill the demo: log and carry on next tick.
                log.exception("demo simulator step failed")
            last = now

    # --- the fleet ----------------------------------------------------------------------------

    async def seed(self) -> None:
        now = self.clock()
        roles_seen: dict[str, int] = {}
        for state in START_STATES:
            machine = self._new_machine(state, now, roles_seen)
            if state is State.DEPLOYING:
                machine.state = State.READY
                await self.fleet.add_machine(machine, "Adopted into the fleet")
                engine = "tinkerbell" if self._index % 2 == 0 else "native"
                template = self._pick_template()
                if engine == "tinkerbell" and template not in tinkerbell.TEMPLATES:
                    template = self.rng.choice(tinkerbell.TEMPLATES)
                await self.start_deployment(machine, "deploy", template, "demo",
                                            engine=engine,
                                            head_start=self.rng.uniform(0.05, 0.6))
                continue
            if state is State.INSTALLED:
                machine.os = self._pick_template()
            elif state is State.FAILED:
                machine.state_reason = self.rng.choice(FAILURES)
            elif state is State.DISCOVERED:
                self._boot_chain(machine, uefi=self.rng.random() < 0.7)
            elif state is State.MAINTENANCE:
                machine.state_reason = self.rng.choice(MAINTENANCE_REASONS)
                machine.power = "off"
            await self.fleet.add_machine(machine, f"Registered ({state.value})")
        if self.bootlog is not None:
            # A machine whose chain stops after the offer, so the boot doctor has a case to show.
            stuck = "3c:ec:ef:4a:19:02"
            self.boot_edge.booted(False, 0, stopped_after_offer=True)
            self.bootlog.record(stuck, "dhcp_discover", {"arch": 0, "vendor_class":
                                                         "PXEClient:Arch:00000:UNDI:002001"})
            self.bootlog.record(stuck, "dhcp_offer", {"loader": "undionly.kpxe",
                                                      "reason": "BIOS PXE client"})
        self._observe(now)
        self._next_discovery = now + 25
        self._next_deploy = now + 12
        self._next_start = now + 12

    def _new_machine(self, state: State, now: float, roles_seen: dict[str, int]) -> Machine:
        self._index += 1
        machine = make_machine(self.rng, self._index, state, "", now)
        count = roles_seen[machine.role] = roles_seen.get(machine.role, 0) + 1
        machine.name = demo_name(machine.role, count, state, self.rng)
        return machine

    def _pick_template(self) -> str:
        return self.rng.choice(catalog.TEMPLATES).slug

    # --- WorkflowRunner -----------------------------------------------------------------------

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None,
                               engine: str = "native", head_start: float = 0.0) -> Workflow:
        tpl = catalog.template(template)
        tinkerbell_actions = tinkerbell.actions_for(tpl) if engine == "tinkerbell" else None
        if tinkerbell_actions is None:
            engine = "native"  # as the backend: a template Tinkerbell cannot run is refused
        now = self.clock()
        workflow = Workflow(id=self.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                            template=tpl.slug, engine=engine, state=WorkflowState.RUNNING,
                            bytes_total=tpl.image_bytes, started_at=now, created_at=now)
        stages = (tinkerbell_actions if tinkerbell_actions is not None
                  else [(name, "", share) for name, share in catalog.NATIVE_STAGES])
        workflow.actions = [{"name": name, "image": image, "share": share, "state": "pending",
                             "progress": 0.0, "started_at": None, "finished_at": None}
                            for name, image, share in stages]
        self._rates[workflow.id] = self.rng.uniform(*DEMO_SPEED_BYTES) * tpl.image_bytes / 2.5e9
        if head_start:
            _advance(workflow, head_start * 100, now)
        doom = self._doom(workflow)
        if doom is not None:
            self._doomed[workflow.id] = doom
        await self.fleet.start_workflow(machine.id, action, workflow, actor)
        return workflow

    def _doom(self, workflow: Workflow) -> tuple[float, str] | None:
        """Now and then a deployment is going to fail: where, and the reason that stage gives."""
        if self.rng.random() >= FAIL_CHANCE:
            return None
        spans: list[tuple[float, float, tuple[str, ...]]] = []
        start = 0.0
        for action in workflow.actions:
            end = start + float(action["share"]) * 100.0
            reasons = STAGE_FAILURES.get(str(action["name"]))
            if reasons and end > workflow.progress + 1.0:
                spans.append((max(start, workflow.progress), end, reasons))
            start = end
        if not spans:
            return None
        low, high, reasons = self.rng.choice(spans)
        margin = (high - low) * 0.1
        return round(self.rng.uniform(low + margin, high - margin), 2), self.rng.choice(reasons)

    # --- one tick -----------------------------------------------------------------------------

    async def step(self, dt: float) -> None:
        now = self.clock()
        for workflow in self.fleet.active_workflows():
            await self._advance_workflow(workflow, dt, now)
        count = len(self._observe(now))
        if now >= self._next_discovery and count < MAX_MACHINES:
            every = DISCOVERY_EVERY if count < RETIRE_FROM else DISCOVERY_EVERY_FULL
            self._next_discovery = now + self.rng.uniform(*every)
            await self._discover(now)
        active = len(self.fleet.active_workflows())
        if active == 0 or (active < MIN_ACTIVE and now >= self._next_start):
            # Never let the dashboard go quiet: too few deployments and the operator starts one.
            self._next_start = now + self.rng.uniform(*URGENT_EVERY)
            await self._start_one(now, urgent=True)
        if now >= self._next_deploy:
            self._next_deploy = now + self.rng.uniform(*OPERATOR_EVERY)
            await self._operator_does_something(now)
        await self._heartbeats(now)

    async def _advance_workflow(self, workflow: Workflow, dt: float, now: float) -> None:
        # A working copy (the fleet's mirror changes only through the store); cheaper than
        # a round trip through to_dict, which deep-copies.
        wf = dataclasses.replace(workflow, actions=[dict(a) for a in workflow.actions])
        machine = self._machine(wf.machine_id)
        if machine is None or machine.state is not State.DEPLOYING or machine.workflow_id != wf.id:
            # Someone deleted the machine or moved it by hand: the workflow cannot go on.
            why = ("the machine was deleted from the inventory" if machine is None
                   else f"the machine is {machine.state.value}, no longer deploying")
            await self._stop_workflow(wf, now, f"cancelled: {why}")
            return
        rate = self._rates.setdefault(wf.id, self.rng.uniform(*DEMO_SPEED_BYTES))
        percent_per_second = 100.0 * rate / max(wf.bytes_total, 1) * 0.65
        target = min(100.0, wf.progress + percent_per_second * dt)
        doom = self._doomed.get(wf.id)
        if doom is not None and target >= doom[0]:
            _advance(wf, doom[0], now)
            stage = wf.stage
            await self._stop_workflow(wf, now, doom[1])
            await self._attempt(self.fleet.transition(wf.machine_id, "fail",
                                                      doom[1] or f"failed at {stage}"))
            return
        _advance(wf, target, now)
        wf.eta_seconds = (100.0 - wf.progress) / percent_per_second if percent_per_second else None
        if wf.progress >= 100.0:
            wf.state = WorkflowState.SUCCEEDED
            wf.finished_at = now
            wf.eta_seconds = 0.0
            await self.fleet.save_workflow(wf)
            await self._attempt(self.fleet.transition(wf.machine_id, "deployed", "",
                                                      os=wf.template))
            self._forget(wf.id)
            return
        await self.fleet.save_workflow(wf)

    async def _stop_workflow(self, wf: Workflow, now: float, error: str) -> None:
        wf.state = WorkflowState.FAILED
        wf.error = error
        wf.finished_at = now
        wf.eta_seconds = None
        for action in wf.actions:
            if action["state"] == "running":
                action["state"] = "failed"
                action["finished_at"] = now
        await self.fleet.save_workflow(wf)
        self._forget(wf.id)

    def _forget(self, workflow_id: str) -> None:
        self._rates.pop(workflow_id, None)
        self._doomed.pop(workflow_id, None)

    def _machine(self, machine_id: str) -> Machine | None:
        try:
            return self.fleet.get_machine(machine_id)
        except NotFound:
            return None

    def _observe(self, now: float) -> list[Machine]:
        """Note every state change (ours or someone else's) and when to act on the machine."""
        machines = self.fleet.list_machines(limit=10_000).items
        for machine in machines:
            seen = self._seen.get(machine.id)
            if seen is not machine.state:
                low, high = DWELL[machine.state]
                # A machine seen for the first time may have been in its state for a while.
                self._due[machine.id] = now + self.rng.uniform(low if seen else 0.0, high)
                self._seen[machine.id] = machine.state
        if len(self._seen) != len(machines):
            present = {m.id for m in machines}
            for gone in [i for i in self._seen if i not in present]:
                self._seen.pop(gone, None)
                self._due.pop(gone, None)
                self._retiring.pop(gone, None)
        return machines

    async def _discover(self, now: float) -> None:
        machine = self._new_machine(State.DISCOVERED, now, {})
        machine.last_seen = now
        self._boot_chain(machine, uefi=self.rng.random() < 0.7)
        await self.fleet.add_machine(machine, "PXE-booted into discovery and reported hardware")

    def _boot_chain(self, machine: Machine, uefi: bool) -> None:
        """What the boot doctor would have seen for a machine that PXE-booted into discovery."""
        self.boot_edge.booted(uefi, 1_031_744 if uefi else 70_139)
        if self.bootlog is None:
            return
        loader = "ipxe.efi" if uefi else "undionly.kpxe"
        arch = 7 if uefi else 0
        record = self.bootlog.record
        record(machine.mac, "dhcp_discover", {"arch": arch, "vendor_class":
                                              f"PXEClient:Arch:{arch:05d}:UNDI:003000"})
        record(machine.mac, "dhcp_offer", {"loader": loader, "reason":
                                           f"{'x86-64 UEFI' if uefi else 'BIOS'} PXE client"})
        record(machine.mac, "tftp", {"file": loader, "bytes": 1_031_744 if uefi else 70_139,
                                     "seconds": 0.8, "ip": machine.ip})
        record(machine.mac, "ipxe_script", {"ip": machine.ip, "target": "discovery"})
        record(machine.mac, "kernel", {"file": "vmlinuz", "bytes": 8_123_904})
        record(machine.mac, "initrd", {"file": "initrd.img", "bytes": 41_877_504})
        record(machine.mac, "checkin", {"ip": machine.ip, "state": "discovered"})

    # --- the simulated operator ---------------------------------------------------------------

    async def _operator_does_something(self, now: float) -> None:
        """What a busy operator does every little while: keep a few deployments going, and
        one chore (adopt, retry, bring back, send to maintenance, release or decommission)."""
        await self._delete_retired(now)
        active = len(self.fleet.active_workflows())
        if active < MAX_ACTIVE and (active <= MIN_ACTIVE or self.rng.random() < 0.3):
            await self._start_one(now, urgent=False)
        chores = self._chores(now)
        if chores:
            chore = self.rng.choices([c for _, c in chores], weights=[w for w, _ in chores])[0]
            await chore()

    def _chores(self, now: float) -> list[tuple[int, Callable[[], Awaitable[None]]]]:
        machines = self.fleet.list_machines(limit=10_000).items

        def due(m: Machine) -> bool:
            return self._due.get(m.id, now) <= now

        def waiting(state: State) -> list[Machine]:
            return [m for m in machines if m.state is state and due(m)
                    and m.id not in self._retiring]

        discovered, failed = waiting(State.DISCOVERED), waiting(State.FAILED)
        back = waiting(State.MAINTENANCE)
        in_service = [m for m in machines if m.state in (State.READY, State.INSTALLED)]
        released = [m for m in in_service if m.state is State.INSTALLED and due(m)]
        away = sum(1 for m in machines
                   if m.state is State.MAINTENANCE and m.id not in self._retiring)
        chores: list[tuple[int, Callable[[], Awaitable[None]]]] = []
        if discovered:
            chores.append((4, lambda: self._adopt(discovered)))
        if failed:
            chores.append((4, lambda: self._recover(failed, now)))
        if back:
            chores.append((3, lambda: self._bring_back(back)))
        # The rest happens now and then, not whenever it could.
        if away < 2 and in_service and self.rng.random() < MAINTENANCE_CHANCE:
            chores.append((1, lambda: self._send_to_maintenance(in_service)))
        if released and self.rng.random() < RELEASE_CHANCE:
            chores.append((1, lambda: self._release(released)))
        if (in_service and not self._retiring and len(machines) >= RETIRE_FROM
                and self.rng.random() < DECOMMISSION_CHANCE):
            chores.append((2, lambda: self._decommission(in_service, now)))
        return chores

    async def _start_one(self, now: float, urgent: bool) -> None:
        """Deploy a ready machine or reimage an installed one, whichever has waited longest;
        when ``urgent``, even one that has not waited its usual while (installed ones first,
        so a spare or two stays ready)."""
        pool = [m for m in self.fleet.list_machines(limit=10_000).items
                if m.state in (State.READY, State.INSTALLED) and m.id not in self._retiring]
        pool.sort(key=lambda m: self._due.get(m.id, now))
        waited = [m for m in pool if self._due.get(m.id, now) <= now]
        if urgent:
            early = pool[len(waited):]  # pool is sorted by due time
            waited += sorted(early, key=lambda m: m.state is State.READY)  # stable: keeps due order
        machine = await self._unguarded(waited)
        if machine is not None:
            await self._deploy(machine)

    async def _deploy(self, machine: Machine) -> None:
        action = "reimage" if machine.state is State.INSTALLED else "deploy"
        keep = (action == "reimage" and machine.os in catalog.TEMPLATES_BY_SLUG
                and self.rng.random() < 0.6)
        template = machine.os if keep else self._pick_template()
        engine = "tinkerbell" if self.rng.random() < TINKERBELL_SHARE else "native"
        if engine == "tinkerbell" and template not in tinkerbell.TEMPLATES:
            template = self.rng.choice(tinkerbell.TEMPLATES)
        await self._attempt(self.start_deployment(machine, action, template, "demo",
                                                  engine=engine))

    async def _adopt(self, discovered: list[Machine]) -> None:
        machine = self.rng.choice(discovered)
        await self._attempt(self.fleet.transition(machine.id, "adopt", "", actor="demo"))

    async def _recover(self, failed: list[Machine], now: float) -> None:
        """The operator looks at a failed machine: usually retries, sometimes re-inventories
        it through discovery, or gives it back to the pool."""
        machine = self.rng.choice(failed)
        choice = self.rng.random()
        if choice < 0.15:
            await self._rediscover(machine, "PXE-booted into discovery again to re-check its "
                                            "hardware after the failed deployment")
        elif await self._unguarded([machine]) is None:
            self._due[machine.id] = now + self.rng.uniform(*DWELL[State.FAILED])
        elif choice < 0.9:
            await self._deploy(machine)
        else:
            await self._attempt(self.fleet.transition(
                machine.id, "release", "Released after the failed deployment; it will be "
                "wiped on the next deploy", actor="demo"))

    async def _bring_back(self, back: list[Machine]) -> None:
        machine = self.rng.choice(back)
        if self.rng.random() < 0.25:
            await self._rediscover(machine, "Back from maintenance: PXE-booted into discovery "
                                            "and re-reported its hardware")
        else:
            await self._attempt(self.fleet.transition(
                machine.id, "resume", "Back in service after maintenance", actor="demo",
                power="on"))

    async def _rediscover(self, machine: Machine, reason: str) -> None:
        if await self._attempt(self.fleet.transition(machine.id, "rediscover", reason,
                                                     actor="demo", power="on")):
            self._boot_chain(machine, uefi=self.rng.random() < 0.7)

    async def _send_to_maintenance(self, in_service: list[Machine]) -> None:
        machine = self.rng.choice(in_service)
        await self._attempt(self.fleet.transition(
            machine.id, "maintenance", self.rng.choice(MAINTENANCE_REASONS), actor="demo",
            power="off"))

    async def _release(self, installed: list[Machine]) -> None:
        machine = await self._unguarded([self.rng.choice(installed)])
        if machine is not None:
            what = f"{machine.role} capacity" if machine.role else "the machine"
            await self._attempt(self.fleet.transition(
                machine.id, "release", f"Released back to the pool: {what} no longer needed",
                actor="demo"))

    async def _decommission(self, in_service: list[Machine], now: float) -> None:
        """Retire one of the oldest machines: to maintenance now, deleted a little later."""
        oldest = sorted(in_service, key=lambda m: m.created_at)[:3]
        machine = self.rng.choice(oldest)
        if await self._attempt(self.fleet.transition(
                machine.id, "maintenance", self.rng.choice(RETIRE_REASONS), actor="demo",
                power="off")):
            self._retiring[machine.id] = now + self.rng.uniform(*RETIRE_AFTER)

    async def _delete_retired(self, now: float) -> None:
        for machine_id, at in sorted(self._retiring.items(), key=lambda kv: kv[1]):
            if now < at:
                continue
            del self._retiring[machine_id]
            machine = self._machine(machine_id)
            if machine is None or machine.state is not State.MAINTENANCE:
                continue  # someone brought it back (or deleted it) in the meantime
            if await self._unguarded([machine]) is None:
                continue  # locked: it stays in maintenance and is brought back in due course
            if await self._attempt(self.fleet.delete_machine(machine_id)):
                await self._forget_machine(machine_id)

    async def _forget_machine(self, machine_id: str) -> None:
        """Drop a deleted machine's history and workflows, so a demo left running for days
        holds only what its current fleet made."""
        await self.fleet.prune_history(machine_id, keep=0)
        flows = await self.fleet.store.list(WORKFLOW, f"{machine_id}.")
        if flows:
            await self.fleet.store.commit([Delete(WORKFLOW, d.key) for d in flows])

    async def _unguarded(self, candidates: list[Machine]) -> Machine | None:
        """The first candidate that neither safety mode nor a node lock protects."""
        if not candidates or (await guard.safety_state(self.fleet.store))["enabled"]:
            return None
        first = candidates[:3]
        self.rng.shuffle(first)
        for machine in first + candidates[3:]:
            if await guard.lock_of(self.fleet.store, machine.id) is None:
                return machine
        return None

    async def _attempt(self, action: Awaitable[object]) -> bool:
        """Run an operator action; a machine that changed or vanished meanwhile is skipped."""
        try:
            await action
        except (Conflict, NotFound) as exc:
            log.debug("demo operator skipped an action: %s", exc)
            return False
        return True

    async def _heartbeats(self, now: float) -> None:
        page = self.fleet.list_machines(state=State.DEPLOYING.value, limit=100)
        for machine in page.items:
            if machine.last_seen is None or now - machine.last_seen > 10:
                def seen(m: Machine) -> None:
                    m.last_seen = now
                await self.fleet.update_machine(machine.id, seen)
        if self.commands is not None:
            await self._agents(now, self.commands)

    async def _agents(self, now: float, commands: AgentCommands) -> None:
        """Discovered machines that are powered on run the discovery agent: it heartbeats
        through the real handler (which hands over queued commands) and obeys the answer."""
        for machine_id, back_at in list(self._rebooting.items()):
            if now >= back_at:
                del self._rebooting[machine_id]
                await self._back_in_discovery(machine_id, now, commands)
        page = self.fleet.list_machines(state=State.DISCOVERED.value, limit=10_000)
        for machine in page.items:
            if machine.power == "off" or machine.id in self._rebooting:
                continue
            due = machine.last_seen is None or now - machine.last_seen >= POLL_DEFAULT
            if not due and commands.pending(machine.id) is None:
                continue
            try:
                answer = await handle_heartbeat(self.fleet, Heartbeat(machine.id), machine.ip,
                                                commands=commands)
            except NotFound:
                continue  # deleted meanwhile
            if answer["action"] == "poweroff":
                def off(m: Machine) -> None:
                    m.power = "off"
                await self.fleet.update_machine(machine.id, off)
            elif answer["action"] in ("reboot", "localboot"):
                self._rebooting[machine.id] = now + REBOOT_SECONDS

    async def _back_in_discovery(self, machine_id: str, now: float,
                                 commands: AgentCommands) -> None:
        try:
            machine = self.fleet.get_machine(machine_id)
        except NotFound:
            return  # deleted meanwhile
        if machine.state is not State.DISCOVERED:
            return
        self._boot_chain(machine, uefi=True)
        await handle_heartbeat(self.fleet, Heartbeat(machine.id), machine.ip, commands=commands)
        await self.fleet.record(machine.id, "agent", "Rebooted into discovery; the agent "
                                "checked in again", {"step": "checkin"})


def _advance(wf: Workflow, progress: float, now: float) -> None:
    """Set overall progress and derive stage, per-action progress and bytes from it."""
    wf.progress = round(min(progress, 100.0), 2)
    done = 0.0
    for action in wf.actions:
        share = float(action["share"]) * 100.0
        if wf.progress >= done + share:
            if action["state"] != "succeeded":
                action["started_at"] = action["started_at"] or now
                action["finished_at"] = now
            action["state"], action["progress"] = "succeeded", 100.0
        elif wf.progress > done:
            action["state"] = "running"
            action["started_at"] = action["started_at"] or now
            action["progress"] = round((wf.progress - done) / share * 100.0, 1)
            wf.stage = action["name"]
        done += share
    streamed = next((a for a in wf.actions if a["name"] in ("stream image", "stream-image")), None)
    if streamed is not None:
        wf.bytes_done = int(wf.bytes_total * float(streamed["progress"]) / 100.0)
    if wf.progress >= 100.0:
        wf.stage = "done"
