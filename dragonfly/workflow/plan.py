"""A native deployment as data: its ordered actions, who executes each, and the flat
parameters the agent gets for the next one (docs/deployment-protocol.md).

The engine persists the list in the workflow document; the agent executes the agent's actions
one at a time; the server runs ``prepare-image`` before and waits for ``first-boot`` after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dragonfly.domain.model import Workflow

SERVER, AGENT = "server", "agent"


@dataclass(frozen=True)
class Step:
    name: str
    runner: str  # SERVER or AGENT
    label: str
    share: float  # of the whole deployment's time, for one progress figure


# The order is the protocol's. Shares are rough defaults until the timer learns real ones.
STEPS: tuple[Step, ...] = (
    Step("prepare-image", SERVER, "Fetch and verify the image", 0.10),
    Step("select-disk", AGENT, "Choose the target disk", 0.01),
    Step("wipe", AGENT, "Wipe old signatures", 0.01),
    Step("stream-image", AGENT, "Stream the image to disk", 0.45),
    Step("verify", AGENT, "Verify what was written", 0.15),
    Step("fix-gpt", AGENT, "Fix the GPT and grow the root partition", 0.01),
    Step("write-seed", AGENT, "Write the cloud-init seed", 0.01),
    Step("boot-entry", AGENT, "UEFI boot entry", 0.01),
    Step("reboot", AGENT, "Reboot into the OS", 0.02),
    Step("first-boot", SERVER, "First boot: wait for the OS to phone home", 0.23),
)
STEP_BY_NAME = {s.name: s for s in STEPS}
STREAMING = "stream-image"
ACTION_STATES = ("pending", "running", "succeeded", "failed")


def new_actions() -> list[dict[str, Any]]:
    return [{"name": s.name, "label": s.label, "runner": s.runner, "share": s.share,
             "state": "pending", "progress": 0.0, "started_at": None, "finished_at": None,
             "message": "", "bytes_done": 0, "bytes_total": 0, "rate": 0.0, "result": {},
             "log": ""}
            for s in STEPS]


def next_action(workflow: Workflow) -> tuple[int, dict[str, Any]] | None:
    """The first action not yet succeeded, with its index; None when all are done."""
    for index, action in enumerate(workflow.actions):
        if action.get("state") != "succeeded":
            return index, action
    return None


def result_of(workflow: Workflow, name: str, key: str, default: Any = "") -> Any:
    action = workflow.action(name)
    return default if action is None else action.get("result", {}).get(key, default)


def agent_params(workflow: Workflow, name: str, *, base: str, root: dict[str, str],
                 uefi_loader: str, min_disk_bytes: int = 0, kernel_args: str = ""
                 ) -> dict[str, Any]:
    """The flat parameters of agent action ``name`` (protocol table)."""
    image = workflow.image
    disk = str(result_of(workflow, "select-disk", "disk"))
    locate = {"root_label": root.get("label", ""), "root_parttype": root.get("parttype", ""),
              "root_fstype": root.get("fstype", "")}
    if name == "select-disk":
        return {"disk": str(workflow.options.get("disk", "")),
                "min_bytes": max(int(image.get("raw_size", 0)), min_disk_bytes)}
    if name == "wipe":
        return {"disk": disk}
    if name == STREAMING:
        return {"disk": disk, "url": f"{base}/images/{image['digest']}",
                "format": image.get("format", "raw"), "size": int(image.get("size", 0)),
                "raw_size": int(image.get("raw_size", 0))}
    if name == "verify":
        return {"disk": disk, "raw_size": int(image.get("raw_size", 0)),
                "sha256": str(image.get("raw_sha256", ""))}
    if name == "fix-gpt":
        return {"disk": disk, **locate}
    if name == "write-seed":
        return {"disk": disk, **locate,
                "seed_url": f"{base}/api/agent/workflows/{workflow.id}/seed",
                "kernel_args": kernel_args}
    if name == "boot-entry":
        return {"disk": disk, "uefi": True, "loader": uefi_loader}
    return {}


def overall_progress(workflow: Workflow) -> float:
    """0-100 over the whole deployment, each action weighted by its share."""
    total = sum(float(a.get("share", 0)) for a in workflow.actions) or 1.0
    done = 0.0
    for action in workflow.actions:
        share = float(action.get("share", 0))
        if action.get("state") == "succeeded":
            done += share
        elif action.get("state") == "running":
            done += share * min(1.0, float(action.get("progress", 0)) / 100)
    return round(100 * done / total, 1)
