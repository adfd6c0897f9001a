"""Tinkerbell mode's ``WorkflowRunner``: deployments run as Tinkerbell Workflows on k3s.

Dragonfly's records stay the source of truth. Starting a deployment stores the workflow
document (as the native engine does), prepares the image in Dragonfly's image store, then
applies the machine's ``Hardware``, the OS template's ``Template`` and the deployment's
``Workflow``, each checked against Tinkerbell's CRD schemas before it is sent. A watch on
Workflows (never polling) carries every status change back into the document: stages,
progress, the failing action's message; success switches the Hardware's ``allowPXE`` off
(the machine must not loop into the installer) and the machine becomes Installed. Aborting
deletes the Workflow.

On start, and whenever the connection comes back, it reconciles: objects carry an owner label
with this installation's id; what is missing is created, what it owns and no longer has is
deleted, objects without its label are left alone. Failures (unreachable API, expired token,
missing Role or CRDs) become the readable ``cluster`` state the Tinkerbell page and `dragonfly
status` show; the supervisor retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dragonfly.domain.fleet import MACHINE, Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState
from dragonfly.errors import Conflict, DragonflyError, InvalidInput, NotFound
from dragonfly.keyed_tasks import start_once
from dragonfly.store import Store
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.tinkerbell import rootpart, schema, translate
from dragonfly.tinkerbell.kube import GONE, OK, UNAUTHORIZED, ClusterError, Kube
from dragonfly.tinkerbell.status import FAILED, SUCCEEDED, apply_status
from dragonfly.workflow.engine import SEED_FILES, DeploySources, PreparedImage, validate_options

log = logging.getLogger(__name__)

KIND, INSTANCE = "tinkerbell", "instance"  # the owner id and the seed key (never streamed)
# The cluster state: streamed to the panel (/api/events) and read by `dragonfly status`.
CLUSTER_KIND, CLUSTER = "tinkerbell_cluster", "state"
PREPARE = ("prepare-image", "Fetch and verify the image", 0.10)
SUBMIT = ("submit", "Send Hardware, Template and Workflow to Tinkerbell", 0.02)

ROOT_KIND = "tinkerbell_root"  # per image digest: its root partition, found in its GPT
# A stand-in partition GUID for checking a template before its image is stored.
PLACEHOLDER_PARTUUID = "00000000-0000-4000-8000-000000000000"

Connect = Callable[[Path, str], Awaitable[Kube]]
# Where the image store keeps an image (None: not there).
ImagePath = Callable[[str], Awaitable[Path | None]]
# The image the store already holds for a template (None: not fetched yet).
Prepared = Callable[[str], Awaitable[PreparedImage | None]]


@dataclass
class ClusterState:
    state: str = "connecting"
    message: str = "connecting to the cluster"
    since: float = field(default_factory=time.time)
    synced_at: float | None = None
    server: str = ""
    namespace: str = ""
    owned: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_actions() -> list[dict[str, Any]]:
    first = [{"name": n, "label": label, "runner": "server", "share": share,
              "state": "pending", "progress": 0.0, "started_at": None, "finished_at": None,
              "message": "", "image": ""} for n, label, share in (PREPARE, SUBMIT)]
    return first + translate.new_actions()


class TinkerbellBackend:
    """The ``WorkflowRunner`` (and ``Service``) of Tinkerbell mode."""

    name = "tinkerbell"

    def __init__(self, fleet: Fleet, store: Store, templates: TemplateCatalog,
                 sources: DeploySources, *, kubeconfig: Path, namespace: str,
                 base_url: Callable[[], str], connect: Connect | None = None,
                 clock: Callable[[], float] = time.time, retry: float = 5.0,
                 retry_max: float = 60.0, watch_timeout: int = 300,
                 prepared: Prepared | None = None, image_path: ImagePath | None = None
                 ) -> None:
        self.fleet = fleet
        self.store = store
        self.templates = templates
        self.sources = sources
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.base_url = base_url
        self.connect: Connect = connect or (lambda path, ns: Kube.connect(path, ns))
        self.clock = clock
        self.retry, self.retry_max = retry, retry_max
        self.watch_timeout = watch_timeout  # the API server closes each watch after this
        self.prepared = prepared
        self.image_path = image_path
        self._roots: dict[str, rootpart.RootPartition] = {}
        self._stored: dict[str, Any] = {}
        self.owner = ""
        self._key = b""
        self.kube: Kube | None = None
        self.cluster = ClusterState(namespace=namespace)
        self.synced = asyncio.Event()  # set after each reconcile attempt
        self.connected = asyncio.Event()  # set while the cluster state is ok
        self.connect_wait = 30.0  # how long a deployment waits for a first reconcile
        self._supervisor: asyncio.Task[None] | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._mirrored: dict[str, str] = {}  # Hardware name -> the spec last sent (as JSON)
        self._owned: dict[str, set[str]] = {}  # kind -> names of the objects it owns
        self._submits: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- service ----------------------------------------------------------------------------

    async def start(self) -> None:
        doc = await self.store.get(KIND, INSTANCE)
        if doc is None or not doc.data.get("owner"):
            data = {"owner": secrets.token_hex(6), "key": secrets.token_hex(32)}
            await self.store.put(KIND, INSTANCE, data)
        else:
            data = dict(doc.data)
        self.owner, self._key = str(data["owner"]), bytes.fromhex(str(data["key"]))
        loop = asyncio.get_running_loop()
        self._supervisor = loop.create_task(self._supervise(), name="tinkerbell-supervisor")
        self._mirror_task = loop.create_task(self._mirror(), name="tinkerbell-hardware-mirror")

    async def stop(self) -> None:
        tasks = [*self._submits.values(),
                 *[t for t in (self._supervisor, self._mirror_task) if t is not None]]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._submits.clear()
        self._supervisor = self._mirror_task = None
        if self.kube is not None:
            await self.kube.close()
            self.kube = None

    async def _set_cluster(self, state: str, message: str) -> None:
        if state == OK:
            self.connected.set()
        else:
            self.connected.clear()
        if (state, message) != (self.cluster.state, self.cluster.message):
            self.cluster.state, self.cluster.message = state, message
            self.cluster.since = self.clock()
            if state != OK:
                log.warning("Tinkerbell cluster: %s", message)
        # `dragonfly status` reads this document (it cannot ask the running server's memory);
        # written when it changes, not at every retry.
        data = self.cluster.to_dict()
        if data != self._stored:
            await self.store.put(CLUSTER_KIND, CLUSTER, data)
            self._stored = data

    async def _supervise(self) -> None:
        delay = self.retry
        while True:
            try:
                if self.kube is None:
                    self.kube = await self.connect(self.kubeconfig, self.namespace)
                    self.cluster.server = self.kube.server
                await self.reconcile()
                delay = self.retry
                await self._follow()
            except ClusterError as exc:
                await self._set_cluster(exc.state, exc.message)
                self.synced.set()  # whoever waits learns the state, whatever it is
                if exc.state == UNAUTHORIZED and self.kube is not None:
                    # Re-read the kubeconfig next time: re-running install writes a new token.
                    await self.kube.close()
                    self.kube = None
            except Exception as exc:  # a bug: still a readable state, never a dead loop
                log.exception("the Tinkerbell supervisor failed")
                await self._set_cluster("error", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    # --- reconciliation ---------------------------------------------------------------------

    def _kube(self) -> Kube:
        if self.kube is None:
            raise ClusterError(self.cluster.state, self.cluster.message)
        return self.kube

    async def reconcile(self) -> None:
        """Make the cluster hold what Dragonfly's records say, for objects Dragonfly owns."""
        kube = self._kube()
        hardware, _ = await kube.list("Hardware", self.owner)
        templates, _ = await kube.list("Template", self.owner)
        flows, _ = await kube.list("Workflow", self.owner)
        self._owned.update({kind: {obj["metadata"]["name"] for obj in objs} for kind, objs in (
            ("Hardware", hardware), ("Template", templates), ("Workflow", flows))})
        machines = {translate.hardware_name(m.id): m for m in self._machines()}
        active = {translate.workflow_name(wf.id): wf for wf in self._mine()}
        for obj in hardware:
            if obj["metadata"]["name"] not in machines:
                await self._delete("Hardware", obj["metadata"]["name"])
        have = {obj["metadata"]["name"]: obj for obj in hardware}
        self._mirrored = {name: _spec_key(obj) for name, obj in have.items()}
        for machine in machines.values():
            await self.mirror(machine)
        catalog = await self.templates.list()
        slugs = {translate.k8s_name(t.slug)[:63] for t in catalog}
        for obj in templates:
            label = obj["metadata"].get("labels", {}).get(translate.TEMPLATE_LABEL, "")
            if label not in slugs:
                await self._delete("Template", obj["metadata"]["name"])
        sent = {obj["metadata"]["name"]: _spec_key(obj) for obj in templates}
        for tpl in catalog:  # each template whose image is in the store, as it is now
            image = await self.prepared(tpl.slug) if self.prepared is not None else None
            if image is None:
                continue  # sent with its first deployment, once the image is fetched
            try:
                obj = translate.template(await self._source(tpl.slug, image), kube.namespace,
                                         self.owner)
            except InvalidInput:
                continue  # Tinkerbell cannot run it: deploying it says why
            if sent.get(obj["metadata"]["name"]) != _spec_key(obj):
                await self._apply(obj)
        for obj in flows:
            name = obj["metadata"]["name"]
            wf_id = obj["metadata"].get("labels", {}).get(translate.WORKFLOW_LABEL, "")
            if name not in active and not await self._keeps(wf_id):
                await self._delete("Workflow", name)
        present = {obj["metadata"]["name"] for obj in flows}
        for name, wf in active.items():
            if name not in present:
                self._submit(wf.id)  # interrupted before it was sent: send it now
        self.cluster.owned = self._counts()
        self.cluster.synced_at = self.clock()
        await self._set_cluster(OK, f"connected to {kube.server}; namespace {kube.namespace}")
        self.synced.set()

    async def _apply(self, obj: dict[str, Any]) -> None:
        await self._kube().apply(obj)
        self._owned.setdefault(str(obj["kind"]), set()).add(str(obj["metadata"]["name"]))

    async def _delete(self, kind: str, name: str) -> None:
        await self._kube().delete(kind, name)
        self._owned.setdefault(kind, set()).discard(name)

    async def _keeps(self, workflow_id: str) -> bool:
        """Whether an ended deployment's Workflow stays: a succeeded one's does (Tinkerbell's
        record of it); one Dragonfly has no record of, or ended as failed or aborted, goes."""
        if not workflow_id:
            return False
        try:
            wf = await self.fleet.get_workflow(workflow_id)
        except NotFound:
            return False
        return wf.state is WorkflowState.SUCCEEDED

    async def mirror(self, machine: Machine) -> None:
        """Send ``machine``'s Hardware when it differs from what was last sent. allowPXE is on
        only while it deploys: Tinkerbell must not boot it into the installer otherwise."""
        kube = self._kube()
        try:
            obj = translate.hardware(machine, kube.namespace, self.owner,
                                     allow_pxe=machine.state is State.DEPLOYING)
        except InvalidInput as exc:  # e.g. no MAC yet: nothing Tinkerbell could boot
            log.info("not mirroring %s: %s", machine.name, exc.message)
            return
        name, key = obj["metadata"]["name"], _spec_key(obj)
        if self._mirrored.get(name) != key:
            await self._apply(obj)
            self._mirrored[name] = key

    async def _mirror(self) -> None:
        """Machines added, changed or deleted between reconciles reach their Hardware at once
        (from the store's change feed); while the cluster is down the next reconcile does it."""
        while True:
            watch = self.store.watch((MACHINE,), maxsize=1000)
            try:
                async for change in watch:
                    if watch.overflowed:
                        break  # fell behind: a new feed, and every machine once more
                    await self._mirror_one(change.key)
            finally:
                watch.close()
            for machine in self._machines():
                await self._mirror_one(machine.id)

    async def _mirror_one(self, machine_id: str) -> None:
        if self.kube is None or self.cluster.state != OK:
            return  # the next reconcile does it
        name = translate.hardware_name(machine_id)
        # The machine as it is now, not a change's snapshot: an old snapshot of a deploying
        # machine must not switch allowPXE back on after its success.
        current = self.fleet.lookup(machine_id)
        try:
            if current is None:
                if name in self._mirrored:
                    await self._delete("Hardware", name)
                    self._mirrored.pop(name, None)
            else:
                await self.mirror(current)
        except ClusterError as exc:  # the supervisor notices too, and reconciles
            log.warning("mirroring %s: %s", name, exc.message)

    def _machines(self) -> list[Machine]:
        return [m for m in self.fleet.list_machines(limit=100_000).items
                if m.mac or m.macs]

    def _mine(self) -> list[Workflow]:
        return [wf for wf in self.fleet.active_workflows() if wf.engine == "tinkerbell"]

    # --- following Workflows --------------------------------------------------------------

    async def _follow(self) -> None:
        """Every owned Workflow's status now, then each change as the watch brings it."""
        kube = self._kube()
        while True:
            flows, version = await kube.list("Workflow", self.owner)
            for obj in flows:
                await self.on_workflow(obj)
            try:
                async for event in kube.watch("Workflow", self.owner, version,
                                              self.watch_timeout):
                    if event.type in ("ADDED", "MODIFIED"):
                        await self.on_workflow(event.obj)
            except ClusterError as exc:
                if exc.state != GONE:
                    raise
                # 410: history too old for this resourceVersion; list again and carry on.

    async def on_workflow(self, obj: dict[str, Any]) -> None:
        wf_id = (obj.get("metadata", {}).get("labels") or {}).get(translate.WORKFLOW_LABEL)
        if not wf_id:
            return
        async with self._lock(wf_id):
            try:
                wf = await self._load(wf_id)
            except NotFound:
                return
            if not wf.active:
                return
            now = self.clock()
            outcome = apply_status(wf, obj, now)
            if outcome.result == FAILED:
                pass  # below, outside the lock
            elif outcome.result == SUCCEEDED:
                await self._installed(wf, now)
                return
            elif outcome.changed:
                await self.fleet.save_workflow(wf)
                return
            else:
                return
        await self.fail(wf_id, outcome.action, outcome.reason)

    async def _installed(self, wf: Workflow, now: float) -> None:
        kube = self._kube()
        machine = self.fleet.get_machine(wf.machine_id)
        # allowPXE off first: a machine rebooting into the PXE installer again would loop.
        await self._apply(translate.hardware(machine, kube.namespace, self.owner,
                                            allow_pxe=False))
        self._mirrored.pop(translate.hardware_name(machine.id), None)
        for action in wf.actions:
            if action["state"] != "succeeded":
                action.update(state="succeeded", finished_at=now, progress=100.0)
        wf.state, wf.finished_at, wf.progress = WorkflowState.SUCCEEDED, now, 100.0
        wf.stage, wf.eta_seconds, wf.written_at = "Installed", 0.0, wf.written_at or now
        await self.fleet.save_workflow(wf)
        if machine.state is State.DEPLOYING and machine.workflow_id == wf.id:
            await self.fleet.transition(machine.id, "deployed", "Tinkerbell workflow "
                                        f"{translate.workflow_name(wf.id)} succeeded",
                                        actor="tinkerbell", os=wf.template)

    # --- starting ---------------------------------------------------------------------------

    def _lock(self, workflow_id: str) -> asyncio.Lock:
        return self._locks.setdefault(workflow_id, asyncio.Lock())

    async def _load(self, workflow_id: str) -> Workflow:
        return Workflow.from_dict((await self.fleet.get_workflow(workflow_id)).to_dict())

    async def _source(self, slug: str, image: PreparedImage | None, *,
                      placeholder: bool = False) -> translate.TemplateSource:
        """The template as translation needs it. Without a root label its root partition is
        read from the stored image (``placeholder``: a stand-in GUID, only to check the rest
        before the image is there)."""
        tpl = await self.templates.get(slug)
        url = f"{self.base_url()}/images/{image.digest}" if image else "http://dragonfly/images/x"
        partuuid = ""
        if not tpl.root_label:
            if image is not None:
                partuuid = (await self._image_root(tpl.root_parttype, tpl.root_fstype,
                                                   image)).partuuid
            elif placeholder:
                partuuid = PLACEHOLDER_PARTUUID
        return translate.TemplateSource(
            slug=tpl.slug, family=tpl.family, image_url=url,
            image_format=image.format if image else "raw", root_label=tpl.root_label,
            root_parttype=tpl.root_parttype, root_fstype=tpl.root_fstype,
            root_partuuid=partuuid, kernel_args=tpl.kernel_args,
            timeout=max(600, int(tpl.phone_home_timeout)))

    async def _image_root(self, parttype: str, fstype: str, image: PreparedImage
                          ) -> rootpart.RootPartition:
        """The image's root partition by the template's rule, read from its GPT once and
        recorded with the image (kind ``tinkerbell_root``, keyed by its digest)."""
        key = f"{image.digest}:{parttype}:{fstype}"
        found = self._roots.get(key)
        if found is not None:
            return found
        doc = await self.store.get(ROOT_KIND, image.digest)
        rule = {"parttype": parttype, "fstype": fstype}
        if doc is not None and doc.data.get("rule") == rule:
            found = rootpart.RootPartition(**doc.data["root"])
        else:
            path = await self.image_path(image.digest) if self.image_path else None
            if path is None:
                raise InvalidInput(f"image {image.digest[:12]} is not in the image store: its "
                                   "root partition cannot be read")
            try:
                found = await asyncio.to_thread(rootpart.find_root, path, image.format,
                                                parttype=parttype, fstype=fstype)
            except InvalidInput as exc:
                raise InvalidInput(f"image {image.digest[:12]}: {exc.message}; give the "
                                   "template a root_label to deploy it in Tinkerbell mode"
                                   ) from None
            await self.store.put(ROOT_KIND, image.digest, {"rule": rule,
                                                           "root": found.to_dict()})
            log.info("image %s: root partition %s (%s)", image.digest[:12], found.partuuid,
                     found.how)
        self._roots[key] = found
        return found

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None) -> Workflow:
        await self.sources.template(template)  # InvalidInput for an unknown slug
        checked = validate_options(options, machine)
        now = self.clock()
        wf = Workflow(id=self.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                      template=template, engine="tinkerbell", state=WorkflowState.RUNNING,
                      stage=PREPARE[1], created_at=now, started_at=now,
                      actions=new_actions(), options=checked, actor=actor)
        # Translate once before anything is stored: a template Tinkerbell cannot run, or a
        # machine without a MAC or disk, is a 400 in the panel, not a failed deployment.
        ns = self.namespace
        for obj in (translate.hardware(machine, ns, self.owner or "x", allow_pxe=True),
                    translate.template(await self._source(template, None, placeholder=True),
                                       ns, "x"),
                    translate.workflow(wf, machine, ns, "x", seed_url="http://x/")):
            schema.validate(obj)
        wf.actions[0].update(state="running", started_at=now)
        await self.fleet.start_workflow(machine.id, action, wf, actor)
        self._submit(wf.id)
        return wf

    def _submit(self, workflow_id: str) -> None:
        start_once(self._submits, workflow_id, lambda: self._send(workflow_id),
                   f"tinkerbell-submit-{workflow_id}")

    async def _send(self, workflow_id: str) -> None:
        step = PREPARE[0]
        try:
            wf = await self._load(workflow_id)
            image = await self.sources.prepare_image(wf.template)
            source = await self._source(wf.template, image)  # finds a root without a label
            async with self._lock(workflow_id):
                wf = await self._load(workflow_id)
                if not wf.active:
                    return
                now = self.clock()
                wf.image = image.to_dict()
                wf.bytes_total = image.raw_size
                wf.actions[0].update(state="succeeded", finished_at=now, progress=100.0,
                                     message=f"image {image.digest[:12]} ready")
                wf.actions[1].update(state="running", started_at=now)
                wf.stage = SUBMIT[1]
                await self.fleet.save_workflow(wf)
            step = SUBMIT[0]
            if self.cluster.synced_at is None:  # just started: let the first reconcile run
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.synced.wait(), self.connect_wait)
            kube = self._kube()
            machine = self.fleet.get_machine(wf.machine_id)
            ns = kube.namespace
            await self.mirror(machine)  # deploying: allowPXE on
            await self._apply(translate.template(source, ns, self.owner))
            seed = f"{self.seed_base()}/{wf.id}/{self._token(wf.id)}/"
            await self._apply(translate.workflow(wf, machine, ns, self.owner, seed_url=seed))
            async with self._lock(workflow_id):
                wf = await self._load(workflow_id)
                if wf.active and wf.actions[1]["state"] != "succeeded":
                    now = self.clock()
                    wf.actions[1].update(state="succeeded", finished_at=now, progress=100.0,
                                         message=f"Workflow {translate.workflow_name(wf.id)} "
                                                 f"in {ns}")
                    wf.stage = "Waiting for Tinkerbell to boot the machine"
                    await self.fleet.save_workflow(wf)
        except ClusterError as exc:
            await self.fail(workflow_id, step, exc.message)
        except DragonflyError as exc:
            await self.fail(workflow_id, step, exc.message)
        except Exception as exc:
            log.exception("sending %s to Tinkerbell failed", workflow_id)
            await self.fail(workflow_id, step, f"{type(exc).__name__}: {exc}")

    # --- failing, aborting ----------------------------------------------------------------

    async def fail(self, workflow_id: str, action_name: str, reason: str,
                   actor: str = "tinkerbell") -> Workflow:
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return wf
            failed = wf.action(action_name) or {}
            label = str(failed.get("label") or action_name)
            wf.mark_failed(action_name, label, reason, self.clock())
            await self.fleet.save_workflow(wf)
            machine = self.fleet.get_machine(wf.machine_id)
            if machine.state is State.DEPLOYING and machine.workflow_id == wf.id:
                await self.fleet.transition(machine.id, "fail", wf.error, actor=actor)
        task = self._submits.get(workflow_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        return wf

    async def abort(self, workflow_id: str, actor: str) -> Workflow:
        """Cancel: delete the Workflow (Tinkerbell stops handing out its actions), then fail
        the deployment as 'aborted by ...'."""
        wf = await self._load(workflow_id)
        if not wf.active:
            raise Conflict(f"the deployment already ended ({wf.state.value})")
        reason = f"aborted by {actor}"
        try:
            await self._delete("Workflow", translate.workflow_name(workflow_id))
        except ClusterError as exc:
            # Ended here all the same; the next reconcile deletes the Workflow.
            reason += f" (its Workflow is deleted when the cluster answers: {exc.message})"
        at = next((a["name"] for a in wf.actions if a["state"] != "succeeded"),
                  wf.actions[-1]["name"])
        return await self.fail(workflow_id, at, reason, actor=actor)

    # --- the seed, phone home -------------------------------------------------------------

    def seed_base(self) -> str:
        return f"{self.base_url()}/api/tinkerbell/seed"

    def _token(self, workflow_id: str) -> str:
        return hmac.new(self._key, workflow_id.encode(), hashlib.sha256).hexdigest()[:32]

    def _check(self, workflow_id: str, token: str) -> None:
        if not self._key or not hmac.compare_digest(token, self._token(workflow_id)):
            raise NotFound("no Tinkerbell deployment has this address")

    async def seed_file(self, workflow_id: str, token: str, name: str) -> str:
        self._check(workflow_id, token)
        if name not in SEED_FILES:
            raise NotFound(f"no seed file {name!r}: there are {', '.join(SEED_FILES)}")
        wf = await self._load(workflow_id)
        machine = self.fleet.get_machine(wf.machine_id)
        phone = f"{self.base_url()}/api/tinkerbell/phone-home/{wf.id}/{self._token(wf.id)}"
        files = await self.sources.render_seed(wf.template, machine, wf.options, wf.id, phone)
        return files[name]

    async def phone_home(self, workflow_id: str, token: str, form: dict[str, str]
                         ) -> dict[str, Any]:
        """The installed OS's first boot: recorded (host keys), once."""
        self._check(workflow_id, token)
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if wf.installed:
                raise Conflict("this deployment's phone-home address was used once and is "
                               "closed")
            keys = {k: form[k].strip() for k in ("pub_key_rsa", "pub_key_ecdsa",
                                                 "pub_key_ed25519") if form.get(k)}
            wf.installed = {"at": self.clock(), "hostname": form.get("hostname", "")[:255],
                            "fqdn": form.get("fqdn", "")[:255], "host_keys": keys}
            await self.fleet.save_workflow(wf)
        await self.fleet.record(wf.machine_id, "deploy", "the installed OS phoned home",
                                {"workflow": wf.id})
        return {"ok": True}

    def own(self, kind: str, names: set[str]) -> None:
        """Record the owned objects of a kind another part keeps (Rufio's, see rufio.py)."""
        self._owned[kind] = set(names)

    def digest(self, text: str) -> str:
        """An HMAC of ``text`` under this installation's secret key: tells whether what was
        sent changed without keeping (or sending) the text."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def _counts(self) -> dict[str, int]:
        return {kind: len(names) for kind, names in sorted(self._owned.items())}

    def status(self) -> dict[str, Any]:
        self.cluster.owned = self._counts()
        return {**self.cluster.to_dict(), "owner": self.owner,
                "kubeconfig": str(self.kubeconfig)}


def _spec_key(obj: dict[str, Any]) -> str:
    return json.dumps(obj.get("spec"), sort_keys=True)
