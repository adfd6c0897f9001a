"""Adopt from BMC: an operator gives the BMC of a machine Dragonfly has never seen; Dragonfly
sets one-time PXE and powers it on, the machine boots discovery, and when its agent reports a
BMC at that address the record becomes the machine's BMC record.

An adoption is a document of kind ``bmc_adoption`` (never streamed: it holds the sealed
password), keyed by its id. States: ``waiting`` (powered on, no agent has reported that BMC
yet), ``linked`` (the record now belongs to ``machine``), ``failed`` (the BMC refused or could
not be reached; ``reason`` says why, and adopting the same address again retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from dragonfly.domain.fleet import MACHINE
from dragonfly.errors import Conflict, InvalidInput, NotFound
from dragonfly.power.drivers.base import BOOT_PXE, CYCLE, ON, STATE, PowerError
from dragonfly.power.records import BmcRecord, from_document, parse_record, to_document

if TYPE_CHECKING:
    from dragonfly.power.service import PowerService
    from dragonfly.store.base import Change

log = logging.getLogger(__name__)

ADOPTION = "bmc_adoption"
WAITING, LINKED, FAILED = "waiting", "linked", "failed"


def _host(address: str) -> str:
    """The bare host of an address or URL, for matching what an agent reports."""
    host = re.sub(r"^https?://", "", address.strip()).split("/", 1)[0]
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


class Adoptions:
    """Pending and finished adoptions; links them as machines report their BMC."""

    def __init__(self, power: PowerService) -> None:
        self.power = power
        self._docs: dict[str, dict[str, Any]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for doc in await self.power.store.list(ADOPTION):
            self._docs[doc.key] = dict(doc.data)
        watch = self.power.store.watch((MACHINE,))
        self._watcher = asyncio.create_task(self._follow(watch), name="bmc adoptions")
        # A machine may have reported its BMC while the server was down (only worth reading
        # every machine when an adoption is waiting).
        if any(d["state"] == WAITING for d in self._docs.values()):
            for doc in await self.power.store.list(MACHINE):
                await self._maybe_link(doc.key, doc.data)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
            self._watcher = None

    # --- API --------------------------------------------------------------------------------

    def all(self) -> list[dict[str, Any]]:
        return sorted((self._public(d) for d in self._docs.values()),
                      key=lambda d: d["created"], reverse=True)

    def get(self, adoption: str) -> dict[str, Any]:
        doc = self._docs.get(adoption)
        if doc is None:
            raise NotFound(f"no adoption {adoption}", {"adoption": adoption})
        return self._public(doc)

    async def remove(self, adoption: str) -> None:
        if self._docs.pop(adoption, None) is None:
            raise NotFound(f"no adoption {adoption}", {"adoption": adoption})
        await self.power.store.delete(ADOPTION, adoption)

    async def adopt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate the BMC, power the machine on into PXE, and wait for it to report."""
        adoption = secrets.token_hex(6)
        record = parse_record(f"adopt-{adoption}", body, self.power.registry.names, None,
                              self.power.clock())
        if record.driver == "wol":
            raise InvalidInput("a Wake-on-LAN record cannot be adopted from: an agent "
                               "never reports it as a BMC address", {"field": "driver"})
        host = _host(record.address)
        for machine, other in self.power.records().items():
            if _host(other.address) == host and other.driver == record.driver:
                raise Conflict(f"the BMC at {record.address} already belongs to machine "
                               f"{machine}", {"machine": machine})
        for other_doc in self._docs.values():
            if other_doc["state"] == WAITING and other_doc["host"] == host:
                raise Conflict(f"an adoption of {record.address} is already waiting "
                               f"({other_doc['id']}): remove it first",
                               {"adoption": other_doc["id"]})
        for old in [k for k, d in self._docs.items() if d["host"] == host]:
            await self.remove(old)  # a failed or linked earlier try of the same BMC
        now = self.power.clock()
        doc: dict[str, Any] = {
            "id": adoption, "host": host, "created": now, "updated": now, "state": WAITING,
            "reason": "", "machine": None, "steps": [],
            "record": to_document(record, self.power.box)}
        doc["state"], doc["reason"], doc["steps"] = await self._power_on(record)
        doc["updated"] = self.power.clock()
        self._docs[adoption] = doc
        await self.power.store.put(ADOPTION, adoption, doc)
        # The machine may be known already (it PXE-booted before): link at once.
        for machine_doc in await self.power.store.list(MACHINE):
            await self._maybe_link(machine_doc.key, machine_doc.data)
        return self._public(self._docs[adoption])

    # --- inside -----------------------------------------------------------------------------

    async def _power_on(self, record: BmcRecord) -> tuple[str, str, list[dict[str, Any]]]:
        """One-time PXE, then on (or a cycle when it is on already)."""
        steps: list[dict[str, Any]] = []
        driver = self.power.registry.make(record, self.power.env, self.power.boot_interface)
        try:
            ops: list[str] = []
            if BOOT_PXE in driver.supports:
                ops.append(BOOT_PXE)
            state = "unknown"
            if STATE in driver.supports:
                state = await driver.power_state()
                steps.append({"step": "state", "ok": True, "detail": state})
            ops.append(CYCLE if state == "on" and CYCLE in driver.supports else ON)
            for op in ops:
                if op not in driver.supports:
                    raise driver.unsupported(op)
                await driver.run(op)
                steps.append({"step": op, "ok": True, "detail": ""})
        except PowerError as exc:
            reason = self.power.scrub(exc.message, record)
            steps.append({"step": "power", "ok": False, "detail": reason, "reason": exc.reason})
            return FAILED, reason, steps
        finally:
            with contextlib.suppress(Exception):
                await driver.close()
        return WAITING, "", steps

    async def _follow(self, watch: Any) -> None:
        try:
            async for change in watch:
                await self._on_change(change)
        finally:
            watch.close()

    async def _on_change(self, change: Change) -> None:
        if change.op == "put" and change.data is not None:
            try:
                await self._maybe_link(change.key, change.data)
            except Exception:
                log.exception("linking a BMC adoption to machine %s failed", change.key)

    async def _maybe_link(self, machine: str, data: dict[str, Any]) -> None:
        bmc = data.get("bmc") or {}
        reported = str(bmc.get("ip") or "").lower() if isinstance(bmc, dict) else ""
        if not reported or not self._docs:
            return
        for doc in list(self._docs.values()):
            if doc["state"] != WAITING or doc["host"] != reported:
                continue
            record = from_document(doc["record"], self.power.box)
            body = {k: v for k, v in record.to_dict().items() if k not in ("machine", "updated")}
            await self.power.set_bmc(machine, body)
            doc.update(state=LINKED, machine=machine, updated=self.power.clock(), reason="")
            await self.power.store.put(ADOPTION, doc["id"], doc)
            log.info("BMC %s adopted: machine %s reported it", doc["host"], machine)

    @staticmethod
    def _public(doc: dict[str, Any]) -> dict[str, Any]:
        record = doc["record"]
        return {"id": doc["id"], "state": doc["state"], "reason": doc["reason"],
                "machine": doc["machine"], "driver": record.get("driver"),
                "address": record.get("address"), "port": record.get("port", 0),
                "user": record.get("user", ""), "has_password": bool(record.get("password")),
                "steps": doc["steps"], "created": doc["created"], "updated": doc["updated"]}
