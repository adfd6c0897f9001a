"""The Kubernetes API, as the Tinkerbell backend uses it: Tinkerbell's objects in one namespace,
as plain dicts, with every failure turned into a ``ClusterError`` that says what to do.

Built on lightkube (PyPI), not kubernetes_asyncio: lightkube is typed (it ships py.typed, and
Dragonfly's code is checked with mypy --strict), small (~0.4 MB with its models, against ~3 MB
of generated code in kubernetes_asyncio, which matters in a one-file zipapp), handles custom
resources without code generation (``create_namespaced_resource``), and its watch restarts
itself on a server-side timeout from the last resourceVersion. The price is its own HTTP stack
(httpx2) beside aiohttp.

The kubeconfig is the one ``dragonfly install --mode tinkerbell`` writes (JSON, which is YAML).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from dragonfly.tinkerbell import schema
from dragonfly.tinkerbell.translate import OWNER_LABEL

# Readable states of the cluster, as the Tinkerbell page and `dragonfly status` show them.
OK, UNREACHABLE, UNAUTHORIZED, FORBIDDEN, NO_CRDS, INVALID, CONFLICT, GONE, ERROR = (
    "ok", "unreachable", "unauthorized", "forbidden", "no-crds", "invalid", "conflict", "gone",
    "error")
REINSTALL = "re-run `sudo dragonfly install --mode tinkerbell`"


class ClusterError(Exception):
    """A failure talking to the cluster: ``state`` (one of the states above) and a sentence."""

    def __init__(self, state: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.state = state
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]


def _resources() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kind in schema.KINDS:
        group = schema.BMC_GROUP if kind in ("Job", "Task", "Machine") else schema.GROUP
        found[kind] = create_namespaced_resource(group, schema.VERSION, kind,
                                                 schema.plural_of(kind))
    return found


RESOURCES = _resources()
# Core Secrets too: the BMC credentials Rufio's Machines refer to (Tinkerbell mode with
# tinkerbell.power = rufio). Not a CRD: ``apply_secret`` checks their shape instead.
RESOURCES["Secret"] = Secret


def explain(exc: BaseException, server: str, what: str = "") -> ClusterError:
    """``exc`` from lightkube or httpx2 as a ClusterError."""
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, ApiError):
        code = int(exc.status.code or (exc.response.status_code if exc.response else 0))
        text = exc.status.message or ""
        if code == 401:
            return ClusterError(UNAUTHORIZED, "the cluster refused Dragonfly's token (expired or "
                                f"revoked): {REINSTALL} to write a new kubeconfig", code)
        if code == 403:
            return ClusterError(FORBIDDEN, f"Dragonfly's service account may not {what}: its "
                                f"Role is missing or changed ({REINSTALL}, which re-applies "
                                "it)", code)
        if code == 404 and not what.startswith(("get ", "delete ", "patch ")):
            return ClusterError(NO_CRDS, "Tinkerbell's API is not there: its CRDs are not "
                                "installed yet, or the chart failed (`k3s kubectl -n "
                                "kube-system get helmchart,pods`)", code)
        if code == 404:
            return ClusterError(GONE, f"{what}: not found", code)
        if code == 409:
            return ClusterError(CONFLICT, f"{what}: {text or 'conflict'}", code)
        if code == 410:
            return ClusterError(GONE, f"{what}: {text or 'resource version too old'}", code)
        if code == 422:
            return ClusterError(INVALID, f"the cluster rejected {what}: {text}", code)
        return ClusterError(ERROR, f"the Kubernetes API answered HTTP {code} to {what}: {text}",
                            code)
    if isinstance(exc, httpx2.ConnectError) and isinstance(exc.__cause__, ssl.SSLError) or \
            isinstance(exc, ssl.SSLError):
        return ClusterError(UNREACHABLE, f"{server} presents a certificate the kubeconfig's CA "
                            f"did not sign: {REINSTALL} to refresh it")
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return ClusterError(UNREACHABLE, f"the Kubernetes API at {server} does not answer "
                            f"({exc or type(exc).__name__}): is k3s running? "
                            "(`systemctl status k3s`)")
    return ClusterError(ERROR, f"{what}: {type(exc).__name__}: {exc}")


class Kube:
    """Tinkerbell's objects in ``namespace`` over an async lightkube client."""

    def __init__(self, client: AsyncClient, namespace: str, server: str) -> None:
        self.client = client
        self.namespace = namespace
        self.server = server

    @classmethod
    async def connect(cls, kubeconfig: Path, namespace: str = "",
                      request_timeout: float = 10.0) -> Kube:
        """A client from the kubeconfig file (read in a thread: no file I/O on the loop)."""
        # httpx2 logs every request at INFO: a line per watch event in the journal.
        logging.getLogger("httpx2").setLevel(logging.WARNING)

        def build() -> Kube:
            if not kubeconfig.exists():
                raise ClusterError(ERROR, f"no kubeconfig at {kubeconfig}: {REINSTALL} to "
                                   "write it")
            try:
                config = KubeConfig.from_file(kubeconfig)
                single = config.get()
            except FileNotFoundError:
                raise ClusterError(ERROR, f"no kubeconfig at {kubeconfig}: {REINSTALL} to "
                                   "write it") from None
            except PermissionError:
                raise ClusterError(ERROR, f"cannot read {kubeconfig}: Dragonfly's service "
                                   "user needs read access") from None
            except (ConfigError, OSError, ValueError, KeyError, TypeError) as exc:
                raise ClusterError(ERROR, f"cannot use {kubeconfig}: {exc}") from None
            if single is None:
                raise ClusterError(ERROR, f"{kubeconfig} has no current context")
            ns = namespace or single.namespace or "default"
            client = AsyncClient(single, namespace=ns, timeout=httpx2.Timeout(request_timeout),
                                 trust_env=False, field_manager="dragonfly")
            schema.load_all()
            return cls(client, ns, str(single.cluster.server))
        return await asyncio.to_thread(build)

    async def close(self) -> None:
        await self.client.close()

    # --- requests ---------------------------------------------------------------------------

    async def list(self, kind: str, owner: str = "") -> tuple[list[dict[str, Any]], str]:
        """Objects of ``kind`` (only ``owner``'s, when given) and the list's resourceVersion."""
        selector: dict[str, Any] | None = {OWNER_LABEL: owner} if owner else None
        what = f"list {kind}"
        try:
            listing = self.client.list(RESOURCES[kind], namespace=self.namespace,
                                       labels=selector)
            items = [_plain(obj) async for obj in listing]
            version = str(listing.resourceVersion)
        except Exception as exc:
            raise explain(exc, self.server, what) from None
        return items, version

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return _plain(await self.client.get(RESOURCES[kind], name,
                                                namespace=self.namespace))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise explain(exc, self.server, f"get {kind} {name}") from None
        except Exception as exc:
            raise explain(exc, self.server, f"get {kind} {name}") from None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``, or replace its spec when it exists; validated against the CRD first
        (InvalidInput, before any request)."""
        schema.validate(obj)
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        resource = RESOURCES[kind]
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        for attempt in range(3):  # a concurrent writer: 409, read again and retry
            try:
                current = await self.get(kind, name)
                if current is None:
                    return _plain(await self.client.create(resource(body)))
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                return _plain(await self.client.replace(resource(body)))
            except ApiError as exc:
                if exc.status.code == 409 and attempt < 2:
                    continue
                raise explain(exc, self.server, f"write {kind} {name}") from None
            except ClusterError:
                raise
            except Exception as exc:
                raise explain(exc, self.server, f"write {kind} {name}") from None
        raise ClusterError(CONFLICT, f"write {kind} {name}: kept changing under Dragonfly")

    async def apply_secret(self, obj: dict[str, Any]) -> None:
        """Create or replace the Secret ``obj``. Its data are credentials: no message here
        names them, and nothing of the answer is returned."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if obj.get("apiVersion") != "v1" or obj.get("kind") != "Secret" or not name or \
                not isinstance(obj.get("data"), dict):
            raise ClusterError(INVALID, f"Secret {name!r}: not a v1 Secret with data")
        body = {**obj, "metadata": {**meta, "namespace": self.namespace}}
        for attempt in range(3):
            try:
                current = await self.client.get(Secret, name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise explain(exc, self.server, f"get Secret {name}") from None
                current = None
            except Exception as exc:
                raise explain(exc, self.server, f"get Secret {name}") from None
            try:
                secret = cast(Secret, Secret.from_dict(body))
                if current is None:
                    await self.client.create(secret)
                else:
                    body["metadata"]["resourceVersion"] = current.metadata.resourceVersion \
                        if current.metadata else None
                    secret = cast(Secret, Secret.from_dict(body))
                    await self.client.replace(secret)
                return
            except ApiError as exc:
                if exc.status.code == 409 and attempt < 2:
                    continue
                raise explain(exc, self.server, f"write Secret {name}") from None
            except Exception as exc:
                raise explain(exc, self.server, f"write Secret {name}") from None
        raise ClusterError(CONFLICT, f"write Secret {name}: kept changing under Dragonfly")

    async def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            return _plain(await self.client.patch(RESOURCES[kind], name, patch,
                                                  namespace=self.namespace,
                                                  patch_type=PatchType.MERGE))
        except Exception as exc:
            raise explain(exc, self.server, f"patch {kind} {name}") from None

    async def delete(self, kind: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.client.delete(RESOURCES[kind], name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise explain(exc, self.server, f"delete {kind} {name}") from None
        except Exception as exc:
            raise explain(exc, self.server, f"delete {kind} {name}") from None
        return True

    async def watch(self, kind: str, owner: str, resource_version: str,
                    server_timeout: int = 300) -> AsyncIterator[Event]:
        """Changes to ``owner``'s objects of ``kind`` after ``resource_version``; lightkube
        reopens the watch when the server closes it."""
        try:
            selector: dict[str, Any] = {OWNER_LABEL: owner}
            stream = self.client.watch(RESOURCES[kind], namespace=self.namespace,
                                       labels=selector,
                                       resource_version=resource_version or None,
                                       server_timeout=server_timeout)
            async for kind_of_change, obj in stream:
                yield Event(str(kind_of_change), _plain(obj))
        except Exception as exc:
            raise explain(exc, self.server, f"watch {kind}") from None


def _plain(obj: Any) -> dict[str, Any]:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return dict(data)
