"""``PowerService``: the BMC records, their drivers, guarded-free power operations (the routes
apply the molly guard), "test connection", and monitoring.

Monitoring polls each BMC's power state, health and draw every ``interval`` seconds with
jitter, backs off from BMCs that fail (up to ``max_backoff``), and never runs more than
``concurrency`` polls at once (the thread pool for blocking clients has that many threads), so
10,000 BMCs are 16 polls in flight, not 10,000 threads. Results live in memory (fresh, with a
short watts history) and in one ``power`` document per machine, written when something changed
(state, health, error, watts by 5 W or 5 %) or at least every ``write_every`` seconds, so the
event stream is not a firehose.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dragonfly.errors import InvalidInput, NotFound
from dragonfly.power.adopt import Adoptions
from dragonfly.power.drivers import ACTIONS, DriverEnv, PowerDriver, Registry, default_registry
from dragonfly.power.drivers.base import (
    BOOT_PXE,
    CYCLE,
    HEALTH,
    ON,
    RESET,
    STATE,
    WATTS,
    PowerError,
)
from dragonfly.power.enclosures import Enclosures
from dragonfly.power.records import (
    BMC,
    BmcRecord,
    SecretBox,
    from_document,
    parse_record,
    to_document,
)
from dragonfly.store import Store

log = logging.getLogger(__name__)

POWER = "power"  # per-machine monitoring documents (for the event stream)


@dataclass
class Live:
    """What monitoring knows about one machine's BMC right now."""

    state: str = "unknown"
    health: str = "unknown"
    watts: float | None = None
    history: deque[list[float]] = field(default_factory=lambda: deque(maxlen=30))
    error: str = ""
    reason: str = ""
    checked_at: float | None = None
    failures: int = 0
    next_check: float | None = None  # wall clock
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0

    def document(self, machine: str, driver: str) -> dict[str, Any]:
        return {"machine": machine, "driver": driver, "state": self.state,
                "health": self.health, "watts": self.watts,
                "watts_history": [list(s) for s in self.history], "error": self.error,
                "reason": self.reason, "checked_at": self.checked_at,
                "failures": self.failures, "next_check": self.next_check}


class PowerService:
    name = "power"

    def __init__(self, store: Store, state_dir: Path | None, *, interval: float = 60.0,
                 concurrency: int = 16, history: int = 30, timeout: float = 10.0,
                 min_interval: float = 0.2, max_backoff: float = 900.0,
                 write_every: float = 600.0, settle: float = 3.0,
                 boot_interface: str | None = None, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time, monitor: bool = True) -> None:
        self.store = store
        self.box = SecretBox(state_dir)
        self.interval = interval
        self.concurrency = concurrency
        self.history = history
        self.max_backoff = max_backoff
        self.write_every = write_every
        self.settle = settle
        self.boot_interface = boot_interface
        self.registry = registry or default_registry()
        self.clock = clock
        self.monitor = monitor
        self.env = DriverEnv(threads=concurrency, min_interval=min_interval, timeout=timeout)
        self._records: dict[str, BmcRecord] = {}
        self._drivers: dict[str, PowerDriver] = {}
        self._live: dict[str, Live] = {}
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.adoptions = Adoptions(self)
        self.enclosures = Enclosures(self)

    # --- service ----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.box.load)  # the key file, before anything is sealed
        for doc in await self.store.list(BMC):
            self._records[doc.key] = from_document(doc.data, self.box)
        for doc in await self.store.list(POWER):
            if doc.key in self._records:
                self._live[doc.key] = self._restore(doc.data)
        if self.monitor:
            for machine in self._records:
                self._schedule(machine, self._rng.uniform(0, self.interval))
            self._scheduler = asyncio.create_task(self._run_scheduler(), name="power monitor")
        await self.adoptions.start()
        await self.enclosures.start()

    async def stop(self) -> None:
        await self.adoptions.stop()
        await self.enclosures.stop()
        tasks = [t for t in (self._scheduler, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._scheduler = None
        self._tasks.clear()
        self._drivers.clear()
        await self.env.close()  # logs out of BMC sessions, waits for the pool's threads
        self.env = DriverEnv(threads=self.concurrency, min_interval=self.env.min_interval,
                             timeout=self.env.timeout)

    def _restore(self, data: dict[str, Any]) -> Live:
        live = Live(history=deque(maxlen=self.history))
        live.state = str(data.get("state", "unknown"))
        live.health = str(data.get("health", "unknown"))
        live.watts = data.get("watts")
        live.history.extend(s for s in data.get("watts_history", []) if isinstance(s, list))
        live.error, live.reason = str(data.get("error", "")), str(data.get("reason", ""))
        live.checked_at = data.get("checked_at")
        live.failures = int(data.get("failures", 0))
        live.written = dict(data)
        live.written_at = self.clock()
        return live

    # --- records ------------------------------------------------------------------------

    def drivers(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "supports": sorted(s.supports), "summary": s.summary}
                for s in sorted(self.registry.specs.values(), key=lambda s: s.name)
                if s.name in self.registry.names]

    def records(self) -> dict[str, BmcRecord]:
        """Every machine's record (a copy of the mapping)."""
        return dict(self._records)

    def record(self, machine: str) -> BmcRecord:
        record = self._records.get(machine)
        if record is None:
            raise NotFound(f"machine {machine} has no BMC configured",
                           {"machine": machine, "configured": False})
        return record

    async def get_bmc(self, machine: str) -> dict[str, Any]:
        """The record without its password (``has_password`` says whether there is one)."""
        return self.record(machine).public()

    async def set_bmc(self, machine: str, body: dict[str, Any]) -> dict[str, Any]:
        record = parse_record(machine, body, self.registry.names, self._records.get(machine),
                              self.clock())
        await self.store.put(BMC, machine, to_document(record, self.box))
        await self._forget_driver(machine)
        self._records[machine] = record
        self._live.pop(machine, None)
        await self.store.delete(POWER, machine)
        if self.monitor:
            self._schedule(machine, 0.0)
        return record.public()

    async def delete_bmc(self, machine: str) -> bool:
        existed = self._records.pop(machine, None) is not None
        await self._forget_driver(machine)
        self._live.pop(machine, None)
        self._due.pop(machine, None)
        await self.store.delete(BMC, machine)
        await self.store.delete(POWER, machine)
        return existed

    def _driver(self, machine: str) -> PowerDriver:
        driver = self._drivers.get(machine)
        if driver is None:
            driver = self.registry.make(self.record(machine), self.env, self.boot_interface)
            self._drivers[machine] = driver
        return driver

    async def _forget_driver(self, machine: str) -> None:
        driver = self._drivers.pop(machine, None)
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.close()

    def supports(self, machine: str) -> frozenset[str]:
        record = self._records.get(machine)
        if record is None:
            return frozenset()
        driver = self._drivers.get(machine)
        if driver is not None:
            return driver.supports
        spec = self.registry.spec_for(record)
        return spec.supports if spec else frozenset()

    # --- operations -----------------------------------------------------------------------

    async def status(self, machine: str) -> dict[str, Any]:
        """What the panel shows: the driver, what it supports, the last poll."""
        record = self._records.get(machine)
        if record is None:
            return {"machine": machine, "configured": False, "driver": None, "supports": [],
                    "actions": [], "state": "unknown", "health": "unknown", "watts": None,
                    "watts_history": [], "error": "", "reason": "", "checked_at": None,
                    "failures": 0, "next_check": None}
        supports = self.supports(machine)
        live = self._live.get(machine) or Live(history=deque(maxlen=self.history))
        return {**live.document(machine, record.driver), "configured": True,
                "supports": sorted(supports),
                "actions": [a for a in ACTIONS if a in supports]}

    async def all_status(self) -> list[dict[str, Any]]:
        """``status`` of every machine that has a BMC record."""
        return [await self.status(machine) for machine in sorted(self._records)]

    async def power_state(self, machine: str) -> str:
        """"on", "off" or "unknown", asked of the BMC now."""
        return await self._driver(machine).power_state()

    async def act(self, machine: str, op: str) -> dict[str, Any]:
        """Perform the action ``op`` (the caller applied the molly guard). Raises
        InvalidInput (unknown op), NotFound (no BMC), Unsupported (409), PowerError (502)."""
        if op not in ACTIONS:
            raise InvalidInput(f"unknown power operation {op!r}: one of {', '.join(ACTIONS)}",
                               {"op": op})
        driver = self._driver(machine)
        if op not in driver.supports:
            raise driver.unsupported(op)
        await driver.run(op)
        if self.monitor and STATE in driver.supports:
            self._schedule(machine, self.settle)  # see the state land soon
        return {"machine": machine, "op": op, "ok": True}

    async def boot_into_pxe(self, machine: str) -> dict[str, Any]:
        """For an unattended reimage: one-time PXE boot, then a power cycle (or power on when
        the machine is off). ``attempted`` is False when there is no BMC record or its driver
        cannot set the boot device; ``ok`` False with ``error`` when the BMC failed."""
        if machine not in self._records:
            return {"attempted": False, "ok": False, "ops": [],
                    "error": "no BMC configured: boot the machine from the network by hand"}
        supports = self.supports(machine)
        if BOOT_PXE not in supports or not supports & {CYCLE, RESET, ON}:
            return {"attempted": False, "ok": False, "ops": [],
                    "error": f"the {self._records[machine].driver} driver cannot set a "
                             "one-time network boot: boot the machine from the network by hand"}
        done: list[str] = []
        try:
            await self.act(machine, BOOT_PXE)
            done.append(BOOT_PXE)
            state = await self.power_state(machine) if STATE in supports else "unknown"
            if state == "off" and ON in supports:
                op = ON
            else:
                op = CYCLE if CYCLE in supports else RESET if RESET in supports else ON
            await self.act(machine, op)
            done.append(op)
        except PowerError as exc:
            return {"attempted": True, "ok": False, "ops": done, "reason": exc.reason,
                    "error": self.scrub(exc.message, self._records[machine])}
        return {"attempted": True, "ok": True, "ops": done, "error": ""}

    async def test_bmc(self, machine: str) -> dict[str, Any]:
        """Try every read the driver supports; say exactly which failed and why."""
        record = self.record(machine)
        steps: list[dict[str, Any]] = []
        try:
            await self._forget_driver(machine)  # a fresh login, not a cached session
            driver = self._driver(machine)
        except (PowerError, InvalidInput) as exc:
            return {"machine": machine, "ok": False, "driver": record.driver,
                    "reason": exc.message, "steps": [{"step": "driver", "ok": False,
                                                      "detail": exc.message}]}
        reads = [(STATE, driver.power_state), (HEALTH, driver.health), (WATTS, driver.watts)]
        for step, read in reads:
            if step not in driver.supports:
                continue
            try:
                value = await read()
            except PowerError as exc:
                steps.append({"step": step, "ok": False, "detail": self.scrub(exc.message,
                                                                               record),
                              "reason": exc.reason})
                if exc.reason in ("unreachable", "timeout", "credentials", "cipher", "tls"):
                    break
                continue
            steps.append({"step": step, "ok": True, "value": value,
                          "detail": "not reported by this BMC" if value is None else ""})
        if not steps:
            steps.append({"step": "send", "ok": True,
                          "detail": f"the {record.driver} driver cannot read anything back; "
                                    "it can only act (e.g. Wake-on-LAN)"})
        failed = next((s for s in steps if not s["ok"]), None)
        return {"machine": machine, "driver": record.driver, "ok": failed is None,
                "reason": failed["detail"] if failed else "", "steps": steps}

    async def poll(self, machine: str) -> dict[str, Any]:
        """Read state, health and watts now; update memory and (when changed) the document."""
        record = self.record(machine)
        live = self._live.setdefault(machine, Live(history=deque(maxlen=self.history)))
        error = reason = ""
        try:
            driver = self._driver(machine)
            # One read of all three (one request of the system, one IPMI session), over
            # connections that close when the poll ends.
            async with self.env.poll_connections():
                status = await driver.read_status()
            live.state, live.health, live.watts = status.state, status.health, status.watts
        except PowerError as exc:
            error, reason = self.scrub(exc.message, record), exc.reason
        now = self.clock()
        live.checked_at = now
        live.error, live.reason = error, reason
        live.failures = live.failures + 1 if error else 0
        if not error and live.watts is not None:
            live.history.append([round(now, 3), live.watts])
        await self._write(machine, record, live)
        return live.document(machine, record.driver)

    async def _write(self, machine: str, record: BmcRecord, live: Live) -> None:
        doc = live.document(machine, record.driver)
        old = live.written
        changed = any(doc[k] != old.get(k) for k in ("state", "health", "error", "driver"))
        before, now_w = old.get("watts"), doc["watts"]
        if (before is None) != (now_w is None) or (
                before is not None and now_w is not None
                and abs(now_w - before) >= max(5.0, 0.05 * abs(before))):
            changed = True
        if changed or self.clock() - live.written_at >= self.write_every:
            if machine not in self._records:
                return  # deleted while polling
            await self.store.put(POWER, machine, doc)
            live.written, live.written_at = doc, self.clock()

    @staticmethod
    def scrub(text: str, record: BmcRecord) -> str:
        """Never let a password reach a message (a BMC could echo it back)."""
        if record.password and len(record.password) >= 3:
            text = text.replace(record.password, "********")
        return text

    # --- monitoring ---------------------------------------------------------------------

    def _schedule(self, machine: str, delay: float) -> None:
        due = time.monotonic() + delay
        self._due[machine] = due
        heapq.heappush(self._heap, (due, machine))
        live = self._live.get(machine)
        if live is not None:
            live.next_check = self.clock() + delay
        self._wake.set()

    def _next_delay(self, machine: str) -> float:
        live = self._live.get(machine)
        failures = live.failures if live is not None else 0
        base = self.interval if failures == 0 else min(
            self.interval * 2 ** min(failures, 10), self.max_backoff)
        return base * self._rng.uniform(0.85, 1.15)

    async def _run_scheduler(self) -> None:
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, machine = heapq.heappop(self._heap)
                if self._due.get(machine) != due or machine not in self._records:
                    continue  # rescheduled or removed since
                del self._due[machine]
                await self._slots.acquire()
                task = asyncio.create_task(self._poll_one(machine), name=f"power poll {machine}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = self._heap[0][0] - time.monotonic() if self._heap else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _poll_one(self, machine: str) -> None:
        try:
            record = self._records.get(machine)
            if record is None or not (self.supports(machine) & {STATE, HEALTH, WATTS}):
                return
            try:
                await self.poll(machine)
            except Exception:
                log.exception("polling the BMC of %s failed", machine)
            if machine in self._records and machine not in self._due:
                self._schedule(machine, self._next_delay(machine))
        finally:
            self._slots.release()
