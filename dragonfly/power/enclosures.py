"""OpenJBOD enclosures: a JBOD chassis whose RP2040 controller switches its power supply. An
enclosure is registered once (name, address, credentials) and attached to the machines whose
disks it holds; their pages show its state, and powering it is guarded by every attached
machine's lock (switching an enclosure off pulls disks from under them).

One document of kind ``enclosure`` per enclosure (never streamed: it holds the sealed
password), shaped as a BMC record of the ``openjbod`` driver plus ``machines``.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from dragonfly.errors import Conflict, InvalidInput, NotFound
from dragonfly.power.drivers.base import ACTIONS, HEALTH, STATE, PowerDriver, PowerError
from dragonfly.power.records import BmcRecord, from_document, parse_record, to_document

if TYPE_CHECKING:
    from dragonfly.power.service import PowerService

ENCLOSURE = "enclosure"
DRIVER = "openjbod"
MAX_MACHINES = 256
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class Enclosures:
    def __init__(self, power: PowerService) -> None:
        self.power = power
        self._records: dict[str, BmcRecord] = {}
        self._machines: dict[str, list[str]] = {}
        self._drivers: dict[str, PowerDriver] = {}

    async def start(self) -> None:
        for doc in await self.power.store.list(ENCLOSURE):
            self._records[doc.key] = from_document(doc.data, self.power.box)
            self._machines[doc.key] = [str(m) for m in doc.data.get("machines", [])]

    async def stop(self) -> None:
        for driver in self._drivers.values():
            with contextlib.suppress(Exception):
                await driver.close()
        self._drivers.clear()

    # --- records ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._records)

    def of_machine(self, machine: str) -> list[str]:
        return sorted(n for n, ms in self._machines.items() if machine in ms)

    def machines(self, name: str) -> list[str]:
        self._record(name)
        return list(self._machines.get(name, []))

    def _record(self, name: str) -> BmcRecord:
        record = self._records.get(name)
        if record is None:
            raise NotFound(f"no enclosure named {name!r}", {"enclosure": name})
        return record

    def public(self, name: str) -> dict[str, Any]:
        """The record without its password, and the attached machines."""
        data = self._record(name).public()
        data.pop("machine", None)
        for unused in ("mac", "broadcast", "enclosure", "system", "driver"):
            data.pop(unused, None)
        return {"name": name, **data, "machines": self.machines(name)}

    async def put(self, name: str, body: dict[str, Any], *, create: bool) -> dict[str, Any]:
        if not _NAME.match(name):
            raise InvalidInput("an enclosure's name is 1-63 lower-case letters, digits, '.', "
                               "'_' and '-'", {"field": "name"})
        if create and name in self._records:
            raise Conflict(f"an enclosure named {name!r} exists already", {"enclosure": name})
        previous = None if create else self._record(name)
        fields = {k: v for k, v in body.items() if k not in ("name", "machines")}
        fields["driver"] = DRIVER
        record = parse_record(name, fields, frozenset({DRIVER}), previous, self.power.clock())
        machines = self._machines.get(name, [])
        if "machines" in body:
            machines = self._check_machines(body["machines"])
        await self._save(name, record, machines)
        return self.public(name)

    def _check_machines(self, value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value) \
                or len(value) > MAX_MACHINES:
            raise InvalidInput(f"machines must be a list of at most {MAX_MACHINES} machine ids",
                               {"field": "machines"})
        return list(dict.fromkeys(value))

    async def attach(self, name: str, machines: object) -> dict[str, Any]:
        record = self._record(name)
        await self._save(name, record, self._check_machines(machines))
        return self.public(name)

    async def _save(self, name: str, record: BmcRecord, machines: list[str]) -> None:
        data = to_document(record, self.power.box)
        data["machines"] = machines
        await self.power.store.put(ENCLOSURE, name, data)
        self._records[name] = record
        self._machines[name] = machines
        driver = self._drivers.pop(name, None)
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.close()

    async def remove(self, name: str) -> None:
        self._record(name)
        await self.power.store.delete(ENCLOSURE, name)
        self._records.pop(name, None)
        self._machines.pop(name, None)
        driver = self._drivers.pop(name, None)
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.close()

    # --- the controller ---------------------------------------------------------------------

    def _driver(self, name: str) -> PowerDriver:
        driver = self._drivers.get(name)
        if driver is None:
            driver = self.power.registry.make(self._record(name), self.power.env)
            self._drivers[name] = driver
        return driver

    async def status(self, name: str) -> dict[str, Any]:
        """Asked of the controller now: state and health, or the reason it could not say."""
        record = self._record(name)
        driver = self._driver(name)
        out: dict[str, Any] = {"name": name, "machines": self.machines(name),
                               "state": "unknown", "health": "unknown", "error": "",
                               "reason": "", "checked_at": self.power.clock(),
                               "actions": [a for a in ACTIONS if a in driver.supports]}
        try:
            if STATE in driver.supports:
                out["state"] = await driver.power_state()
            if HEALTH in driver.supports:
                out["health"] = await driver.health()
        except PowerError as exc:
            out["error"], out["reason"] = self.power.scrub(exc.message, record), exc.reason
        return out

    async def act(self, name: str, op: str) -> dict[str, Any]:
        """``op`` on the enclosure (the caller applied the guards of its machines)."""
        driver = self._driver(name)
        if op not in ACTIONS:
            raise InvalidInput(f"unknown power operation {op!r}", {"op": op})
        if op not in driver.supports:
            raise driver.unsupported(op)
        try:
            await driver.run(op)
        except PowerError as exc:
            raise PowerError(self.power.scrub(exc.message, self._record(name)), exc.reason
                             ) from None
        return {"enclosure": name, "op": op, "ok": True}
