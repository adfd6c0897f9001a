"""The native deployment engine: starts deployments, hands the agent its next action, takes
its reports, and marks the machine Installed only when the installed OS phones home.

Everything a deployment is lives in its workflow document (the store), so a server restart or
kill -9 loses nothing: on start the engine picks up every active workflow, resumes preparing
images that were not ready, and the agent's next request or report is tracked as before.

The protocol is docs/deployment-protocol.md. The template catalog and the image store are
reached through ``DeploySources`` so the engine stays a state machine over documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState
from dragonfly.errors import Conflict, DragonflyError, InvalidInput, NotFound
from dragonfly.keyed_tasks import start_once
from dragonfly.store import Store
from dragonfly.templates.seed import parse_deploy_options
from dragonfly.workflow import plan
from dragonfly.workflow.plan import AGENT, SERVER, STREAMING

log = logging.getLogger(__name__)

KEY_KIND, KEY_NAME = "engine", "phone-home-key"
SEED_FILES = ("meta-data", "user-data", "network-config")
AGENT_SILENCE_SECONDS = 600.0  # a running agent action with no report for this long fails
LOG_LIMIT = 16 * 1024
_DISK = re.compile(r"^(/dev/[A-Za-z0-9/_-]+|serial:[\x21-\x7e]+|wwn:[\x21-\x7e]+)$")


@dataclass(frozen=True)
class DeployTemplate:
    """What the engine needs of an OS template."""

    slug: str
    name: str
    root: dict[str, str] = field(default_factory=dict)  # label, parttype, fstype
    uefi_loader: str = ""
    phone_home_timeout: float = 1800.0
    min_disk_bytes: int = 0  # the smallest disk the template asks for (0: the image's size)
    kernel_args: str = ""  # appended to the installed boot loader's kernel command line


@dataclass(frozen=True)
class PreparedImage:
    """An image the store serves at /images/<digest>: as served, and as written to disk."""

    digest: str
    format: str
    size: int
    raw_size: int
    raw_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "format": self.format, "size": self.size,
                "raw_size": self.raw_size, "raw_sha256": self.raw_sha256}


class DeploySources(Protocol):
    """The template catalog and the image store, as the engine uses them."""

    async def template(self, slug: str) -> DeployTemplate:
        """Raise InvalidInput for an unknown slug."""
        ...

    async def prepare_image(self, slug: str) -> PreparedImage:
        """Download (or find) and verify the template's image; raise DragonflyError with a
        readable reason when that fails."""
        ...

    async def render_seed(self, slug: str, machine: Machine, options: dict[str, Any],
                          instance_id: str, phone_home_url: str) -> dict[str, str]:
        """The NoCloud seed: meta-data, user-data, network-config."""
        ...


def validate_options(raw: object, machine: Machine) -> dict[str, Any]:
    """The operator's deploy options, checked, as the workflow stores them: the seed's share
    (hostname, ssh_keys, user_data, network: ``templates.seed``) and the target disk."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("deploy options must be a JSON object")
    if "method" in raw:  # the panel names the method; this engine is the image's
        if raw["method"] != "image":
            raise InvalidInput("this engine installs images (method image); the "
                               "distribution installer is Simple mode's")
        raw = {k: v for k, v in raw.items() if k != "method"}
    seed = parse_deploy_options(raw, others=("disk",))
    disk = raw.get("disk", "")
    if not isinstance(disk, str) or (disk and not _DISK.match(disk)):
        raise InvalidInput("disk must be empty (choose), a /dev path, serial:SERIAL or "
                           "wwn:WWN")
    options: dict[str, Any] = {"hostname": seed.hostname, "ssh_keys": list(seed.ssh_keys),
                               "disk": disk}
    if seed.user_data is not None:
        options["user_data"] = seed.user_data
    if raw.get("network"):
        options["network"] = raw["network"]
    return options


class DeploymentEngine:
    """The ``WorkflowRunner`` of the installed server (and a ``Service``)."""

    name = "deployments"

    def __init__(self, fleet: Fleet, store: Store, sources: DeploySources, *,
                 clock: Callable[[], float] = time.time, tick: float = 5.0,
                 agent_silence: float = AGENT_SILENCE_SECONDS) -> None:
        self.fleet = fleet
        self.store = store
        self.sources = sources
        self.clock = clock
        self.tick = tick
        self.agent_silence = agent_silence
        self._key = b""
        self._locks: dict[str, asyncio.Lock] = {}
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # --- service --------------------------------------------------------------------------

    async def start(self) -> None:
        doc = await self.store.get(KEY_KIND, KEY_NAME)
        if doc is None or not doc.data.get("key"):
            key = secrets.token_hex(32)
            await self.store.put(KEY_KIND, KEY_NAME, {"key": key})
        else:
            key = str(doc.data["key"])
        self._key = bytes.fromhex(key)
        for wf in self._mine():
            prepare = wf.action("prepare-image")
            if prepare is not None and prepare.get("state") != "succeeded":
                self._prepare(wf.id)  # interrupted by a restart: fetch and verify again
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(),
                                                                 name="deployment-watchdog")

    async def stop(self) -> None:
        tasks = [*self._preparing.values(), *([self._watchdog] if self._watchdog else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._preparing.clear()
        self._watchdog = None

    def _mine(self) -> list[Workflow]:
        """Active workflows this engine runs (the ones with its action list)."""
        return [wf for wf in self.fleet.active_workflows()
                if wf.engine == "native" and wf.action("prepare-image") is not None]

    def _lock(self, workflow_id: str) -> asyncio.Lock:
        return self._locks.setdefault(workflow_id, asyncio.Lock())

    async def _load(self, workflow_id: str) -> Workflow:
        # A private copy: the fleet's mirror changes only through the store's change feed.
        return Workflow.from_dict((await self.fleet.get_workflow(workflow_id)).to_dict())

    # --- starting -------------------------------------------------------------------------

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None) -> Workflow:
        tpl = await self.sources.template(template)
        checked = validate_options(options, machine)
        now = self.clock()
        workflow = Workflow(id=self.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                            template=tpl.slug, engine="native", state=WorkflowState.RUNNING,
                            stage=plan.STEPS[0].label, created_at=now, started_at=now,
                            actions=plan.new_actions(), options=checked, actor=actor)
        workflow.actions[0].update(state="running", started_at=now)
        await self.fleet.start_workflow(machine.id, action, workflow, actor)
        self._prepare(workflow.id)
        return workflow

    def _prepare(self, workflow_id: str) -> None:
        start_once(self._preparing, workflow_id, lambda: self._prepare_image(workflow_id),
                   f"prepare-image-{workflow_id}")

    async def _prepare_image(self, workflow_id: str) -> None:
        wf = await self._load(workflow_id)
        try:
            image = await self.sources.prepare_image(wf.template)
        except DragonflyError as exc:
            await self.fail(workflow_id, "prepare-image", exc.message)
            return
        except Exception as exc:  # a bug or an I/O error: still a reason, never a hang
            log.exception("preparing the image of %s failed", workflow_id)
            await self.fail(workflow_id, "prepare-image", f"{type(exc).__name__}: {exc}")
            return
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return
            now = self.clock()
            wf.image = image.to_dict()
            action = wf.actions[0]
            action.update(state="succeeded", finished_at=now, progress=100.0,
                          result=image.to_dict(),
                          message=f"image {image.digest[:12]} ready ({image.format}, "
                                  f"{image.raw_size} bytes on disk)")
            wf.stage = "Waiting for the discovery agent"
            wf.progress = plan.overall_progress(wf)
            wf.bytes_total = image.raw_size
            await self.fleet.save_workflow(wf)

    # --- the agent's side -----------------------------------------------------------------

    async def next_for_agent(self, workflow_id: str, base: str) -> dict[str, Any]:
        """The agent's next action as a flat object (protocol §2)."""
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return {"workflow_id": wf.id, "name": "done", "abort": True,
                        "reason": wf.error or f"the deployment is {wf.state.value}"}
            found = plan.next_action(wf)
            if found is None or found[1]["runner"] == SERVER and found[0] > 0:
                return {"workflow_id": wf.id, "name": "done"}
            index, action = found
            if action["runner"] == SERVER:  # the image is not ready yet
                return {"workflow_id": wf.id, "name": "wait", "poll_seconds": 5}
            tpl = await self.sources.template(wf.template)
            params = plan.agent_params(wf, action["name"], base=base, root=tpl.root,
                                       uefi_loader=tpl.uefi_loader,
                                       min_disk_bytes=tpl.min_disk_bytes,
                                       kernel_args=tpl.kernel_args)
            if action["state"] == "pending":
                action.update(state="running", started_at=self.clock())
                wf.stage = action["label"]
                await self.fleet.save_workflow(wf)
            return {"workflow_id": wf.id, "index": index, "name": action["name"], **params,
                    "poll_seconds": 2}

    async def report(self, workflow_id: str, index: int, body: dict[str, Any]
                     ) -> dict[str, Any]:
        state = body.get("state")
        if state not in ("running", "succeeded", "failed"):
            raise InvalidInput("state must be running, succeeded or failed")
        message = str(body.get("message", ""))[:2000]
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return {"ok": False, "abort": True,
                        "reason": wf.error or f"the deployment is {wf.state.value}"}
            if not 0 <= index < len(wf.actions) or wf.actions[index]["runner"] != AGENT:
                raise InvalidInput(f"no agent action {index} in workflow {workflow_id}")
            action = wf.actions[index]
            now = self.clock()
            action["started_at"] = action.get("started_at") or now
            action["last_report"] = now
            if "log" in body:
                action["log"] = str(body["log"])[-LOG_LIMIT:]
            if message:
                action["message"] = message
            self._progress(wf, action, body)
            failed = state == "failed"
            if not failed:
                action["state"] = state
                if state == "succeeded":
                    action.update(finished_at=now, progress=100.0,
                                  result={k: v for k, v in body.items()
                                          if k not in ("state", "message", "log")})
                    if action["name"] == STREAMING:
                        wf.written_at = now  # from now on the machine boots its own disk
                    if action["name"] == "reboot":
                        wf.rebooted_at = now
                        first_boot = wf.action("first-boot")
                        if first_boot is not None:
                            first_boot.update(state="running", started_at=now)
                        wf.stage = plan.STEP_BY_NAME["first-boot"].label
                wf.progress = plan.overall_progress(wf)
            await self.fleet.save_workflow(wf)  # a failure's log and message too
        if failed:
            await self.fail(workflow_id, action["name"], message or "failed without a reason")
        return {"ok": True}

    def _progress(self, wf: Workflow, action: dict[str, Any], body: dict[str, Any]) -> None:
        done = _int(body.get("bytes_done"))
        total = _int(body.get("bytes_total")) or int(action.get("bytes_total") or 0)
        rate = _float(body.get("rate"))
        if done is not None:
            action["bytes_done"] = done
        if total:
            action["bytes_total"] = total
        if rate is not None:
            action["rate"] = rate
        if done is not None and total:
            action["progress"] = round(min(100.0, 100.0 * done / total), 1)
        if action["name"] == STREAMING and done is not None:
            wf.bytes_done = done
            wf.bytes_total = total or wf.bytes_total
            wf.eta_seconds = (round((total - done) / rate, 1) if rate and total >= done
                              else None)

    async def seed_file(self, workflow_id: str, name: str, base: str) -> str:
        if name not in SEED_FILES:
            raise NotFound(f"no seed file {name!r}: there are {', '.join(SEED_FILES)}")
        wf = await self._load(workflow_id)
        if not wf.active:
            raise Conflict(f"the deployment is {wf.state.value}")
        machine = self.fleet.get_machine(wf.machine_id)
        files = await self.sources.render_seed(wf.template, machine, wf.options, wf.id,
                                               self.phone_home_url(base, wf.id))
        return files[name]

    # --- phone home -------------------------------------------------------------------------

    def _token(self, workflow_id: str) -> str:
        return hmac.new(self._key, workflow_id.encode(), hashlib.sha256).hexdigest()[:32]

    def phone_home_url(self, base: str, workflow_id: str) -> str:
        """The one-time URL the installed OS posts to (only the seed carries it)."""
        return f"{base}/api/phone-home/{workflow_id}/{self._token(workflow_id)}"

    async def phone_home(self, workflow_id: str, token: str, form: dict[str, str]
                         ) -> dict[str, Any]:
        if not hmac.compare_digest(token, self._token(workflow_id)):
            raise NotFound("no deployment has this phone-home address")
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active or wf.installed:
                raise Conflict("this deployment already ended: its phone-home address was "
                               "used once and is closed")
            now = self.clock()
            keys = {k: form[k].strip() for k in ("pub_key_rsa", "pub_key_ecdsa",
                                                 "pub_key_ed25519") if form.get(k)}
            wf.installed = {"at": now, "hostname": form.get("hostname", "")[:255],
                            "fqdn": form.get("fqdn", "")[:255],
                            "instance_id": form.get("instance_id", "")[:255],
                            "host_keys": keys}
            for action in wf.actions:  # an OS that phones home has done all that came before
                if action["state"] != "succeeded":
                    action.update(state="succeeded", finished_at=now, progress=100.0)
            if wf.written_at is None:
                wf.written_at = now
            wf.state, wf.finished_at, wf.progress = WorkflowState.SUCCEEDED, now, 100.0
            wf.stage, wf.eta_seconds = "Installed", 0.0
            await self.fleet.save_workflow(wf)
            machine = self.fleet.get_machine(wf.machine_id)
            if machine.state is State.DEPLOYING and machine.workflow_id == wf.id:
                await self.fleet.transition(machine.id, "deployed",
                                            f"{wf.installed['hostname'] or machine.name} "
                                            "phoned home", actor="engine", os=wf.template)
        return {"ok": True}

    # --- failing, aborting, the watchdog ------------------------------------------------------

    async def fail(self, workflow_id: str, action_name: str, reason: str,
                   actor: str = "engine") -> Workflow:
        """End the deployment as Failed at ``action_name`` with ``reason``; the machine goes to
        Failed with the same sentence."""
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return wf
            label = plan.STEP_BY_NAME[action_name].label if action_name in plan.STEP_BY_NAME \
                else action_name
            wf.mark_failed(action_name, label, reason, self.clock())
            await self.fleet.save_workflow(wf)
            machine = self.fleet.get_machine(wf.machine_id)
            if machine.state is State.DEPLOYING and machine.workflow_id == wf.id:
                await self.fleet.transition(machine.id, "fail", wf.error, actor=actor)
        task = self._preparing.get(workflow_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        return wf

    async def abort(self, workflow_id: str, actor: str) -> Workflow:
        wf = await self._load(workflow_id)
        if not wf.active:
            raise Conflict(f"the deployment already ended ({wf.state.value})")
        found = plan.next_action(wf)
        at = found[1]["name"] if found is not None else "first-boot"
        return await self.fail(workflow_id, at, f"aborted by {actor}", actor=actor)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.check_deadlines()
            except Exception:
                log.exception("checking deployment deadlines failed")

    async def check_deadlines(self) -> None:
        """Fail deployments whose OS never phoned home, or whose agent went silent."""
        now = self.clock()
        for wf in self._mine():
            if wf.rebooted_at is not None and not wf.installed:
                tpl = await self.sources.template(wf.template)
                if now - wf.rebooted_at > tpl.phone_home_timeout:
                    minutes = round(tpl.phone_home_timeout / 60)
                    await self.fail(wf.id, "first-boot", f"the installed OS did not phone home "
                                    f"within {minutes} min of the reboot")
                continue
            for action in wf.actions:
                if action["runner"] == AGENT and action["state"] == "running":
                    last = action.get("last_report") or action.get("started_at") or now
                    if now - float(last) > self.agent_silence:
                        await self.fail(wf.id, action["name"], "the agent stopped reporting "
                                        f"for {round((now - float(last)) / 60)} min")
                    break


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)
