"""A Tinkerbell ``Workflow``'s status as Dragonfly's stages, progress and events.

Tinkerbell reports ``status.state`` for the whole workflow and a state per action
(``status.tasks[].actions[]``); Dragonfly's workflow document carries the same action names
(see ``translate.STEPS``), so each maps onto its own action, and a failed or timed-out action's
``message`` becomes the deployment's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dragonfly.domain.model import Workflow

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
_ACTION_STATE = {"STATE_PENDING": "pending", "STATE_RUNNING": "running",
                 "STATE_SUCCESS": "succeeded", "STATE_FAILED": "failed",
                 "STATE_TIMEOUT": "failed"}
_DONE = {"STATE_SUCCESS": SUCCEEDED, "STATE_FAILED": FAILED, "STATE_TIMEOUT": FAILED}


@dataclass(frozen=True)
class Outcome:
    result: str  # RUNNING, SUCCEEDED or FAILED
    action: str = ""  # the failing action
    reason: str = ""
    changed: bool = False


def _time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def apply_status(wf: Workflow, obj: dict[str, Any], now: float) -> Outcome:
    """Copy ``obj``'s status onto ``wf``'s actions, stage and progress (in place)."""
    status = obj.get("status") or {}
    before = [dict(a) for a in wf.actions], wf.stage, wf.progress
    reported: dict[str, dict[str, Any]] = {}
    for task in status.get("tasks") or []:
        for action in task.get("actions") or []:
            reported[str(action.get("name", ""))] = action
    failing: tuple[str, str] | None = None
    for action in wf.actions:
        seen = reported.get(action["name"])
        if seen is None:
            continue
        state = _ACTION_STATE.get(str(seen.get("state", "")), action["state"])
        started = _time(seen.get("executionStart"))
        stopped = _time(seen.get("executionStop"))
        action["state"] = state
        if state in ("running", "succeeded", "failed"):
            action["started_at"] = action.get("started_at") or started or now
        if state in ("succeeded", "failed"):
            action["finished_at"] = action.get("finished_at") or stopped or now
        if state == "succeeded":
            action["progress"] = 100.0
        if seen.get("message"):
            action["message"] = str(seen["message"])[:2000]
        if seen.get("image"):
            action["image"] = str(seen["image"])
        if state == "failed" and failing is None:
            timeout = seen.get("state") == "STATE_TIMEOUT"
            reason = str(seen.get("message") or "") or (
                f"timed out after {seen.get('timeout')} s" if timeout else "failed")
            failing = (action["name"], reason)
    running = next((a for a in wf.actions if a["state"] == "running"), None)
    current = (status.get("currentState") or {}).get("actionName")
    if running is not None:
        wf.stage = str(running.get("label") or running["name"])
    elif current:
        wf.stage = f"Tinkerbell: {current}"
    total = sum(float(a.get("share", 0)) for a in wf.actions) or 1.0
    done = sum(float(a.get("share", 0)) * (1.0 if a["state"] == "succeeded"
                                           else 0.5 if a["state"] == "running" else 0.0)
               for a in wf.actions)
    wf.progress = round(100 * done / total, 1)
    changed = ([dict(a) for a in wf.actions], wf.stage, wf.progress) != before
    overall = _DONE.get(str(status.get("state", "")))
    if overall == FAILED or failing is not None:
        name, reason = failing or (str(current or wf.actions[-1]["name"]),
                                   f"Tinkerbell reports {status.get('state')}")
        return Outcome(FAILED, name, reason, changed)
    if overall == SUCCEEDED:
        return Outcome(SUCCEEDED, changed=changed)
    return Outcome(RUNNING, changed=changed)
