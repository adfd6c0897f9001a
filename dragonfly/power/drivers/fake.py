"""The fake driver: an in-memory BMC for the demo and the tests. State changes land after
``delay`` seconds (as real BMCs lag); addresses starting with ``unreachable`` time out and
``refuse`` reject the credentials."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from dragonfly.power.drivers.base import (
    BOOT_DISK,
    BOOT_PXE,
    CYCLE,
    HEALTH,
    OFF,
    ON,
    RESET,
    SOFT_OFF,
    STATE,
    WATTS,
    PowerDriver,
    PowerError,
)


@dataclass
class FakeBmc:
    state: str = "off"
    pending: tuple[str, float] | None = None  # (state, when it lands)
    boot: str = "disk"
    boot_once: bool = True
    calls: list[str] = field(default_factory=list)

    def settle(self) -> None:
        if self.pending is not None and time.monotonic() >= self.pending[1]:
            self.state, self.pending = self.pending[0], None


# Shared by address, so a record's driver rebuilt after an edit sees the same machine.
BMCS: dict[str, FakeBmc] = {}


class FakeDriver(PowerDriver):
    name = "fake"
    supports = frozenset({ON, OFF, SOFT_OFF, RESET, CYCLE, BOOT_PXE, BOOT_DISK, STATE, HEALTH,
                          WATTS})

    def __init__(self, address: str, *, delay: float = 0.0, password: str = "") -> None:
        super().__init__(address or "fake")
        self.delay = delay
        self.password = password
        self.bmc = BMCS.setdefault(self.address, FakeBmc())
        self.cycle_pause = 0.0

    async def _answer(self, call: str) -> FakeBmc:
        if self.address.startswith("unreachable"):
            await asyncio.sleep(0.05)
            raise PowerError(f"timeout: the BMC at {self.address} did not answer", "timeout")
        if self.address.startswith("refuse"):
            raise PowerError("the BMC refused the credentials", "credentials")
        self.bmc.calls.append(call)
        self.bmc.settle()
        return self.bmc

    def _move(self, bmc: FakeBmc, state: str) -> None:
        if self.delay <= 0:
            bmc.state, bmc.pending = state, None
        elif bmc.state != state:
            bmc.pending = (state, time.monotonic() + self.delay)

    async def power_state(self) -> str:
        return (await self._answer("state")).state

    async def power_on(self) -> None:
        self._move(await self._answer("on"), "on")

    async def power_off(self) -> None:
        self._move(await self._answer("off"), "off")

    async def soft_off(self) -> None:
        self._move(await self._answer("soft_off"), "off")

    async def reset(self) -> None:
        bmc = await self._answer("reset")
        bmc.state = "off"
        self._move(bmc, "on")

    async def set_boot_device(self, device: str, once: bool = True) -> None:
        bmc = await self._answer(f"boot {device}")
        bmc.boot, bmc.boot_once = device, once

    async def health(self) -> str:
        await self._answer("health")
        return "ok"

    async def watts(self) -> float | None:
        bmc = await self._answer("watts")
        if bmc.state != "on":
            return 0.0
        return 120.0 + (sum(map(ord, self.address)) % 80)
