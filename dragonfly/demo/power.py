"""The demo's BMCs, all on the fake power driver (nothing on the network is contacted).

Every simulated machine present at start gets a record, in the power state the simulator gave
it, except the ones just discovered (nobody has set up their BMC yet: the list's "No BMC", and
the BMC form on their page). Their draw wanders like a real server's, with half an hour of
history already there, so the list and the machine page show watts and a sparkline from the
first second. One machine in maintenance has a BMC that does not answer, so a failing BMC and
its reason show too. Machines the simulator discovers later have no record. A few installed
machines are attached to the demo's OpenJBOD enclosures (dragonfly.demo.enclosures).
"""

from __future__ import annotations

import math
import time
from typing import Any

from dragonfly.demo.enclosures import add_demo_enclosures
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State
from dragonfly.power.drivers import DriverEnv, PowerDriver, Registry
from dragonfly.power.drivers.fake import BMCS, FakeBmc, FakeDriver
from dragonfly.power.records import BMC, BmcRecord, SecretBox, parse_record, to_document
from dragonfly.power.service import POWER, PowerService
from dragonfly.store import Put
from dragonfly.store.base import Op


class PlainBox(SecretBox):
    """The demo's BMC passwords (its enclosures have one), kept as they are: the demo's store
    is in memory, so there is no disk to protect them on, and the API never returns a
    password either way. Sealing them made every demo start import cryptography (~15 ms)."""

    def __init__(self) -> None:
        super().__init__(None)

    def load(self) -> None:
        return None

    def seal(self, secret: str) -> str:
        return secret

    def open(self, token: str) -> str:
        return token


HISTORY_STEP = 60.0  # seconds between the seeded readings (the monitor's interval)
UNREACHABLE = "unreachable-bmc-"  # the fake driver times out on addresses starting so


def demo_watts(address: str, at: float) -> float:
    """A machine's draw at ``at``: its own level, slow swings and a faster ripple."""
    seed = sum(map(ord, address))
    level = 140.0 + seed % 120
    swing = 18.0 + seed % 30
    value = (level + swing * math.sin(at / 420.0 + seed)
             + 0.35 * swing * math.sin(at / 97.0 + 2 * seed))
    return round(value, 1)


class DemoDriver(FakeDriver):
    """The fake driver with a draw that changes over time."""

    async def watts(self) -> float | None:
        bmc = await self._answer("watts")
        return demo_watts(self.address, time.time()) if bmc.state == "on" else 0.0


def use_demo_driver(registry: Registry) -> None:
    """Make the registry's "fake" driver the demo's (same operations, same delay)."""
    spec = registry.specs.get("fake")
    if spec is None:
        return
    original = spec.factory

    def factory(record: BmcRecord, env: DriverEnv, interface: str | None) -> PowerDriver:
        base = original(record, env, interface)
        return DemoDriver(base.address, delay=float(getattr(base, "delay", 0.0)),
                          password=record.password)

    registry.register("fake", spec.supports, factory, spec.summary)


class DemoBmcs:
    name = "demo BMCs"

    def __init__(self, fleet: Fleet, power: PowerService) -> None:
        self.fleet = fleet
        self.power = power

    async def start(self) -> None:
        use_demo_driver(self.power.registry)
        page = self.fleet.list_machines(limit=100_000)
        unreachable = next((m.id for m in page.items if m.state is State.MAINTENANCE), None)
        now = time.time()
        ops: list[Op] = []
        for machine in page.items:
            if machine.state is State.DISCOVERED:
                continue
            failing = machine.id == unreachable
            address = f"{UNREACHABLE if failing else 'demo-bmc-'}{machine.id}"
            BMCS[address] = FakeBmc(state="off" if machine.power == "off" else "on")
            record = parse_record(machine.id, {"driver": "fake", "address": address},
                                  self.power.registry.names, None, self.power.clock())
            ops.append(Put(BMC, machine.id, to_document(record, self.power.box)))
            # What the monitor would have read over the last half hour.
            ops.append(Put(POWER, machine.id, self._history(machine, address, failing, now)))
        # The records as set_bmc would store them, in one write rather than three per machine
        # (the demo's start waited on them): PowerService.start, which runs next, loads them.
        await self.power.store.commit(ops)
        await add_demo_enclosures(self.fleet, self.power)

    def _history(self, machine: Machine, address: str, failing: bool, now: float
                 ) -> dict[str, Any]:
        on = machine.power != "off"
        samples = self.power.history
        history = [] if failing else [
            [round(at, 3), demo_watts(address, at) if on else 0.0]
            for at in (now - HISTORY_STEP * (samples - 1 - i) for i in range(samples))]
        return {"machine": machine.id, "driver": "fake",
                "state": "unknown" if failing else "on" if on else "off",
                "health": "unknown" if failing else "ok",
                "watts": None if failing else history[-1][1],
                "watts_history": history,
                "error": (f"timeout: the BMC at {address} did not answer" if failing else ""),
                "reason": "timeout" if failing else "", "checked_at": now,
                "failures": 1 if failing else 0, "next_check": None}

    async def stop(self) -> None:
        return None
