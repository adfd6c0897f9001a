"""How long a running deployment has left, learned from the history.

Each stage not yet done is estimated from the deployments most like this one: the same
template on the same hardware model, else the same template on any hardware, else the same
hardware with any template, else every deployment, else rough defaults. A streaming stage that
is running is estimated from its own observed rate and the bytes left; one not started yet
from the group's median rate and the bytes it will write. The answer says what it is based
on ("from 14 debian-12 deployments on Dell PowerEdge R650").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dragonfly.domain.model import Machine, Workflow
from dragonfly.timer.history import DeploymentHistory, DeploymentRecord, HardwareClass

MIN_SAMPLES = 3  # fewer deployments than this in a group: try a wider one
DEFAULT_STAGE_SECONDS = 30.0  # a stage nobody has timed yet, without a share
DEFAULT_DEPLOYMENT_SECONDS = 900.0  # what the stages' shares divide before any history
DEFAULT_RATE = 50e6  # bytes per second, for a stream nobody has timed yet
Key = tuple[str, str]  # (template or "", model or "")


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # what is left; None when nothing can be said
    basis: str  # in words
    samples: int  # how many deployments the estimate rests on


@dataclass
class _Group:
    count: int
    seconds: dict[str, float]  # stage name -> median seconds
    rate: dict[str, float]  # stage name -> median bytes per second (stages that moved bytes)


class Estimator:
    def __init__(self, history: DeploymentHistory) -> None:
        self.history = history
        self._version = -1
        self._groups: dict[Key, _Group] = {}

    def _refresh(self) -> None:
        if self._version == self.history.version:
            return
        buckets: dict[Key, list[DeploymentRecord]] = defaultdict(list)
        for record in self.history.records:
            if not record.succeeded:
                continue
            model = record.hardware.model
            for key in ((record.template, model), (record.template, ""), ("", model),
                        ("", "")):
                buckets[key].append(record)
        self._groups = {key: _summarise(records) for key, records in buckets.items()}
        self._version = self.history.version

    def groups(self, template: str, model: str) -> list[tuple[_Group, str]]:
        """The groups with enough deployments, narrowest first, with their descriptions."""
        self._refresh()
        found = []
        for key, words in (((template, model), f"{template} deployments on {model}"),
                           ((template, ""), f"{template} deployments on other hardware"),
                           (("", model), f"deployments on {model}"),
                           (("", ""), "deployments of any template")):
            group = self._groups.get(key)
            if group is not None and group.count >= MIN_SAMPLES:
                found.append((group, f"from {group.count} {words}"))
        return found

    def estimate(self, wf: Workflow, machine: Machine | None, now: float) -> Estimate:
        disk = ""
        select = wf.action("select-disk")
        if select is not None:
            disk = str(select.get("result", {}).get("disk", ""))
        model = HardwareClass.of(machine, disk).model
        groups = self.groups(wf.template, model)
        left = 0.0
        for action in wf.actions:
            state = action.get("state")
            if state in ("succeeded", "failed"):
                continue
            # The narrowest group that has timed this stage (another engine's deployments
            # have other stages: a Tinkerbell stage is looked for among Tinkerbell's).
            name = str(action.get("name", ""))
            group = next((g for g, _ in groups if name in g.seconds), None)
            left += self._stage_left(action, group, wf, now)
        if not groups:
            return Estimate(round(left, 1), "rough defaults: no deployments to learn from yet", 0)
        return Estimate(round(left, 1), groups[0][1], groups[0][0].count)

    @staticmethod
    def _stage_left(action: dict[str, Any], group: _Group | None, wf: Workflow,
                    now: float) -> float:
        name = str(action.get("name", ""))
        typical = group.seconds.get(name) if group else None
        total = int(action.get("bytes_total", 0) or 0) or (
            int(wf.image.get("raw_size", 0) or 0) if group and name in group.rate else 0)
        done = int(action.get("bytes_done", 0) or 0)
        rate = float(action.get("rate", 0) or 0)
        if action.get("state") == "running":
            if total and rate > 0:
                return max(0.0, (total - done) / rate)
            started = action.get("started_at")
            elapsed = max(0.0, now - float(started)) if started else 0.0
            expected = (total / group.rate[name] if total and group and name in group.rate
                        else typical if typical is not None
                        else float(action.get("share", 0) or 0) * DEFAULT_DEPLOYMENT_SECONDS
                        or DEFAULT_STAGE_SECONDS)
            # Overdue: say a little is left, not zero, and not the whole stage again.
            return max(expected - elapsed, 0.1 * expected)
        if total and group and name in group.rate:
            return total / group.rate[name]
        if typical is not None:
            return typical
        if total:
            return total / DEFAULT_RATE
        share = float(action.get("share", 0) or 0)
        return share * DEFAULT_DEPLOYMENT_SECONDS if share else DEFAULT_STAGE_SECONDS


def _summarise(records: list[DeploymentRecord]) -> _Group:
    import statistics  # with fractions and decimal: imported when first needed

    seconds: dict[str, list[float]] = defaultdict(list)
    rates: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for stage in record.stages:
            seconds[stage.name].append(stage.seconds)
            if stage.bytes and stage.seconds > 0:
                rates[stage.name].append(stage.bytes / stage.seconds)
    return _Group(len(records), {k: statistics.median(v) for k, v in seconds.items()},
                  {k: statistics.median(v) for k, v in rates.items()})
