"""The fleet service: machines, tags, workflows and history over a ``Store``.

Handlers and the simulator call this; it is the only place that moves a machine through the
lifecycle table. Machines and active workflows are mirrored in memory from the store's change
feed, so listing and searching 10,000 machines never touches the disk.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from dragonfly.domain.model import (
    HistoryEvent,
    Machine,
    State,
    Workflow,
    WorkflowState,
    check_transition,
    validate_tag,
    validate_tags,
)
from dragonfly.errors import InvalidInput, NotFound
from dragonfly.store import Change, Delete, Doc, Put, RevisionMismatch, Store

MACHINE = "machine"
WORKFLOW = "workflow"
HISTORY = "history"
HISTORY_KEEP = 500  # per machine; older lines are pruned

_state_of = attrgetter("state")


def _discount(counter: Counter[str], key: str) -> None:
    """One fewer ``key``; gone at zero, so ``key in counter`` means "some left"."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]

SORT_KEYS: dict[str, Callable[[Machine], Any]] = {
    "name": lambda m: m.name.lower(),
    "state": lambda m: m.state.value,
    "ip": lambda m: tuple(int(p) for p in (m.ip or "0.0.0.0").split(".") if p.isdigit()),
    "mac": lambda m: m.mac,
    "vendor": lambda m: (m.vendor.lower(), m.product.lower()),
    "memory": lambda m: m.memory_bytes,
    "cpus": lambda m: m.cpu.get("threads", 0),
    "last_seen": lambda m: m.last_seen or 0.0,
    "created": lambda m: m.created_at,
}


class _SortableIds:
    """Strictly increasing, time-ordered key suffixes (so prefix scans come back in order)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        now = max(time.time_ns(), self._last + 1)
        self._last = now
        return f"{now:016x}"


@dataclass
class MachinePage:
    items: list[Machine]
    total: int
    states: dict[str, int]


class Fleet:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._machines: dict[str, Machine] = {}
        self._revs: dict[str, int] = {}
        self._search: dict[str, str] = {}
        self._by_mac: dict[str, str] = {}  # every NIC's MAC -> machine id (DHCP's hot path)
        self._names: Counter[str] = Counter()  # check-ins name new machines uniquely
        # SMBIOS UUID -> ids in arrival order (junk UUIDs are shared by many machines).
        self._by_uuid: dict[str, dict[str, None]] = {}
        self._adding: Counter[str] = Counter()  # names of machines being added right now
        self._active: dict[str, Workflow] = {}
        self._ids = _SortableIds()
        self._listening = False
        # (workflow, its machine, now) -> (seconds left, basis): the deployment timer's ETA,
        # set by the composition; None keeps each runner's own estimate.
        self.estimate: Callable[[Workflow, Machine | None, float],
                                tuple[float | None, str]] | None = None

    async def start(self) -> None:
        for doc in await self.store.list(MACHINE):
            self._cache_machine(doc.key, doc.rev, doc.data)
        for doc in await self.store.list(WORKFLOW):
            wf = Workflow.from_dict(doc.data)
            if wf.active:
                self._active[wf.id] = wf
        self.store.add_listener(self._on_change)
        self._listening = True

    def stop(self) -> None:
        if self._listening:
            self.store.remove_listener(self._on_change)
            self._listening = False

    # --- the in-memory mirror -----------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.kind == MACHINE:
            if change.op == "delete":
                self._forget_indexes(change.key)
                self._machines.pop(change.key, None)
                self._revs.pop(change.key, None)
                self._search.pop(change.key, None)
            elif change.data is not None:
                self._cache_machine(change.key, change.rev, change.data)
        elif change.kind == WORKFLOW:
            if change.op == "delete" or change.data is None:
                self._active.pop(change.key, None)
            else:
                wf = Workflow.from_dict(change.data)
                if wf.active:
                    self._active[wf.id] = wf
                else:
                    self._active.pop(wf.id, None)

    def _forget_indexes(self, key: str) -> None:
        old = self._machines.get(key)
        if old is not None:
            for mac in (old.mac, *old.macs):
                if self._by_mac.get(mac) == key:
                    del self._by_mac[mac]
            _discount(self._names, old.name)
            same_uuid = self._by_uuid.get(old.smbios_uuid)
            if same_uuid is not None:
                same_uuid.pop(key, None)
                if not same_uuid:
                    del self._by_uuid[old.smbios_uuid]

    def _cache_machine(self, key: str, rev: int, data: dict[str, Any]) -> None:
        machine = Machine.from_dict(data)
        self._forget_indexes(key)
        for mac in (machine.mac, *machine.macs):
            self._by_mac[mac] = key
        self._names[machine.name] += 1
        if machine.smbios_uuid:
            self._by_uuid.setdefault(machine.smbios_uuid, {})[key] = None
        self._machines[key] = machine
        self._revs[key] = rev
        self._search[key] = machine.search_text()

    # --- machines -----------------------------------------------------------------------------

    def machine_count(self) -> int:
        return len(self._machines)

    def list_machines(self, *, q: str = "", state: str = "", tag: str = "", sort: str = "name",
                      order: str = "asc", limit: int = 100, offset: int = 0) -> MachinePage:
        if sort not in SORT_KEYS:
            raise InvalidInput(f"cannot sort by {sort!r}", {"sortable": sorted(SORT_KEYS)})
        if order not in ("asc", "desc"):
            raise InvalidInput("order must be asc or desc")
        if state:
            try:
                wanted_state: State | None = State(state)
            except ValueError:
                raise InvalidInput(f"unknown state {state!r}",
                                   {"states": [s.value for s in State]}) from None
        else:
            wanted_state = None
        terms = q.lower().split()
        matches = []
        for key, machine in self._machines.items():
            if tag and tag not in machine.tags:
                continue
            if terms:
                text = self._search[key]
                if not all(term in text for term in terms):
                    continue
            matches.append(machine)
        # Counted by member, named once per state: `.value` per machine is an enum property
        # lookup, a measurable share of a 10,000-machine list.
        states = Counter(map(_state_of, matches))
        if wanted_state is not None:
            matches = [m for m in matches if m.state is wanted_state]
        matches.sort(key=SORT_KEYS[sort], reverse=order == "desc")
        return MachinePage(matches[offset:offset + limit], len(matches),
                           {state.value: n for state, n in states.items()})

    def name_taken(self, name: str) -> bool:
        return name in self._names or name in self._adding

    def lookup(self, machine_id: str) -> Machine | None:
        """The machine, or None when there is none by that id."""
        return self._machines.get(machine_id)

    def get_machine(self, machine_id: str) -> Machine:
        machine = self._machines.get(machine_id)
        if machine is None:
            raise NotFound(f"no machine {machine_id!r}")
        return machine

    def find_machine(self, macs: Iterable[str] = (), smbios_uuid: str = "") -> Machine | None:
        """Identity for check-ins and boot: any known MAC, or the SMBIOS UUID."""
        for mac in macs:
            key = self._by_mac.get(mac)
            if key is not None:
                return self._machines[key]
        for key in self._by_uuid.get(smbios_uuid, ()) if smbios_uuid else ():
            return self._machines[key]
        return None

    async def add_machine(self, machine: Machine, message: str = "Machine registered") -> Machine:
        machine.created_at = machine.updated_at = self.clock()
        # Claimed before the first await, so a concurrent check-in choosing a name sees it.
        self._adding[machine.name] += 1
        try:
            await self.store.commit([
                Put(MACHINE, machine.id, machine.to_dict(), expect_rev=0),
                self._history_op(machine.id, "state", message, {"state": machine.state.value}),
            ])
        finally:
            _discount(self._adding, machine.name)
        return self.get_machine(machine.id)

    async def update_machine(self, machine_id: str,
                             mutate: Callable[[Machine], HistoryEvent | None],
                             *, extra: Iterable[Put] = ()) -> Machine:
        """Read-modify-write with compare-and-set; retries if another writer got there first."""
        extra = list(extra)
        for _attempt in range(5):
            current = self.get_machine(machine_id)
            rev = self._revs[machine_id]
            machine = Machine.from_dict(current.to_dict())
            event = mutate(machine)
            machine.updated_at = self.clock()
            ops: list[Put] = [Put(MACHINE, machine_id, machine.to_dict(), expect_rev=rev)]
            if event is not None:
                ops.append(self._history_op(machine_id, event.kind, event.message, event.data))
            try:
                await self.store.commit([*ops, *extra])
            except RevisionMismatch:
                continue
            return self.get_machine(machine_id)
        raise RevisionMismatch(f"machine {machine_id} is changing too fast; try again")

    async def delete_machine(self, machine_id: str) -> None:
        self.get_machine(machine_id)
        await self.store.delete(MACHINE, machine_id)

    async def transition(self, machine_id: str, action: str, reason: str = "",
                         actor: str = "", **changes: Any) -> Machine:
        def mutate(machine: Machine) -> HistoryEvent:
            transition = check_transition(machine.state, action)
            before = machine.state
            machine.state = transition.target
            machine.state_reason = reason
            for name, value in changes.items():
                setattr(machine, name, value)
            text = f"{before.value} → {transition.target.value} ({action})"
            if reason:
                text += f": {reason}"
            return self._event(machine.id, "state", text,
                               {"action": action, "from": before.value,
                                "to": transition.target.value, "actor": actor})
        return await self.update_machine(machine_id, mutate)

    # --- tags ---------------------------------------------------------------------------------

    async def set_tags(self, machine_id: str, tags: object, actor: str = "") -> Machine:
        clean = validate_tags(tags)

        def mutate(machine: Machine) -> HistoryEvent | None:
            added = [t for t in clean if t not in machine.tags]
            removed = [t for t in machine.tags if t not in clean]
            machine.tags = clean
            if not added and not removed:
                return None
            return self._event(machine.id, "tags", _describe_tags(added, removed),
                               {"added": added, "removed": removed, "actor": actor})
        return await self.update_machine(machine_id, mutate)

    async def bulk_tags(self, machine_ids: object, add: object = (), remove: object = (),
                        actor: str = "") -> list[Machine]:
        if not isinstance(machine_ids, list) or not all(isinstance(i, str) for i in machine_ids):
            raise InvalidInput("ids must be a list of machine ids")
        if len(machine_ids) > 10_000:
            raise InvalidInput("at most 10,000 machines per bulk request")
        to_add = validate_tags(list(add) if isinstance(add, (list, tuple)) else add)
        to_remove = [validate_tag(t) for t in (remove if isinstance(remove, (list, tuple))
                                               else _not_a_list("remove"))]
        for machine_id in machine_ids:
            self.get_machine(machine_id)  # all-or-nothing: fail before changing anything
        result = []
        for machine_id in machine_ids:
            machine = self.get_machine(machine_id)
            tags = [t for t in machine.tags if t not in to_remove]
            tags += [t for t in to_add if t not in tags]
            result.append(await self.set_tags(machine_id, tags, actor))
        return result

    def tag_counts(self) -> list[dict[str, Any]]:
        counts: Counter[str] = Counter()
        for machine in self._machines.values():
            counts.update(machine.tags)
        return [{"name": name, "count": count}
                for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    async def rename_tag(self, old: str, new: object, actor: str = "") -> int:
        new_tag = validate_tag(new)
        touched = [m.id for m in self._machines.values() if old in m.tags]
        if not touched:
            raise NotFound(f"no machine has the tag {old!r}")
        for machine_id in touched:
            tags = self.get_machine(machine_id).tags
            renamed = [new_tag if t == old else t for t in tags]
            await self.set_tags(machine_id, list(dict.fromkeys(renamed)), actor)
        return len(touched)

    async def delete_tag(self, tag: str, actor: str = "") -> int:
        touched = [m.id for m in self._machines.values() if tag in m.tags]
        if not touched:
            raise NotFound(f"no machine has the tag {tag!r}")
        for machine_id in touched:
            tags = [t for t in self.get_machine(machine_id).tags if t != tag]
            await self.set_tags(machine_id, tags, actor)
        return len(touched)

    # --- workflows ----------------------------------------------------------------------------

    def new_workflow_id(self, machine_id: str) -> str:
        return f"{machine_id}.{self._ids.next()}"

    def active_workflows(self) -> list[Workflow]:
        return sorted(self._active.values(), key=lambda w: w.created_at)

    def active_workflow_of(self, machine: Machine) -> Workflow | None:
        """The machine's running workflow, from the mirror (no store read): read-only."""
        return self._active.get(machine.workflow_id) if machine.workflow_id else None

    async def get_workflow(self, workflow_id: str) -> Workflow:
        if workflow_id in self._active:
            return self._active[workflow_id]
        doc = await self.store.get(WORKFLOW, workflow_id)
        if doc is None:
            raise NotFound(f"no workflow {workflow_id!r}")
        return Workflow.from_dict(doc.data)

    async def list_workflows(self, machine_id: str = "", state: str = "",
                             limit: int = 100) -> list[Workflow]:
        if state and state not in {s.value for s in WorkflowState}:
            raise InvalidInput(f"unknown workflow state {state!r}")
        docs: list[Doc] = await self.store.list(
            WORKFLOW, f"{machine_id}." if machine_id else "", reverse=True,
            limit=None if state else limit)
        flows = [Workflow.from_dict(d.data) for d in docs]
        if state:
            flows = [w for w in flows if w.state.value == state][:limit]
        return flows

    async def save_workflow(self, workflow: Workflow) -> Workflow:
        if self.estimate is not None and workflow.active:
            # The deployment timer's learned ETA replaces the runner's own guess.
            with contextlib.suppress(Exception):
                eta, basis = self.estimate(workflow, self.lookup(workflow.machine_id),
                                           self.clock())
                if eta is not None:
                    workflow.eta_seconds, workflow.eta_basis = eta, basis
        await self.store.put(WORKFLOW, workflow.id, workflow.to_dict())
        return workflow

    async def start_workflow(self, machine_id: str, action: str, workflow: Workflow,
                             actor: str = "") -> Machine:
        """Move the machine into ``deploying`` and store its workflow in one commit."""
        workflow.machine_id = machine_id
        workflow.machine_name = self.get_machine(machine_id).name

        def mutate(machine: Machine) -> HistoryEvent:
            transition = check_transition(machine.state, action)
            before = machine.state
            machine.state = transition.target
            machine.state_reason = ""
            machine.workflow_id = workflow.id
            return self._event(machine.id, "state",
                               f"{before.value} → {transition.target.value} ({action}: "
                               f"{workflow.template})",
                               {"action": action, "from": before.value,
                                "to": transition.target.value, "workflow": workflow.id,
                                "actor": actor})
        return await self.update_machine(
            machine_id, mutate, extra=[Put(WORKFLOW, workflow.id, workflow.to_dict())])

    # --- history ------------------------------------------------------------------------------

    def _event(self, machine_id: str, kind: str, message: str,
               data: dict[str, Any] | None = None) -> HistoryEvent:
        return HistoryEvent(f"{machine_id}.{self._ids.next()}", machine_id, self.clock(), kind,
                            message, data or {})

    def _history_op(self, machine_id: str, kind: str, message: str,
                    data: dict[str, Any] | None = None) -> Put:
        event = self._event(machine_id, kind, message, data)
        return Put(HISTORY, event.id, event.to_dict())

    async def record(self, machine_id: str, kind: str, message: str,
                     data: dict[str, Any] | None = None) -> HistoryEvent:
        op = self._history_op(machine_id, kind, message, data)
        await self.store.commit([op])
        return HistoryEvent(**op.data)

    async def history(self, machine_id: str, limit: int = 200) -> list[HistoryEvent]:
        self.get_machine(machine_id)
        docs = await self.store.list(HISTORY, f"{machine_id}.", limit=limit, reverse=True)
        return [HistoryEvent(**d.data) for d in docs]

    async def prune_history(self, machine_id: str, keep: int = HISTORY_KEEP) -> int:
        docs = await self.store.list(HISTORY, f"{machine_id}.", reverse=True)
        stale = docs[keep:]
        if stale:
            await self.store.commit([Delete(HISTORY, d.key) for d in stale])
        return len(stale)

    # --- dashboard ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        counts = Counter(m.state.value for m in self._machines.values())
        recent = sorted((m for m in self._machines.values() if m.last_seen),
                        key=lambda m: m.last_seen or 0.0, reverse=True)[:8]
        return {
            "total": len(self._machines),
            "states": {s.value: counts.get(s.value, 0) for s in State},
            "active_workflows": [w.to_dict() for w in self.active_workflows()],
            "recently_seen": [summary(m) for m in recent],
        }


def summary(machine: Machine) -> dict[str, Any]:
    """The fields a list row needs (the full record is on the machine endpoint)."""
    return {
        "id": machine.id, "name": machine.name, "state": machine.state.value,
        "mac": machine.mac, "ip": machine.ip, "vendor": machine.vendor,
        "product": machine.product, "serial": machine.serial,
        "cpu_threads": machine.cpu.get("threads", 0), "memory_bytes": machine.memory_bytes,
        "disk_bytes": sum(int(d.get("size_bytes", 0)) for d in machine.disks),
        "tags": machine.tags, "role": machine.role, "os": machine.os, "power": machine.power,
        "state_reason": machine.state_reason, "workflow_id": machine.workflow_id,
        "last_seen": machine.last_seen,
    }


def _describe_tags(added: list[str], removed: list[str]) -> str:
    parts = []
    if added:
        parts.append("tagged " + ", ".join(added))
    if removed:
        parts.append("untagged " + ", ".join(removed))
    return "; ".join(parts).capitalize()


def _not_a_list(name: str) -> list[str]:
    raise InvalidInput(f"{name} must be a list of tags")

