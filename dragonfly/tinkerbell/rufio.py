"""BMC power through Rufio (``tinkerbell.power = rufio``): Tinkerbell's BMC controller owns the
BMCs, Dragonfly asks it.

Each IPMI or Redfish BMC record is mirrored as a Rufio ``Machine`` (host, port, TLS, and an
``authSecretRef`` to a Secret holding the user name and password, which Dragonfly creates and
owns); each power operation becomes a Rufio ``Job`` (``powerAction`` or
``oneTimeBootDeviceAction``), followed by a watch on Jobs until its ``Completed`` or ``Failed``
condition; the failure's message is a ``PowerError`` like any BMC's. The power state is read
from the Machine's status (``powerState``; a ``Contactable`` condition that is False is the
BMC's error).

Why a power driver: the routes, the molly guard, monitoring and unattended reimage all go
through ``PowerService`` and its driver registry, so Rufio is one more driver ("rufio") that
the registry selects for every IPMI and Redfish record (``Registry.route``), whatever driver
the record names: the records stay Dragonfly's (the panel edits them as always), and turning
the setting back to "dragonfly" needs no change to them. Wake-on-LAN, OpenJBOD and fake
records keep Dragonfly's drivers: Rufio has no provider for them.

Ownership as for the other objects: the owner label; ``reconcile`` applies what records say
and deletes owned Machines, Secrets and finished Jobs no record needs; a Secret is rewritten
only when the credentials changed (an HMAC of them, keyed by the installation's secret key,
in an annotation: never the password, never a plain hash of it). The password is in the
Secret's data and nowhere else: not logged, not in any message, not returned by the API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any

from dragonfly.power.drivers.base import (
    BOOT_DISK,
    BOOT_PXE,
    CYCLE,
    OFF,
    ON,
    RESET,
    SOFT_OFF,
    STATE,
    PowerDriver,
    PowerError,
)
from dragonfly.power.records import BMC, BmcRecord, from_document
from dragonfly.tinkerbell import schema, translate
from dragonfly.tinkerbell.kube import ERROR, GONE, OK, UNREACHABLE, ClusterError, Kube

if TYPE_CHECKING:
    from dragonfly.power.drivers import Registry
    from dragonfly.power.service import PowerService
    from dragonfly.tinkerbell.backend import TinkerbellBackend

log = logging.getLogger(__name__)

BMC_API = f"{schema.BMC_GROUP}/{schema.VERSION}"
DRIVEN = ("ipmi", "redfish")  # the record drivers Rufio takes over
DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
PROVIDERS = {"ipmi": "ipmitool", "redfish": "gofish"}  # Rufio's (bmclib's) provider names
DIGEST = "dragonfly.io/credentials-hmac"
# Dragonfly's operations as a Rufio Job's tasks.
TASKS: dict[str, dict[str, Any]] = {
    ON: {"powerAction": "on"}, OFF: {"powerAction": "off"}, SOFT_OFF: {"powerAction": "soft"},
    RESET: {"powerAction": "reset"}, CYCLE: {"powerAction": "cycle"},
    BOOT_PXE: {"oneTimeBootDeviceAction": {"device": ["pxe"], "efiBoot": True}},
    BOOT_DISK: {"oneTimeBootDeviceAction": {"device": ["disk"], "efiBoot": True}},
}


def machine_name(machine_id: str) -> str:
    return translate.k8s_name("df", machine_id)


def secret_name(machine_id: str) -> str:
    return translate.k8s_name("df-bmc", machine_id)


def host_port(record: BmcRecord) -> tuple[str, int]:
    """The BMC's host and port from the record's address (a host, an IP or a URL)."""
    address = record.address if "//" in record.address else f"//{record.address}"
    parts = urllib.parse.urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or record.address
    return host, record.port or port or DEFAULT_PORTS.get(record.driver, 623)


def machine_object(record: BmcRecord, namespace: str, owner: str) -> dict[str, Any]:
    """The record as a Rufio ``Machine``: the connection, the provider its driver names, and a
    reference to the Secret with its credentials (never the credentials themselves)."""
    host, port = host_port(record)
    provider = PROVIDERS.get(record.driver, "ipmitool")
    options: dict[str, Any] = {"preferredOrder": [provider]}
    options["ipmitool" if provider == "ipmitool" else "redfish"] = {"port": port}
    return {"apiVersion": BMC_API, "kind": "Machine",
            "metadata": {"name": machine_name(record.machine), "namespace": namespace,
                         "labels": translate.labels(owner, **{
                             translate.MACHINE_LABEL: record.machine})},
            "spec": {"connection": {
                "host": host, "port": port, "insecureTLS": bool(record.insecure),
                "authSecretRef": {"name": secret_name(record.machine), "namespace": namespace},
                "providerOptions": options}}}


def secret_object(record: BmcRecord, namespace: str, owner: str, digest: str
                  ) -> dict[str, Any]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": secret_name(record.machine), "namespace": namespace,
                         "labels": translate.labels(owner, **{
                             translate.MACHINE_LABEL: record.machine}),
                         "annotations": {DIGEST: digest}},
            "data": {"username": b64(record.user), "password": b64(record.password)}}


def job_object(machine_id: str, op: str, namespace: str, owner: str) -> dict[str, Any]:
    name = translate.k8s_name("df", machine_id, op.replace("_", "-"), secrets.token_hex(3))
    return {"apiVersion": BMC_API, "kind": "Job",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": translate.labels(owner, **{
                             translate.MACHINE_LABEL: machine_id})},
            "spec": {"machineRef": {"name": machine_name(machine_id), "namespace": namespace},
                     "tasks": [dict(TASKS[op])]}}


def job_outcome(obj: dict[str, Any]) -> tuple[bool, str] | None:
    """(succeeded, message) once the Job ended, else None."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    for kind, ok in (("Failed", False), ("Completed", True)):
        for condition in conditions:
            if condition.get("type") == kind and condition.get("status") == "True":
                return ok, str(condition.get("message") or "")
    return None


class RufioPower:
    """The link between the ``PowerService``'s records and Rufio's objects, over the Tinkerbell
    backend's client: a Service that keeps Machines and Secrets as the records say, and what
    ``RufioDriver`` asks to run a Job or read a state."""

    name = "rufio"

    def __init__(self, backend: TinkerbellBackend, power: PowerService, *,
                 job_timeout: float = 180.0, retry: float = 5.0) -> None:
        self.backend = backend
        self.power = power
        self.job_timeout = job_timeout
        self.retry = retry
        self._task: asyncio.Task[None] | None = None
        self._sent: dict[str, str] = {}  # Machine name -> spec last sent (as JSON)
        self._secrets: dict[str, str] = {}  # Secret name -> credentials HMAC last sent
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: set[str] = set()  # Jobs in flight (reconcile leaves them)

    def install(self, registry: Registry) -> None:
        """Register the driver and route every record Rufio takes over to it."""
        registry.register("rufio", RufioDriver.supports,
                          lambda r, _env, _i: RufioDriver(r, self),
                          "Rufio (Tinkerbell's BMC controller): Jobs on k3s")
        for driver in DRIVEN:
            registry.route[driver] = "rufio"

    # --- service ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rufio-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Reconcile when the cluster is there, then follow BMC record changes (the store's
        feed); any cluster failure: wait, then reconcile again."""
        while True:
            watch = self.power.store.watch((BMC,), maxsize=1000)
            try:
                await self._connected()
                await self.reconcile()
                async for change in watch:
                    if watch.overflowed:
                        break
                    # The record as the change wrote it: the service's memory may lag it.
                    record = from_document(change.data, self.power.box) \
                        if change.op == "put" and change.data is not None else None
                    await self.sync(change.key, record)
            except ClusterError as exc:
                log.info("Rufio sync waits for the cluster: %s", exc.message)
            except Exception:
                log.exception("syncing BMC records to Rufio failed")
            finally:
                watch.close()
            await asyncio.sleep(self.retry)

    async def _connected(self) -> None:
        # The backend's supervisor connects and retries with backoff; this waits for it.
        await self.backend.connected.wait()

    async def _ready(self) -> Kube:
        """The client; just after start, once the first connection is made (bounded)."""
        if self.backend.cluster.synced_at is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.backend.connected.wait(),
                                       self.backend.connect_wait)
        return self._kube()

    def _kube(self) -> Kube:
        kube, cluster = self.backend.kube, self.backend.cluster
        if kube is None and cluster.state == OK:  # stopped, or between two connections
            raise ClusterError(UNREACHABLE, "Dragonfly is not connected to the cluster now")
        if kube is None or cluster.state != OK:
            raise ClusterError(cluster.state, cluster.message)
        return kube

    def _records(self) -> dict[str, BmcRecord]:
        return {m: r for m, r in self.power.records().items() if r.driver in DRIVEN}

    # --- mirroring ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        kube, owner = self._kube(), self.backend.owner
        machines, _ = await kube.list("Machine", owner)
        secrets_, _ = await kube.list("Secret", owner)
        jobs, _ = await kube.list("Job", owner)
        records = self._records()
        wanted = {machine_name(m) for m in records} | {secret_name(m) for m in records}
        for kind, objs in (("Machine", machines), ("Secret", secrets_)):
            for obj in objs:
                name = obj["metadata"]["name"]
                if name not in wanted:
                    await kube.delete(kind, name)
        for obj in jobs:  # ended, or left by a stopped server: their outcome was reported
            if obj["metadata"]["name"] not in self._running:
                await kube.delete("Job", obj["metadata"]["name"])
        self._sent = {o["metadata"]["name"]: _key(o.get("spec")) for o in machines}
        self._secrets = {o["metadata"]["name"]: str(((o.get("metadata") or {}).get(
            "annotations") or {}).get(DIGEST, "")) for o in secrets_}
        self._sent = {k: v for k, v in self._sent.items() if k in wanted}
        self._secrets = {k: v for k, v in self._secrets.items() if k in wanted}
        for record in records.values():
            await self.mirror(record)
        self._count()

    async def sync(self, machine: str, record: BmcRecord | None) -> None:
        """One record changed: mirror it, or remove its objects when it is gone (or is no
        longer a BMC Rufio drives)."""
        if record is not None and record.driver in DRIVEN:
            await self.mirror(record)
            return
        kube = self._kube()
        for kind, name in (("Machine", machine_name(machine)),
                           ("Secret", secret_name(machine))):
            await kube.delete(kind, name)
        self._sent.pop(machine_name(machine), None)
        self._secrets.pop(secret_name(machine), None)
        self._count()

    def _count(self) -> None:
        """What the Tinkerbell page counts as owned (beside Hardware, Template, Workflow)."""
        self.backend.own("Machine", set(self._sent))
        self.backend.own("Secret", set(self._secrets))

    async def mirror(self, record: BmcRecord) -> None:
        """Send the record's Secret and Machine where they differ from what was sent."""
        kube, owner = self._kube(), self.backend.owner
        digest = self.backend.digest(f"bmc\0{record.user}\0{record.password}")
        name = secret_name(record.machine)
        if self._secrets.get(name) != digest:
            await kube.apply_secret(secret_object(record, kube.namespace, owner, digest))
            self._secrets[name] = digest
        obj = machine_object(record, kube.namespace, owner)
        if self._sent.get(obj["metadata"]["name"]) != _key(obj["spec"]):
            await kube.apply(obj)  # validated against Rufio's CRD first
            self._sent[obj["metadata"]["name"]] = _key(obj["spec"])
            self._count()

    # --- what the driver asks -----------------------------------------------------------------

    async def run(self, record: BmcRecord, op: str) -> None:
        """Run ``op`` as a Rufio Job and wait until it ends: PowerError with Rufio's message
        when it failed, or when the cluster cannot be asked."""
        lock = self._locks.setdefault(record.machine, asyncio.Lock())
        async with lock:  # one Job per BMC at a time, as with Dragonfly's own drivers' gate
            try:
                kube = await self._ready()
                await self.mirror(record)
                job = job_object(record.machine, op, kube.namespace, self.backend.owner)
                name = job["metadata"]["name"]
                self._running.add(name)
                try:
                    created = await kube.apply(job)
                    ok, message = await self._outcome(kube, name, created)
                finally:
                    self._running.discard(name)
                    with contextlib.suppress(ClusterError):
                        await kube.delete("Job", name)  # its Tasks go with it
            except ClusterError as exc:
                raise _power_error(exc) from None
        if not ok:
            raise PowerError(f"Rufio job {name} ({op.replace('_', ' ')}) failed: "
                             f"{message or 'no reason given'}", "protocol")

    async def _outcome(self, kube: Kube, name: str, created: dict[str, Any]
                       ) -> tuple[bool, str]:
        version = str(created["metadata"].get("resourceVersion", ""))
        try:
            async with asyncio.timeout(self.job_timeout):
                while True:
                    try:
                        async for event in kube.watch("Job", self.backend.owner, version):
                            if event.obj.get("metadata", {}).get("name") != name:
                                continue
                            if event.type == "DELETED":
                                return False, "the Job was deleted before it ended"
                            ended = job_outcome(event.obj)
                            if ended is not None:
                                return ended
                    except ClusterError as exc:
                        if exc.state != GONE:
                            raise
                    # The watch ended (server timeout) or its history was compacted: read the
                    # Job as it is now, and watch on from there.
                    current = await kube.get("Job", name)
                    if current is None:
                        return False, "the Job was deleted before it ended"
                    ended = job_outcome(current)
                    if ended is not None:
                        return ended
                    version = str(current["metadata"].get("resourceVersion", ""))
        except TimeoutError:
            raise PowerError(f"timeout: Rufio did not finish job {name} within "
                             f"{self.job_timeout:g} s (is rufio running? `k3s kubectl -n "
                             f"{kube.namespace} get jobs.bmc.tinkerbell.org`)",
                             "timeout") from None

    async def power_state(self, record: BmcRecord) -> str:
        try:
            kube = await self._ready()
            await self.mirror(record)
            obj = await kube.get("Machine", machine_name(record.machine))
        except ClusterError as exc:
            raise _power_error(exc) from None
        status = (obj or {}).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Contactable" and condition.get("status") == "False":
                raise PowerError(f"Rufio cannot reach the BMC: "
                                 f"{condition.get('message') or 'no reason given'}",
                                 "unreachable")
        state = str(status.get("powerState") or "unknown")
        return state if state in ("on", "off") else "unknown"


class RufioDriver(PowerDriver):
    """One BMC through Rufio (see the module's docstring)."""

    name = "rufio"
    supports = frozenset({ON, OFF, SOFT_OFF, RESET, CYCLE, BOOT_PXE, BOOT_DISK, STATE})

    def __init__(self, record: BmcRecord, link: RufioPower) -> None:
        super().__init__(record.address)
        self.record = record
        self.link = link

    async def power_state(self) -> str:
        return await self.link.power_state(self.record)

    async def power_on(self) -> None:
        await self.link.run(self.record, ON)

    async def power_off(self) -> None:
        await self.link.run(self.record, OFF)

    async def soft_off(self) -> None:
        await self.link.run(self.record, SOFT_OFF)

    async def reset(self) -> None:
        await self.link.run(self.record, RESET)

    async def power_cycle(self) -> None:
        await self.link.run(self.record, CYCLE)  # Rufio's own cycle: no off-wait-on here

    async def set_boot_device(self, device: str, once: bool = True) -> None:
        await self.link.run(self.record, BOOT_PXE if device == "pxe" else BOOT_DISK)


def _power_error(exc: ClusterError) -> PowerError:
    """A cluster failure as a power error: the cluster not answering is the BMC's path being
    down; a refused token or Role, or a rejected object, is configuration."""
    reason = "unreachable" if exc.state in (UNREACHABLE, ERROR, GONE, OK) else "config"
    return PowerError(f"Rufio: {exc.message}", reason)


def _key(spec: Any) -> str:
    return json.dumps(spec, sort_keys=True)
