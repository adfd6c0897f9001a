"""Drives the demo fleet live: deployments advance, machines get discovered, some fail.

The simulator only goes through ``Fleet`` (and so through the lifecycle table), exactly as the
real agent and workflow engine do. ``step(dt)`` is deterministic for a given seed, so tests
advance it by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from dragonfly import catalog
from dragonfly.agent.checkin import POLL_DEFAULT, AgentCommands, Heartbeat, handle_heartbeat
from dragonfly.bootlog import BootLog
from dragonfly.demo.bootedge import DemoBootEdge
from dragonfly.demo.fleet import (
    FAILURES,
    MAINTENANCE_REASONS,
    START_STATES,
    make_machine,
)
from dragonfly.errors import NotFound
from dragonfly.fleet import Fleet
from dragonfly.model import Machine, State, Workflow, WorkflowState
from dragonfly.naming import memorable_name

log = logging.getLogger(__name__)

MAX_MACHINES = 32
REBOOT_SECONDS = 20.0  # a demo machine told to reboot is back in discovery after this long
DEMO_SPEED_BYTES = (45_000_000, 120_000_000)  # bytes/s per deployment: a demo deploy takes ~1 min
FAIL_CHANCE = 0.15


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
        self._index = 0

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
                await self.start_deployment(machine, "deploy", self._pick_template(), "demo",
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
        self._next_discovery = now + 25
        self._next_deploy = now + 12

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
                               actor: str, engine: str = "native",
                               head_start: float = 0.0) -> Workflow:
        tpl = catalog.template(template)
        now = self.clock()
        workflow = Workflow(id=self.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                            template=tpl.slug, engine=engine, state=WorkflowState.RUNNING,
                            bytes_total=tpl.image_bytes, started_at=now, created_at=now)
        stages = (catalog.TINKERBELL_ACTIONS if engine == "tinkerbell"
                  else [(name, "", share) for name, share in catalog.NATIVE_STAGES])
        workflow.actions = [{"name": name, "image": image, "share": share, "state": "pending",
                             "progress": 0.0, "started_at": None, "finished_at": None}
                            for name, image, share in stages]
        self._rates[workflow.id] = self.rng.uniform(*DEMO_SPEED_BYTES) * tpl.image_bytes / 2.5e9
        if self.rng.random() < FAIL_CHANCE:
            self._doomed[workflow.id] = (self.rng.uniform(10, 95), self.rng.choice(FAILURES))
        if head_start:
            _advance(workflow, head_start * 100, now)
        await self.fleet.start_workflow(machine.id, action, workflow, actor)
        return workflow

    # --- one tick -----------------------------------------------------------------------------

    async def step(self, dt: float) -> None:
        now = self.clock()
        for workflow in self.fleet.active_workflows():
            await self._advance_workflow(workflow, dt, now)
        if now >= self._next_discovery and self.fleet.machine_count() < MAX_MACHINES:
            self._next_discovery = now + self.rng.uniform(25, 50)
            await self._discover(now)
        if now >= self._next_deploy:
            self._next_deploy = now + self.rng.uniform(15, 30)
            await self._operator_does_something()
        await self._heartbeats(now)

    async def _advance_workflow(self, workflow: Workflow, dt: float, now: float) -> None:
        wf = Workflow.from_dict(workflow.to_dict())
        rate = self._rates.setdefault(wf.id, self.rng.uniform(*DEMO_SPEED_BYTES))
        percent_per_second = 100.0 * rate / max(wf.bytes_total, 1) * 0.65
        target = min(100.0, wf.progress + percent_per_second * dt)
        doom = self._doomed.get(wf.id)
        if doom is not None and target >= doom[0]:
            _advance(wf, doom[0], now)
            stage = wf.stage
            wf.state = WorkflowState.FAILED
            wf.error = doom[1]
            wf.finished_at = now
            wf.eta_seconds = None
            for action in wf.actions:
                if action["state"] == "running":
                    action["state"] = "failed"
                    action["finished_at"] = now
            await self.fleet.save_workflow(wf)
            await self.fleet.transition(wf.machine_id, "fail", doom[1] or f"failed at {stage}")
            self._forget(wf.id)
            return
        _advance(wf, target, now)
        wf.eta_seconds = (100.0 - wf.progress) / percent_per_second if percent_per_second else None
        if wf.progress >= 100.0:
            wf.state = WorkflowState.SUCCEEDED
            wf.finished_at = now
            wf.eta_seconds = 0.0
            await self.fleet.save_workflow(wf)
            await self.fleet.transition(wf.machine_id, "deployed", "", os=wf.template)
            self._forget(wf.id)
            return
        await self.fleet.save_workflow(wf)

    def _forget(self, workflow_id: str) -> None:
        self._rates.pop(workflow_id, None)
        self._doomed.pop(workflow_id, None)

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

    async def _operator_does_something(self) -> None:
        """Adopt a discovered machine or deploy a ready one, like a busy operator would."""
        page = self.fleet.list_machines(limit=10_000)
        discovered = [m for m in page.items if m.state is State.DISCOVERED]
        ready = [m for m in page.items if m.state in (State.READY, State.FAILED)]
        deploying = sum(1 for m in page.items if m.state is State.DEPLOYING)
        if ready and deploying < 6:
            machine = self.rng.choice(ready)
            engine = "tinkerbell" if self.rng.random() < 0.4 else "native"
            await self.start_deployment(machine, "deploy", self._pick_template(), "demo",
                                        engine=engine)
        elif discovered:
            await self.fleet.transition(self.rng.choice(discovered).id, "adopt", "",
                                        actor="demo")

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
