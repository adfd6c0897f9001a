"""The demo's BMCs: every simulated machine gets a record on the fake power driver, in the
power state the simulator gave it, so the demo shows power state, watts and actions too."""

from __future__ import annotations

from dragonfly.domain.fleet import Fleet
from dragonfly.power.drivers.fake import BMCS, FakeBmc
from dragonfly.power.service import PowerService


class DemoBmcs:
    name = "demo BMCs"

    def __init__(self, fleet: Fleet, power: PowerService) -> None:
        self.fleet = fleet
        self.power = power

    async def start(self) -> None:
        page = self.fleet.list_machines(limit=100_000)
        for machine in page.items:
            address = f"demo-bmc-{machine.id}"
            BMCS[address] = FakeBmc(state="off" if machine.power == "off" else "on")
            await self.power.set_bmc(machine.id, {"driver": "fake", "address": address})

    async def stop(self) -> None:
        return None
