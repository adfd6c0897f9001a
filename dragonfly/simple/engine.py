"""Simple mode's deployments: the distribution's own installer, an answer file, and the
installer's progress reports, as a workflow of the ``simple`` engine.

1. **prepare-installer**: the installer's kernel and initrd from the image store (an offline
   import for the template wins; else downloaded and verified against the distribution's
   checksum file).
2. **boot-installer**: the machine's per-MAC iPXE script boots that kernel with the answer
   file's URL (one-time token, per MAC); done when the installer fetches the file.
3. **install**: the installer reports stages (preseed early/partman/late commands, kickstart
   %pre/%post/%onerror, subiquity's webhook); ``done`` (fatal in the answer file if it fails)
   ends it, and from then on the machine's script boots its disk.
4. **first-boot**: the installed OS's one-shot unit calls ``booted``: Installed.

Proxmox VE (no network boot): step 2 waits for the installer of the prepared ISO to POST its
system information to ``/simple/proxmox/answer``; ``done`` comes from the answer's
post-installation webhook, ``booted`` from its first-boot hook.

A machine that fetched its answer file and then stayed silent longer than the template's
``phone_home_timeout`` fails, with the last stage it reached."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State, Workflow, WorkflowState
from dragonfly.errors import Conflict, DragonflyError, InvalidInput, NotFound, Unavailable
from dragonfly.keyed_tasks import start_once
from dragonfly.simple.installers import (
    INSTALLERS,
    Installer,
    installer_for,
    iso_template,
    kernel_args,
)
from dragonfly.simple.names import ANSWER_FILES
from dragonfly.simple.overrides import get_override
from dragonfly.simple.render import render_answer
from dragonfly.simple.spec import InstallSpec, build_spec
from dragonfly.store import Store

if TYPE_CHECKING:
    from dragonfly.images import ImageStore
    from dragonfly.templates.model import OsTemplate
    from dragonfly.templates.registry import TemplateCatalog

log = logging.getLogger(__name__)

ENGINE = "simple"
SESSION = "simple_install"  # store kind, key = workflow id: tokens and reports (never shown)
STEPS = (("prepare-installer", "Installer files"),
         ("boot-installer", "Boot the installer, fetch the answer file"),
         ("install", "Install (the installer's own stages)"),
         ("first-boot", "First boot of the installed OS"))
LABELS = dict(STEPS)
RETRY_SECONDS = 10  # a machine booting before its installer files are ready tries again
MAX_STAGES = 200


def new_actions() -> list[dict[str, Any]]:
    return [{"name": name, "label": label, "state": "pending", "runner": "installer",
             "started_at": None, "finished_at": None, "progress": 0.0, "log": ""}
            for name, label in STEPS]


class SimpleInstaller:
    """The ``simple`` engine (a Service and a WorkflowRunner)."""

    name = "simple-installer"

    def __init__(self, fleet: Fleet, store: Store, templates: TemplateCatalog | None,
                 images: ImageStore | None, *, clock: Callable[[], float] = time.time,
                 tick: float = 15.0, mirrors: list[str] | None = None) -> None:
        self.fleet, self.store, self.templates, self.images = fleet, store, templates, images
        # The site's repositories (simple.mirrors): "slug=url" or "family=url".
        self.mirrors = dict(entry.split("=", 1) for entry in mirrors or [])
        self.clock, self.tick = clock, tick
        self._locks: dict[str, asyncio.Lock] = {}
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # --- service --------------------------------------------------------------------------

    async def start(self) -> None:
        for wf in self.mine():
            step = wf.action("prepare-installer")
            if step is not None and step["state"] != "succeeded":
                self._prepare(wf.id)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(),
                                                                 name="simple-watchdog")

    async def stop(self) -> None:
        tasks = [*self._preparing.values(), *([self._watchdog] if self._watchdog else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._preparing.clear()
        self._watchdog = None

    def mine(self) -> list[Workflow]:
        return [wf for wf in self.fleet.active_workflows() if wf.engine == ENGINE]

    def _lock(self, workflow_id: str) -> asyncio.Lock:
        return self._locks.setdefault(workflow_id, asyncio.Lock())

    async def _load(self, workflow_id: str) -> Workflow:
        return Workflow.from_dict((await self.fleet.get_workflow(workflow_id)).to_dict())

    async def _template(self, slug: str) -> OsTemplate:
        iso = iso_template(slug)  # Proxmox VE: no image template, the installer table
        if iso is not None:
            return iso
        if self.templates is None:
            raise Unavailable("this instance has no template catalog")
        return await self.templates.get(slug)

    # --- starting -------------------------------------------------------------------------

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None) -> Workflow:
        tpl = await self._template(template)
        installer_for(tpl.slug)
        options = dict(options or {})
        build_spec(machine, tpl.family, tpl.version, options,  # refused now, not at boot
                   default_mirror=self.mirror_for(tpl.slug, tpl.family))
        now = self.clock()
        workflow = Workflow(id=self.fleet.new_workflow_id(machine.id), machine_id=machine.id,
                            template=tpl.slug, engine=ENGINE, state=WorkflowState.RUNNING,
                            stage=LABELS["prepare-installer"], created_at=now,
                            started_at=now, actions=new_actions(), options=options,
                            actor=actor)
        workflow.actions[0].update(state="running", started_at=now)
        await self.store.put(SESSION, workflow.id, {
            "machine_id": machine.id, "mac": machine.mac,
            "answer_token": secrets.token_urlsafe(24),
            "progress_token": secrets.token_urlsafe(24), "answer_fetched_at": None,
            "last_report_at": None, "last_stage": ""})
        await self.fleet.start_workflow(machine.id, action, workflow, actor)
        self._prepare(workflow.id)
        return workflow

    def _prepare(self, workflow_id: str) -> None:
        start_once(self._preparing, workflow_id, lambda: self._prepare_files(workflow_id),
                   f"prepare-installer-{workflow_id}")

    async def _prepare_files(self, workflow_id: str) -> None:
        wf = await self._load(workflow_id)
        try:
            found = await self.installer_files(installer_for(wf.template))
        except DragonflyError as exc:
            await self.fail(workflow_id, "prepare-installer", exc.message)
            return
        except Exception as exc:  # a bug or an I/O error: still a reason, never a hang
            log.exception("preparing the installer of %s failed", workflow_id)
            await self.fail(workflow_id, "prepare-installer", f"{type(exc).__name__}: {exc}")
            return
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return
            now = self.clock()
            wf.image = found
            wf.actions[0].update(state="succeeded", finished_at=now, progress=100.0)
            wf.actions[1].update(state="running", started_at=now)
            wf.stage = "Waiting for the machine to boot the installer"
            await self.fleet.save_workflow(wf)

    async def installer_files(self, installer: Installer) -> dict[str, Any]:
        """{role: {"digest", "size", "source"}} for the kernel and initrd: an offline import
        first, else a download verified against the distribution's checksum file."""
        if self.images is None:
            raise Unavailable("this instance has no image store for installer files")
        from dragonfly.images import ImageSource
        from dragonfly.simple.importer import expected_checksum

        out: dict[str, Any] = {}
        for file in installer.files:
            image = await self.images.for_template(installer.image_key(file.role))
            if image is None:
                if not file.checksum_entry:
                    # What nothing can check is not booted: an installer runs as root on
                    # the machine with the answer file's secrets.
                    raise InvalidInput(
                        f"the {installer.slug} installer's {file.role} ({file.url}) has no "
                        "checksum file to be checked against, so it is not downloaded: "
                        "import it offline with `dragonfly image import FILE --template "
                        f"{installer.image_key(file.role)} --checksum sha256:HEX`")
                checksum = await expected_checksum(file)
                image = await self.images.ensure(ImageSource(
                    url=file.url, checksum=checksum, template=installer.image_key(file.role)))
            out[file.role] = {"digest": image.digest, "size": image.size,
                              "source": image.sources[0] if image.sources else ""}
        return out

    # --- what the machine boots and fetches ------------------------------------------------

    async def _session(self, workflow_id: str) -> dict[str, Any]:
        doc = await self.store.get(SESSION, workflow_id)
        if doc is None:
            raise NotFound("no Simple-mode install for this workflow")
        return dict(doc.data)

    async def spec_for(self, wf: Workflow, machine: Machine, base: str,
                       session: dict[str, Any]) -> InstallSpec:
        tpl = await self._template(wf.template)
        callback = f"{base}/simple/progress/{machine.mac}/{session['progress_token']}"
        return build_spec(machine, tpl.family, tpl.version, dict(wf.options),
                          callback=callback, default_mirror=self.mirror_for(tpl.slug,
                                                                            tpl.family),
                          answers=f"{base}/simple/answers/{machine.mac}/"
                          f"{session['answer_token']}")

    def mirror_for(self, slug: str, family: str) -> str:
        """The site's repository for a template (its slug first, then its family)."""
        return (self.mirrors.get(slug) or self.mirrors.get(family) or "").strip()

    async def boot_script(self, machine: Machine, wf: Workflow, base: str) -> str | None:
        """The iPXE script of a machine in a Simple-mode install, or None when it should boot
        as any other (its disk, once the installer said it is done)."""
        if wf.engine != ENGINE or not wf.active or wf.written_at is not None:
            return None
        if wf.actions[0]["state"] != "succeeded":
            return ("#!ipxe\n"
                    f"echo Dragonfly: the installer of {machine.name} is being prepared; "
                    f"trying again in {RETRY_SECONDS} s\n"
                    f"sleep {RETRY_SECONDS}\n"
                    f"chain --replace {base}/boot/{machine.mac}.ipxe\n")
        installer = installer_for(wf.template)
        if not installer.network_boot:
            # Proxmox VE boots its prepared ISO from virtual media: leave network boot so
            # the firmware goes on to the next boot device.
            return ("#!ipxe\n"
                    f"echo Dragonfly: {machine.name} installs {installer.name} from its "
                    "prepared ISO (virtual media), not from the network\n"
                    "exit\n")
        session = await self._session(wf.id)
        spec = await self.spec_for(wf, machine, base, session)
        answers = f"{base}/simple/answers/{machine.mac}/{session['answer_token']}"
        answer_url = answers if installer.family == "ubuntu" \
            else f"{answers}/{ANSWER_FILES[installer.family]}"
        kernel, initrd = wf.image["kernel"]["digest"], wf.image["initrd"]["digest"]
        await self._stage(wf.id, "installer-booting", "boot-installer", note=False)
        return ("#!ipxe\n"
                f"echo Dragonfly: {machine.name} boots the {wf.template} installer "
                "(Simple mode)\n"
                f"kernel {base}/images/{kernel} initrd=initrd "
                f"{kernel_args(installer, spec, answer_url)}\n"
                f"initrd --name initrd {base}/images/{initrd}\n"
                "boot\n")

    async def _find(self, mac: str, token: str, key: str) -> tuple[Workflow, dict[str, Any]]:
        machine = self.fleet.find_machine([mac])
        wf = self.fleet.active_workflow_of(machine) if machine is not None else None
        if machine is None or wf is None or wf.engine != ENGINE:
            raise NotFound("no Simple-mode install is running for this MAC")
        session = await self._session(wf.id)
        if not hmac.compare_digest(token, str(session[key])):
            raise NotFound("no Simple-mode install is running for this MAC")
        return wf, session

    async def answer(self, mac: str, token: str, name: str, base: str,
                     sent_macs: list[str]) -> str:
        """A file of the machine's answer: the answer file itself once (its token is spent
        by that fetch), and Ubuntu's meta-data/vendor-data while the install runs."""
        wf, session = await self._find(mac, token, "answer_token")
        installer = installer_for(wf.template)
        if sent_macs and mac not in sent_macs:  # anaconda's inst.ks.sendmac headers
            raise NotFound("this answer file is for another machine")
        if installer.family == "proxmox":
            return await self._proxmox_hook(wf, session, name, base)
        if installer.family == "ubuntu" and name in ("meta-data", "vendor-data"):
            return (f"instance-id: dragonfly-{wf.id}\n" if name == "meta-data" else "")
        if name != ANSWER_FILES[installer.family]:
            raise NotFound(f"no file {name!r} in this install's answer")
        if session.get("answer_fetched_at"):
            raise Conflict("this answer file was already fetched: its address is used once")
        return await self._serve_answer(wf, self.fleet.get_machine(wf.machine_id), base,
                                        session)

    async def _serve_answer(self, wf: Workflow, machine: Machine, base: str,
                            session: dict[str, Any]) -> str:
        """Render the install's answer file and note that it was fetched (it is served once):
        the install moves past its boot-installer stage."""
        spec = await self.spec_for(wf, machine, base, session)
        override = await get_override(self.store, wf.template)
        text = render_answer(spec, override["text"] if override else None)
        now = self.clock()
        session.update(answer_fetched_at=now, last_report_at=now)
        await self.store.put(SESSION, wf.id, session)
        await self._stage(wf.id, "answer-file-fetched", "boot-installer", finish=True)
        return text

    async def proxmox_answer(self, sysinfo: dict[str, Any], base: str) -> str:
        """The answer.toml of the machine whose NICs Proxmox's installer lists in its system
        information (``network_interfaces[].mac``): served once, and only when that machine
        has a Proxmox VE install running; NotFound for any other."""
        from dragonfly.agent.checkin import parse_mac

        nics = sysinfo.get("network_interfaces")
        macs: list[str] = []
        for nic in nics if isinstance(nics, list) else []:
            with contextlib.suppress(DragonflyError, TypeError, AttributeError):
                macs.append(parse_mac(str(nic.get("mac", "")), "a NIC's MAC"))
        if not macs:
            raise InvalidInput("the system information lists no network_interfaces[].mac")
        for mac in dict.fromkeys(macs):
            machine = self.fleet.find_machine([mac])
            wf = self.fleet.active_workflow_of(machine) if machine is not None else None
            if machine is None or wf is None or wf.engine != ENGINE or \
                    INSTALLERS.get(wf.template) is None or \
                    INSTALLERS[wf.template].family != "proxmox":
                continue
            session = await self._session(wf.id)
            if session.get("answer_fetched_at"):
                raise Conflict("this machine's answer was already fetched: it is served "
                               "once per install (start the install again)")
            return await self._serve_answer(wf, machine, base, session)
        raise NotFound("no Proxmox VE install is running for any of these MACs",
                       {"macs": macs})

    async def _proxmox_hook(self, wf: Workflow, session: dict[str, Any], name: str,
                            base: str) -> str:
        """The answer's [first-boot] hook: a script the installed system runs once, which
        reports its first boot. ``done`` normally came from the post-installation webhook;
        the script reports it again (a no-op then) so a lost webhook cannot block Installed."""
        if name != "first-boot.sh":
            raise NotFound(f"no file {name!r} in this install's answer (Proxmox VE's "
                           "installer POSTs to /simple/proxmox/answer)")
        if not session.get("answer_fetched_at"):
            raise NotFound("this machine has not fetched its answer yet")
        machine = self.fleet.get_machine(wf.machine_id)
        callback = f"{base}/simple/progress/{machine.mac}/{session['progress_token']}"
        await self._stage(wf.id, "first-boot-hook-fetched",
                          "install" if wf.written_at is None else "first-boot")
        return ("#!/bin/sh\n"
                "# Dragonfly: Proxmox VE reports its first boot (that marks it Installed).\n"
                "report() { curl -fsS -X POST -o /dev/null \"$1\" || "
                "wget -q -O /dev/null --post-data= \"$1\"; }\n"
                f"report '{callback}/done'\n"
                f"report '{callback}/booted'\n")

    # --- progress -------------------------------------------------------------------------

    async def progress(self, mac: str, token: str, event: str, body: dict[str, Any] | None
                       ) -> dict[str, Any]:
        wf, _session = await self._find(mac, token, "progress_token")
        if event == "done":
            await self._done(wf.id)
        elif event == "booted":
            await self._booted(wf.id)
        elif event == "failed":
            await self.fail(wf.id, "install", f"the installer reported a failure (last "
                            f"stage: {_session.get('last_stage') or 'none'})", actor="installer")
        elif event == "events":  # subiquity's reporting webhook: curtin-format events
            await self._webhook(wf.id, body or {})
        elif event.startswith("stage/"):
            await self._stage(wf.id, event[len("stage/"):], "install")
        else:
            raise NotFound(f"unknown progress event {event!r}")
        return {"ok": True}

    async def _webhook(self, workflow_id: str, body: dict[str, Any]) -> None:
        name = str(body.get("name", ""))[:120]
        kind = body.get("event_type")
        # Only the start of top-level stages ("subiquity/Install/...") and failures: a full
        # install posts hundreds of events.
        if kind == "finish" and body.get("result") == "FAIL":
            await self.fail(workflow_id, "install", f"{name}: "
                            f"{str(body.get('description', ''))[:300]}", actor="installer")
        elif kind == "start" and name and name.count("/") <= 2:
            await self._stage(workflow_id, name, "install")

    async def _stage(self, workflow_id: str, stage: str, step: str, *, finish: bool = False,
                     note: bool = True) -> None:
        stage = "".join(c for c in stage if c.isprintable())[:120] or "?"
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return
            now = self.clock()
            session = await self._session(workflow_id)
            if note:
                session.update(last_report_at=now, last_stage=stage)
                await self.store.put(SESSION, workflow_id, session)
            index = next(i for i, a in enumerate(wf.actions) if a["name"] == step)
            for i, action in enumerate(wf.actions):
                if i < index and action["state"] != "succeeded":
                    action.update(state="succeeded", finished_at=now, progress=100.0)
                    action["started_at"] = action["started_at"] or now
            action = wf.actions[index]
            if action["state"] == "pending":
                action.update(state="running", started_at=now)
            lines = action["log"].splitlines()[-MAX_STAGES:]
            action["log"] = "\n".join([*lines, f"{time.strftime('%H:%M:%S', time.gmtime(now))}"
                                       f" {stage}"])
            if finish:
                action.update(state="succeeded", finished_at=now, progress=100.0)
                wf.actions[index + 1].update(state="running", started_at=now)
            wf.stage = stage
            await self.fleet.save_workflow(wf)
        await self.fleet.record(wf.machine_id, "install", f"Installer: {stage}",
                                {"workflow_id": workflow_id, "stage": stage})

    async def _done(self, workflow_id: str) -> None:
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                raise Conflict("this install already ended")
            if wf.written_at is not None:
                return  # reported twice (Proxmox: the webhook, then the first-boot hook)
            now = self.clock()
            for action in wf.actions[:3]:
                if action["state"] != "succeeded":
                    action.update(state="succeeded", finished_at=now, progress=100.0)
                    action["started_at"] = action["started_at"] or now
            wf.actions[3].update(state="running", started_at=now)
            # From now on the machine's script boots its disk: no loop into the installer.
            wf.written_at = wf.rebooted_at = now
            wf.stage = "Installer done; waiting for the first boot"
            await self.fleet.save_workflow(wf)
            session = await self._session(workflow_id)
            session.update(last_report_at=now, last_stage="done")
            await self.store.put(SESSION, workflow_id, session)
        await self.fleet.record(wf.machine_id, "install", "Installer: done; the machine's "
                                "next network boot goes to its disk", {"workflow_id": wf.id})

    async def _booted(self, workflow_id: str) -> None:
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active or wf.written_at is None:
                raise Conflict("the installer has not reported done for this install")
            now = self.clock()
            for action in wf.actions:
                if action["state"] != "succeeded":
                    action.update(state="succeeded", finished_at=now, progress=100.0)
            wf.installed = {"at": now}
            wf.state, wf.finished_at, wf.progress = WorkflowState.SUCCEEDED, now, 100.0
            wf.stage, wf.eta_seconds = "Installed", 0.0
            await self.fleet.save_workflow(wf)
            machine = self.fleet.get_machine(wf.machine_id)
            if machine.state is State.DEPLOYING and machine.workflow_id == wf.id:
                await self.fleet.transition(machine.id, "deployed", "the installed OS "
                                            "reported its first boot", actor="installer",
                                            os=wf.template)

    # --- failing ----------------------------------------------------------------------------

    async def fail(self, workflow_id: str, step: str, reason: str, actor: str = "engine"
                   ) -> Workflow:
        async with self._lock(workflow_id):
            wf = await self._load(workflow_id)
            if not wf.active:
                return wf
            wf.mark_failed(step, LABELS.get(step, step), reason, self.clock())
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
            raise Conflict(f"the install already ended ({wf.state.value})")
        running = next((a["name"] for a in wf.actions if a["state"] == "running"), "install")
        return await self.fail(workflow_id, running, f"aborted by {actor}", actor=actor)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.check_deadlines()
            except Exception:
                log.exception("checking Simple-mode install deadlines failed")

    async def check_deadlines(self) -> None:
        """Fail installs whose machine fetched its answer file and then went silent for
        longer than the template's ``phone_home_timeout``."""
        now = self.clock()
        for wf in self.mine():
            doc = await self.store.get(SESSION, wf.id)
            if doc is None or not doc.data.get("answer_fetched_at"):
                continue
            last = float(doc.data.get("last_report_at") or doc.data["answer_fetched_at"])
            try:
                timeout = (await self._template(wf.template)).phone_home_timeout
            except DragonflyError:
                continue
            if now - last > timeout:
                stage = doc.data.get("last_stage") or "answer-file-fetched"
                step = "first-boot" if wf.written_at is not None else "install"
                await self.fail(wf.id, step, f"silent for {round((now - last) / 60)} min "
                                f"(the template allows {round(timeout / 60)}); the last stage "
                                f"reached was {stage}")


def check_event(event: str) -> str:
    if event in ("done", "failed", "booted", "events") or (
            event.startswith("stage/") and 6 < len(event) <= 126):
        return event
    raise InvalidInput(f"unknown progress event {event!r}")
