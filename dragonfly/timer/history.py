"""Deployment history: one record per finished deployment (its template, the machine's
hardware class, each stage's start, end and bytes, the result and the reason), kept in the
store as documents of kind ``deployment`` keyed by workflow id, and held in memory for the
estimator, the dashboard's figures and the metrics.

Records are made by watching the workflow documents: whoever runs a deployment (the native
engine, the demo's simulator, Tinkerbell later) only has to finish its workflow. The machine's
hardware is read as it is when the deployment finishes (``machine``: the fleet's lookup).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dragonfly.domain.fleet import WORKFLOW
from dragonfly.domain.model import Machine, Workflow, WorkflowState
from dragonfly.store.base import Put, Store, Watch

log = logging.getLogger(__name__)

DEPLOYMENT = "deployment"
GIB = 1 << 30


@dataclass(frozen=True)
class HardwareClass:
    """What makes two machines deploy alike: the model, CPU, memory and the target disk."""

    vendor: str = ""
    product: str = ""
    cpu_model: str = ""
    cores: int = 0
    memory_gib: int = 0
    disk_kind: str = ""  # "nvme", "ssd", "hdd" or ""
    disk_gib: int = 0

    @property
    def model(self) -> str:
        """The grouping key the dashboard and the metrics use: vendor and product."""
        name = " ".join(p for p in (_short_vendor(self.vendor), self.product) if p)
        return name or "unknown hardware"

    @classmethod
    def of(cls, machine: Machine | None, disk: str = "") -> HardwareClass:
        if machine is None:
            return cls()
        target = _target_disk(machine, disk)
        return cls(vendor=machine.vendor, product=machine.product,
                   cpu_model=str(machine.cpu.get("model", "")),
                   cores=int(machine.cpu.get("cores", 0) or 0),
                   memory_gib=round(machine.memory_bytes / GIB),
                   disk_kind=_disk_kind(target), disk_gib=round(
                       int(target.get("size_bytes", 0) or 0) / GIB) if target else 0)


def _short_vendor(vendor: str) -> str:
    for suffix in (" Inc.", " Inc", ", Inc.", " Corporation", " Corp.", " Co., Ltd."):
        if vendor.endswith(suffix):
            return vendor[: -len(suffix)]
    return vendor


def _target_disk(machine: Machine, disk: str) -> dict[str, Any]:
    name = disk.rsplit("/", 1)[-1]
    for d in machine.disks:
        if name and d.get("name") == name:
            return d
    fixed = [d for d in machine.disks if not d.get("removable")]
    return min(fixed, key=lambda d: int(d.get("size_bytes", 0) or 0)) if fixed else {}


def _disk_kind(disk: dict[str, Any]) -> str:
    if not disk:
        return ""
    if str(disk.get("name", "")).startswith("nvme"):
        return "nvme"
    return "hdd" if disk.get("rotational") else "ssd"


_HARDWARE: dict[HardwareClass, HardwareClass] = {}


def _shared(hardware: HardwareClass) -> HardwareClass:
    """One object per distinct hardware class (a fleet has few, its history many records)."""
    return _HARDWARE.setdefault(hardware, hardware)


class Stage:
    """One stage of a finished deployment, compact: 10,000 deployments of ten stages each are
    held in memory, and a dict per stage cost four times as much. Reads like the dict it is
    stored as (``stage["seconds"]``, ``stage.get("bytes")``)."""

    __slots__ = ("name", "label", "state", "started_at", "seconds", "bytes")
    KEYS = ("name", "label", "state", "started_at", "finished_at", "seconds", "bytes")

    def __init__(self, name: str, label: str, state: str, started_at: float, seconds: float,
                 bytes: int) -> None:  # noqa: A002 (the stored key)
        self.name = sys.intern(name)
        self.label = sys.intern(label)
        self.state = sys.intern(state)
        self.started_at = started_at
        self.seconds = seconds
        self.bytes = bytes

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        return cls(str(data.get("name", "")), str(data.get("label", "")),
                   str(data.get("state", "")), float(data.get("started_at", 0.0) or 0.0),
                   float(data.get("seconds", 0.0) or 0.0), int(data.get("bytes", 0) or 0))

    def __getitem__(self, key: str) -> Any:
        if key == "finished_at":
            return self.started_at + self.seconds
        if key not in self.__slots__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        return {key: self[key] for key in self.KEYS}


@dataclass
class DeploymentRecord:
    id: str
    machine_id: str
    machine_name: str
    template: str
    engine: str
    hardware: HardwareClass
    result: str  # "succeeded" or "failed"
    reason: str
    started_at: float
    finished_at: float
    stages: list[Stage] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    @property
    def succeeded(self) -> bool:
        return self.result == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: its deep copy dominated listing 1,000 records.
        return {"id": self.id, "machine_id": self.machine_id, "machine_name": self.machine_name,
                "template": self.template, "engine": self.engine,
                "hardware": dict(self.hardware.__dict__), "model": self.hardware.model,
                "result": self.result, "reason": self.reason, "started_at": self.started_at,
                "finished_at": self.finished_at, "seconds": round(self.seconds, 1),
                "stages": [stage.to_dict() for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentRecord:
        hw = data.get("hardware") or {}
        known = {k: hw[k] for k in HardwareClass.__dataclass_fields__ if k in hw}
        return cls(id=str(data["id"]), machine_id=str(data.get("machine_id", "")),
                   machine_name=str(data.get("machine_name", "")),
                   template=str(data.get("template", "")), engine=str(data.get("engine", "")),
                   hardware=_shared(HardwareClass(**known)), result=str(data.get("result", "")),
                   reason=str(data.get("reason", "")),
                   started_at=float(data.get("started_at", 0.0)),
                   finished_at=float(data.get("finished_at", 0.0)),
                   stages=[Stage.from_dict(d) for d in data.get("stages", [])
                           if isinstance(d, dict)])

    @classmethod
    def of(cls, wf: Workflow, machine: Machine | None) -> DeploymentRecord:
        stages = []
        for action in wf.actions:
            started, finished = action.get("started_at"), action.get("finished_at")
            if started is None or finished is None:
                continue
            stages.append(Stage(str(action.get("name", "")), str(action.get("label", "")),
                                str(action.get("state", "")), float(started),
                                round(max(0.0, float(finished) - float(started)), 3),
                                int(action.get("bytes_done", 0) or 0)))
        disk = ""
        select = wf.action("select-disk")
        if select is not None:
            disk = str(select.get("result", {}).get("disk", ""))
        started_at = wf.started_at or wf.created_at
        return cls(id=wf.id, machine_id=wf.machine_id, machine_name=wf.machine_name,
                   template=wf.template, engine=wf.engine,
                   hardware=HardwareClass.of(machine, disk), result=wf.state.value,
                   reason=wf.error, started_at=started_at,
                   finished_at=wf.finished_at or started_at, stages=stages)


class DeploymentHistory:
    """Every finished deployment, in the store and in memory (ordered by finish time)."""

    name = "deployment history"

    def __init__(self, store: Store, machine: Callable[[str], Machine | None], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.machine = machine  # a machine by id, as it is now (the fleet's)
        self.clock = clock
        self.records: list[DeploymentRecord] = []
        self._ends: list[float] = []  # finished_at of each record, for bisect
        self._ids: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._stats: dict[tuple[int, int], dict[str, Any]] = {}
        self.version = 0  # bumped on every new record (caches key on it)
        self._backfill: Callable[[], list[DeploymentRecord]] | None = None

    async def start(self) -> None:
        # Watch first, load after: a deployment that finishes meanwhile is not missed (a
        # record is added once, whichever way it comes). Loading 10,000 records takes a
        # second or two; the server answers meanwhile and the history's readers wait.
        watch = self.store.watch((WORKFLOW,))
        self._watcher = asyncio.create_task(self._follow(watch), name="deployment history")

    async def ready(self) -> None:
        """Wait until the stored history is loaded (the API's readers call this)."""
        await self._loaded.wait()

    async def _load(self) -> None:
        docs = await self.store.list(DEPLOYMENT)
        records = await asyncio.to_thread(
            lambda: sorted((DeploymentRecord.from_dict(d.data) for d in docs),
                           key=lambda r: r.finished_at))
        for record in records:
            self._add(record)
        # Deployments that finished while nothing watched (a crash between the two writes).
        for doc in await self.store.list(WORKFLOW):
            await self._consider(doc.data)
        if self._backfill is not None:  # no await from here to set(): none is missed
            make, self._backfill = self._backfill, None
            self._remember(make())
        self._loaded.set()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
            self._watcher = None

    def _add(self, record: DeploymentRecord) -> None:
        if record.id in self._ids:
            return
        at = bisect.bisect_right(self._ends, record.finished_at)
        self._ends.insert(at, record.finished_at)
        self.records.insert(at, record)
        self._ids.add(record.id)
        self.version += 1

    async def _follow(self, watch: Watch) -> None:
        try:
            await self._load()
            async for change in watch:
                if change.data is None:
                    continue
                try:
                    await self._consider(change.data)
                except Exception:
                    log.exception("recording deployment %s failed", change.key)
        finally:
            watch.close()
            self._loaded.set()  # stopped: readers must not wait forever

    async def _consider(self, data: dict[str, Any]) -> None:
        state = data.get("state")
        if state not in (WorkflowState.SUCCEEDED.value, WorkflowState.FAILED.value):
            return
        if data.get("id") in self._ids or not data.get("finished_at"):
            return
        wf = Workflow.from_dict(data)
        if not wf.started_at and not wf.actions:
            return  # never ran (refused at once): not a deployment to learn from
        record = DeploymentRecord.of(wf, self.machine(wf.machine_id))
        await self.store.put(DEPLOYMENT, record.id, record.to_dict())
        self._add(record)

    async def add(self, *records: DeploymentRecord) -> None:
        """Record deployments directly (the demo's backfilled history): one write for all,
        which keeps the demo's start from waiting on hundreds of store round trips."""
        await self.store.commit([Put(DEPLOYMENT, r.id, r.to_dict()) for r in records])
        for record in records:
            self._add(record)

    def backfill(self, make: Callable[[], list[DeploymentRecord]]) -> None:
        """Deployments held in memory only, made by ``make`` when the history loads (in the
        background, where the stored ones load; readers wait for both): the demo's made-up
        history, whose store is in memory too. Made at once if the history has loaded."""
        if self._loaded.is_set():
            self._remember(make())
        else:
            self._backfill = make

    def _remember(self, records: list[DeploymentRecord]) -> None:
        for record in records:
            self._add(record)

    # --- queries ----------------------------------------------------------------------------

    def since(self, start: float) -> list[DeploymentRecord]:
        return self.records[bisect.bisect_left(self._ends, start):]

    def recent(self, count: int = 100) -> list[DeploymentRecord]:
        return self.records[-count:]

    def stats(self, *, tz_offset_minutes: int = 0) -> dict[str, Any]:
        """Everything the dashboard's Deployed card and charts show. The groups are computed
        once per new record (and time zone); only the last 24 h is counted per call."""
        key = (self.version, tz_offset_minutes)
        groups = self._stats.get(key)
        if groups is None:
            if len(self._stats) > 32:
                self._stats.clear()
            groups = self._stats[key] = self._groups(tz_offset_minutes * 60)
        day = self.since(self.clock() - 86400)
        return {
            **groups,
            "last_24h": {"deployed": sum(r.succeeded for r in day),
                         "failed": sum(not r.succeeded for r in day),
                         "average_seconds": _mean([r.seconds for r in day if r.succeeded])},
            "recent": [{"id": r.id, "machine_id": r.machine_id, "machine": r.machine_name,
                        "template": r.template, "result": r.result,
                        "seconds": round(r.seconds, 1), "finished_at": r.finished_at,
                        "reason": r.reason} for r in self.recent(100)],
        }

    def _groups(self, shift: float) -> dict[str, Any]:
        ok = [r for r in self.records if r.succeeded]
        by_template: dict[str, list[DeploymentRecord]] = defaultdict(list)
        by_model: dict[str, list[DeploymentRecord]] = defaultdict(list)
        by_day: Counter[tuple[int, bool]] = Counter()
        by_hour: Counter[tuple[int, bool]] = Counter()
        for r in self.records:
            by_template[r.template].append(r)
            by_model[r.hardware.model].append(r)
            local = r.finished_at + shift
            by_day[(int(local // 86400), r.succeeded)] += 1
            by_hour[(int(local % 86400 // 3600), r.succeeded)] += 1
        days = sorted({d for d, _ in by_day})[-30:]
        return {
            "total": len(self.records),
            "deployed": len(ok),
            "failed": len(self.records) - len(ok),
            "average_seconds": _mean([r.seconds for r in ok]),
            "by_template": [_group(name, rs) for name, rs in sorted(by_template.items())],
            "by_hardware": [_group(name, rs) for name, rs in sorted(by_model.items())],
            "by_day": [{"day": time.strftime("%Y-%m-%d", time.gmtime(d * 86400)),
                        "succeeded": by_day[(d, True)], "failed": by_day[(d, False)]}
                       for d in days],
            "by_hour": [{"hour": h, "succeeded": by_hour[(h, True)],
                         "failed": by_hour[(h, False)]} for h in range(24)],
        }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _group(name: str, records: list[DeploymentRecord]) -> dict[str, Any]:
    ok = [r.seconds for r in records if r.succeeded]
    return {"name": name, "succeeded": len(ok), "failed": len(records) - len(ok),
            "average_seconds": _mean(ok), "median_seconds": _median(ok)}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return round(value, 1)
