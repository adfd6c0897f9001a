"""The domain: machines, workflows, history events, and the machine lifecycle table.

Everything here is plain data plus pure functions; storage and HTTP live elsewhere.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dragonfly.errors import Conflict, InvalidInput


class State(StrEnum):
    DISCOVERED = "discovered"
    READY = "ready"
    DEPLOYING = "deploying"
    INSTALLED = "installed"
    FAILED = "failed"
    MAINTENANCE = "maintenance"


STATE_HELP: dict[State, str] = {
    State.DISCOVERED: "Booted into discovery and reported its hardware; waiting to be adopted.",
    State.READY: "Adopted and available; no OS deployed by Dragonfly.",
    State.DEPLOYING: "A workflow is installing an OS on it.",
    State.INSTALLED: "An OS was deployed and the machine reported back.",
    State.FAILED: "The last deployment failed; the reason is on the machine.",
    State.MAINTENANCE: "Taken out of service by an operator.",
}


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[State]
    target: State
    help: str
    destructive: bool = False  # wipes or rewrites the disk: subject to locks and safety mode
    # The least role that may take this action from the panel or API; None: only the workflow
    # engine and the agent take it.
    operator: str | None = None


def _t(name: str, sources: set[State], target: State, help: str, destructive: bool = False,
       operator: str | None = None) -> Transition:
    return Transition(name, frozenset(sources), target, help, destructive, operator)


# The one lifecycle table. The API, the agent check-in and the demo simulator all move machines
# through ``apply_transition``; nothing else assigns ``Machine.state``.
TRANSITIONS: dict[str, Transition] = {t.name: t for t in (
    _t("adopt", {State.DISCOVERED}, State.READY, "Accept a discovered machine into the fleet.",
       operator="user"),
    _t("deploy", {State.READY, State.FAILED}, State.DEPLOYING, "Install an OS.", destructive=True,
       operator="admin"),
    _t("reimage", {State.INSTALLED}, State.DEPLOYING, "Wipe and install an OS again.",
       destructive=True, operator="admin"),
    _t("deployed", {State.DEPLOYING}, State.INSTALLED, "The workflow finished and the OS is up."),
    _t("fail", {State.DEPLOYING}, State.FAILED, "The workflow stopped with an error."),
    _t("release", {State.INSTALLED, State.FAILED}, State.READY,
       "Return the machine to the pool; its disk will be overwritten on the next deploy.",
       destructive=True, operator="admin"),
    _t("maintenance", {State.DISCOVERED, State.READY, State.INSTALLED, State.FAILED},
       State.MAINTENANCE, "Take the machine out of service.", operator="admin"),
    _t("resume", {State.MAINTENANCE}, State.READY, "Bring the machine back into service.",
       operator="admin"),
    _t("rediscover", {State.READY, State.FAILED, State.MAINTENANCE}, State.DISCOVERED,
       "The machine booted into discovery again and re-reported its hardware."),
)}


# The actions an operator takes (the others are the workflow engine's and the agent's), and
# the least role each needs; the action route, the role check and the panel all read these.
OPERATOR_ACTIONS: tuple[str, ...] = tuple(t.name for t in TRANSITIONS.values() if t.operator)
ACTION_ACCESS: dict[str, str] = {t.name: t.operator for t in TRANSITIONS.values() if t.operator}
DESTRUCTIVE_ACTIONS = frozenset(t.name for t in TRANSITIONS.values() if t.destructive)
# States whose machines boot their own disk: their iPXE script boots it, and no agent runs.
LOCALBOOT_IN = (State.DEPLOYING, State.INSTALLED)


def allowed_transitions(state: State) -> list[str]:
    return [t.name for t in TRANSITIONS.values() if state in t.sources]


def check_transition(state: State, name: str) -> Transition:
    """Return the transition ``name`` from ``state`` or raise a clear error."""
    transition = TRANSITIONS.get(name)
    if transition is None:
        raise InvalidInput(f"unknown action {name!r}", {"known": sorted(TRANSITIONS)})
    if state not in transition.sources:
        allowed = ", ".join(sorted(s.value for s in transition.sources))
        raise Conflict(f"cannot {name} a machine that is {state.value}; allowed from: {allowed}",
                       {"state": state.value, "allowed": allowed_transitions(state)})
    return transition


def lifecycle_markdown() -> str:
    """The transition table as Markdown, for the built-in docs (never written by hand)."""
    rows = ["| action | from | to | destructive |", "|---|---|---|---|"]
    for t in TRANSITIONS.values():
        src = ", ".join(sorted(s.value for s in t.sources))
        rows.append(f"| `{t.name}` | {src} | {t.target.value} | {'yes' if t.destructive else ''} |")
    return "\n".join(rows)


# --- tags -----------------------------------------------------------------------------------

TAG_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_tag(value: object) -> str:
    """Return the normalised tag or raise InvalidInput saying exactly what is wrong."""
    if not isinstance(value, str):
        raise InvalidInput("a tag must be a string", {"tag": value})
    tag = value.strip()
    if not tag:
        raise InvalidInput("a tag cannot be empty")
    if len(tag) > TAG_MAX:
        raise InvalidInput(f"a tag is at most {TAG_MAX} characters", {"length": len(tag)})
    if _CONTROL.search(tag):
        raise InvalidInput("a tag cannot contain control characters", {"tag": tag})
    if "," in tag:
        raise InvalidInput("a tag cannot contain a comma", {"tag": tag})
    return tag


def validate_tags(values: object, limit: int = 64) -> list[str]:
    if not isinstance(values, list):
        raise InvalidInput("tags must be a list of strings")
    if len(values) > limit:
        raise InvalidInput(f"at most {limit} tags per machine")
    out: list[str] = []
    for value in values:
        tag = validate_tag(value)
        if tag not in out:
            out.append(tag)
    return out


# --- machines -------------------------------------------------------------------------------

def new_id() -> str:
    return uuid.uuid4().hex[:12]


def normalise_mac(value: str) -> str:
    hexdigits = re.sub(r"[^0-9a-fA-F]", "", value)
    if len(hexdigits) != 12:
        raise InvalidInput(f"not a MAC address: {value!r}")
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2)).lower()


@dataclass
class Machine:
    id: str
    name: str
    state: State
    mac: str
    macs: list[str] = field(default_factory=list)
    ip: str | None = None
    vendor: str = ""
    product: str = ""
    serial: str = ""
    smbios_uuid: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)
    memory_bytes: int = 0
    disks: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)
    bmc: dict[str, Any] | None = None
    virtualization: str = ""
    tags: list[str] = field(default_factory=list)
    role: str = ""
    # Where the name, tags and role came from when DNS or a hostname rule gave them, and the
    # last look-up (dragonfly.dnsid): shown on the machine page.
    identity: dict[str, Any] = field(default_factory=dict)
    os: str = ""
    power: str = "unknown"
    state_reason: str = ""
    workflow_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    last_seen: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its generic deep copy cost ~1 ms for a machine with a full
        # inventory, several times per check-in. The fields are JSON values already.
        data = {name: _copy_json(getattr(self, name)) for name in _MACHINE_FIELD_NAMES}
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Machine:
        known = {k: v for k, v in data.items() if k in _MACHINE_FIELDS}
        known["state"] = State(known["state"])
        return cls(**known)

    def search_text(self) -> str:
        """What the search box matches: name, tags, MACs, IP, serial, vendor and model."""
        parts = [self.name, self.mac, *self.macs, self.ip or "", self.serial, self.vendor,
                 self.product, self.role, self.os, *self.tags]
        return " ".join(parts).lower()


_MACHINE_FIELD_NAMES = tuple(Machine.__dataclass_fields__)
_MACHINE_FIELDS = set(_MACHINE_FIELD_NAMES)


def _copy_json(value: Any) -> Any:
    """A copy of a JSON-shaped value (dicts, lists, scalars) that shares nothing mutable."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


class WorkflowState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class Workflow:
    id: str
    machine_id: str
    template: str
    engine: str = "native"  # "native" or "tinkerbell"
    machine_name: str = ""  # denormalised for dashboards and event streams
    state: WorkflowState = WorkflowState.PENDING
    stage: str = ""
    progress: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    eta_seconds: float | None = None
    eta_basis: str = ""  # what the estimate rests on, in words (the deployment timer's)
    error: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    actor: str = ""
    # Native deployments (the workflow engine): what the operator asked for (hostname, SSH
    # keys, user-data, disk, network), the image as the store serves it, when the image was
    # written (from then on the machine's iPXE script boots its disk), when the agent
    # rebooted into the OS, and what the OS reported when it phoned home.
    options: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)
    written_at: float | None = None
    rebooted_at: float | None = None
    installed: dict[str, Any] = field(default_factory=dict)
    failed_action: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workflow:
        known = {k: v for k, v in data.items() if k in _WORKFLOW_FIELDS}
        known["state"] = WorkflowState(known["state"])
        return cls(**known)

    @property
    def active(self) -> bool:
        return self.state in (WorkflowState.PENDING, WorkflowState.RUNNING)

    def action(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.actions if a.get("name") == name), None)

    def mark_failed(self, step: str, label: str, reason: str, now: float) -> None:
        """Failed at ``step`` (shown as ``label``) for ``reason``: that action and any still
        running end failed, and the reason is the workflow's error. Every engine fails alike."""
        for action in self.actions:
            if action["name"] == step or action["state"] == "running":
                action.update(state="failed", finished_at=action.get("finished_at") or now)
                if action["name"] == step:
                    action["message"] = reason
        self.state, self.finished_at, self.eta_seconds = WorkflowState.FAILED, now, None
        self.error, self.failed_action, self.stage = f"{label}: {reason}", step, label


_WORKFLOW_FIELDS = set(Workflow.__dataclass_fields__)


@dataclass
class HistoryEvent:
    """One line of a machine's history: state changes, tag edits, boot steps, workflow stages."""

    id: str
    machine_id: str
    at: float
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def boots_own_disk(machine: Machine, workflow: Workflow | None) -> bool:
    """Whether the machine's next network boot should leave for its own disk.

    Installed machines do. A deploying machine does once its image is written, never before:
    until then it must come back to discovery, where the agent writes the image; afterwards a
    machine whose firmware boots the network first must not re-enter the installer. Workflows
    of other engines (the demo's, Tinkerbell's) boot their own way: the disk, as before."""
    if machine.state is State.INSTALLED:
        return True
    if machine.state is not State.DEPLOYING:
        return False
    if workflow is None or not workflow.active or workflow.action("prepare-image") is None:
        return True  # not the agent's deployment (the demo's, Tinkerbell's): the disk
    return workflow.written_at is not None
