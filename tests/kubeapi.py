"""A stand-in Kubernetes API server for Tinkerbell mode's tests.

No Kubernetes API server can run on these machines (no k3s, no kube-apiserver packaged: see
shared/lab/README.md), so Tinkerbell mode is tested against this stand-in: a real HTTPS server
on loopback with a certificate signed by a CA made here, speaking the API server's REST and
watch protocol for Tinkerbell's kinds in one namespace, the way the API server does:

- list (labelSelector, limit), get, create (409 when it exists), replace (409 on a stale
  resourceVersion), merge patch, delete; resourceVersion, uid and creationTimestamp set by the
  server; one resourceVersion counter for everything;
- watch=true: a stream of JSON lines (ADDED/MODIFIED/DELETED) after the given
  resourceVersion, closed after timeoutSeconds; a resourceVersion older than the last
  compaction gets the ERROR event with a 410 Status;
- every create and replace is checked against the CRD's openAPIV3Schema with jsonschema_rs
  (an implementation independent of Dragonfly's own check) and refused with 422;
- 401 for a wrong token, a forced answer for every request (403, 404, 500 ...), and Tinkerbell's
  side played by the test through ``set_status`` (what tink-controller would write);
- core v1 Secrets (the BMC credentials Rufio's Machines refer to), checked against a small
  schema of a Secret's shape (base64 data), and Rufio's side played through ``finish_job``
  (a Job's Completed or Failed condition) and ``set_power`` (a Machine's powerState), as
  Rufio's controller would write them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dragonfly.ops.tinkerbell import render_kubeconfig
from tests.conftest import free_port

TOKEN = "eyJhbGciOiJSUzI1NiJ9.dragonfly-service-account"
NAMESPACE = "tink-system"
CRDS = Path(__file__).resolve().parents[2] / "shared" / "tinkerbell-crds"
PACKAGED_CRDS = Path(__file__).resolve().parents[1] / "dragonfly" / "tinkerbell" / "crds"
PLURALS = {"hardware": "Hardware", "templates": "Template", "workflows": "Workflow",
           "jobs": "Job", "tasks": "Task", "machines": "Machine"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


SECRET_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["apiVersion", "kind", "metadata"],
    "properties": {"apiVersion": {"enum": ["v1"]}, "kind": {"enum": ["Secret"]},
                   "type": {"type": "string"}, "metadata": {"type": "object"},
                   "data": {"type": "object", "additionalProperties": {
                       "type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}}},
    "additionalProperties": False}


def crd_validators() -> dict[str, Any]:
    """kind -> a jsonschema_rs validator of the CRD's schema (from shared/, else the copy the
    package ships)."""
    where = CRDS if CRDS.is_dir() else PACKAGED_CRDS
    found: dict[str, Any] = {}
    for path in where.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        kind = doc["spec"]["names"]["kind"]
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        found[kind] = jsonschema_rs.validator_for(schema)
    found["Secret"] = jsonschema_rs.validator_for(SECRET_SCHEMA)
    return found


@dataclass
class FakeApi:
    url: str
    ca_pem: bytes
    answer: int = 200  # anything else: every request gets this status
    token: str = TOKEN
    seen: list[tuple[str, str]] = field(default_factory=list)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    version: int = 100
    compacted: int = 0
    expired: int = 0  # watches answered 410 (resourceVersion older than the compaction)
    closed: bool = False
    lock: threading.Condition = field(default_factory=threading.Condition)
    validators: dict[str, Any] = field(default_factory=crd_validators)
    methods: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of writes

    # --- the server's side ------------------------------------------------------------------

    def _record(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        self.events.append((int(obj["metadata"]["resourceVersion"]), kind, type_,
                            copy.deepcopy(obj)))
        self.lock.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def put(self, kind: str, obj: dict[str, Any], type_: str = "ADDED") -> dict[str, Any]:
        """Store an object as the API server would (the test's own objects too)."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", NAMESPACE)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._bump(obj)
            self.objects[(kind, meta["name"])] = obj
            self._record(kind, type_, obj)
            return obj

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        """What Tinkerbell's controller does: write an object's status."""
        with self.lock:
            obj = self.objects[(kind, name)]
            obj["status"] = copy.deepcopy(status)
            self._bump(obj)
            self._record(kind, "MODIFIED", obj)

    def finish_job(self, name: str, ok: bool = True, message: str = "") -> None:
        """What Rufio's controller writes when a Job's tasks are done: the Completed
        condition, or Failed with the failing task's message."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": "Completed" if ok else "Failed", "status": "True"}
        if message:
            condition["message"] = message
        self.set_status("Job", name, {"startTime": now, "completionTime": now,
                                      "conditions": [condition]})

    def set_power(self, name: str, state: str, contactable: bool = True,
                  message: str = "") -> None:
        """What Rufio's controller writes of a Machine: its power state and whether its BMC
        answers (the Contactable condition)."""
        condition = {"type": "Contactable", "status": "True" if contactable else "False"}
        if message:
            condition["message"] = message
        self.set_status("Machine", name, {"powerState": state, "conditions": [condition]})

    def remove(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.pop((kind, name), None)
            if obj is not None:
                self._bump(obj)
                self._record(kind, "DELETED", obj)
            return obj

    def compact(self) -> None:
        """Forget the event history so far (etcd compaction): old watches get 410."""
        with self.lock:
            self.compacted = self.version

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {name: copy.deepcopy(obj) for (k, name), obj in self.objects.items()
                    if k == kind}

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message or reason}


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def make_handler(fake: FakeApi) -> type[http.server.BaseHTTPRequestHandler]:
    prefix = "/apis/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[str, str, dict[str, str]] | None:
            """(kind, name, query) of /apis/<group>/v1alpha1/namespaces/<ns>/<plural>[/name],
            or of /api/v1/namespaces/<ns>/secrets[/name]."""
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            core = f"/api/v1/namespaces/{NAMESPACE}/secrets"
            if parts.path == core or parts.path.startswith(core + "/"):
                rest = parts.path[len(core) + 1:]
                return ("Secret", rest, query) if "/" not in rest else None
            bits = parts.path[len(prefix):].split("/") if parts.path.startswith(prefix) else []
            if len(bits) not in (5, 6) or bits[1] != "v1alpha1" or bits[2] != "namespaces" \
                    or bits[3] != NAMESPACE or bits[4] not in PLURALS:
                return None
            kind = PLURALS[bits[4]]
            group = "bmc.tinkerbell.org" if kind in ("Job", "Task", "Machine") \
                else "tinkerbell.org"
            if bits[0] != group:
                return None
            return kind, bits[5] if len(bits) == 6 else "", query

        def _gate(self) -> tuple[str, str, dict[str, str]] | None:
            fake.seen.append((self.path, self.headers.get("Authorization", "")))
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                self._send(401, _status(401, "Unauthorized"))
                return None
            route = self._route()
            if route is None:
                self._send(404, _status(404, "NotFound", f"no route {self.path}"))
                return None
            if fake.answer != 200:
                self._send(fake.answer, _status(fake.answer, "Forced"))
                return None
            return route

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _invalid(self, kind: str, obj: dict[str, Any]) -> str:
            errors = [f"{'.'.join(map(str, e.instance_path))}: {e.message}"
                      for e in fake.validators[kind].iter_errors(obj)]
            return "; ".join(errors)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            route = self._gate()
            if route is None:
                return
            kind, name, query = route
            if name:
                with fake.lock:
                    obj = fake.objects.get((kind, name))
                if obj is None:
                    self._send(404, _status(404, "NotFound", f"{kind} {name} not found"))
                else:
                    self._send(200, obj)
                return
            if query.get("watch") == "true":
                self._watch(kind, query)
                return
            selector = query.get("labelSelector", "")
            with fake.lock:
                items = [copy.deepcopy(o) for (k, _), o in sorted(fake.objects.items())
                         if k == kind and _matches(o, selector)]
                version = str(fake.version)
            if "limit" in query:
                items = items[:int(query["limit"])]
            api_version = "v1" if kind == "Secret" else "tinkerbell.org/v1alpha1"
            self._send(200, {"kind": f"{kind}List", "apiVersion": api_version,
                             "metadata": {"resourceVersion": version}, "items": items})

        def _watch(self, kind: str, query: dict[str, str]) -> None:
            since = int(query.get("resourceVersion") or 0)
            timeout = float(query.get("timeoutSeconds") or 30)
            selector = query.get("labelSelector", "")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            deadline = datetime.datetime.now().timestamp() + timeout
            with fake.lock:
                if since and since < fake.compacted:
                    fake.expired += 1
                    line = {"type": "ERROR", "object": _status(410, "Expired",
                                                               "too old resource version")}
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    return
                sent = since
                while not fake.closed:
                    for version, k, type_, obj in list(fake.events):
                        if version > sent and k == kind:
                            sent = version
                            if _matches(obj, selector):
                                line = {"type": type_, "object": obj}
                                try:
                                    self.wfile.write(json.dumps(line).encode() + b"\n")
                                    self.wfile.flush()
                                except OSError:
                                    return
                    left = deadline - datetime.datetime.now().timestamp()
                    if left <= 0:
                        return
                    fake.lock.wait(min(left, 0.5))

        def do_POST(self) -> None:  # noqa: N802
            route = self._gate()
            if route is None:
                return
            kind, _, _ = route
            obj = self._body()
            fake.methods.append(("POST", self.path))
            problem = self._invalid(kind, obj)
            if problem:
                self._send(422, _status(422, "Invalid", problem))
                return
            name = obj.get("metadata", {}).get("name", "")
            with fake.lock:
                if (kind, name) in fake.objects:
                    self._send(409, _status(409, "AlreadyExists", f"{kind} {name} exists"))
                    return
            obj.get("metadata", {}).pop("resourceVersion", None)
            self._send(201, fake.put(kind, obj))

        def do_PUT(self) -> None:  # noqa: N802
            route = self._gate()
            if route is None:
                return
            kind, name, _ = route
            obj = self._body()
            fake.methods.append(("PUT", self.path))
            problem = self._invalid(kind, obj)
            if problem:
                self._send(422, _status(422, "Invalid", problem))
                return
            with fake.lock:
                current = fake.objects.get((kind, name))
                if current is None:
                    self._send(404, _status(404, "NotFound"))
                    return
                if obj["metadata"].get("resourceVersion") != \
                        current["metadata"]["resourceVersion"]:
                    self._send(409, _status(409, "Conflict", "the object has been modified"))
                    return
                obj["metadata"].update(uid=current["metadata"]["uid"],
                                       creationTimestamp=current["metadata"][
                                           "creationTimestamp"])
                if "status" in current:  # status is a subresource: PUT leaves it
                    obj["status"] = current["status"]
                else:
                    obj.pop("status", None)
                fake._bump(obj)
                fake.objects[(kind, name)] = obj
                fake._record(kind, "MODIFIED", obj)
            self._send(200, obj)

        def do_PATCH(self) -> None:  # noqa: N802
            route = self._gate()
            if route is None:
                return
            kind, name, _ = route
            patch = self._body()
            fake.methods.append(("PATCH", self.path))
            with fake.lock:
                current = fake.objects.get((kind, name))
                if current is None:
                    self._send(404, _status(404, "NotFound"))
                    return
                merged = _merge(current, patch)
                fake._bump(merged)
                fake.objects[(kind, name)] = merged
                fake._record(kind, "MODIFIED", merged)
            self._send(200, merged)

        def do_DELETE(self) -> None:  # noqa: N802
            route = self._gate()
            if route is None:
                return
            kind, name, _ = route
            fake.methods.append(("DELETE", self.path))
            obj = fake.remove(kind, name)
            if obj is None:
                self._send(404, _status(404, "NotFound"))
            else:
                self._send(200, _status(200, "Success") | {"status": "Success"})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class TlsServer(http.server.ThreadingHTTPServer):
    """HTTPS with the TLS handshake in each connection's thread, under a timeout: a client
    that goes away mid-handshake never blocks the accepting loop (or the fixture's shutdown)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler],
                 tls: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(2)  # loopback: a handshake or a request line takes milliseconds
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            request.close()
            return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[FakeApi]:
    ca_key, ca = make_ca("k3s-server-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("k3s")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "srv.pem").write_bytes(pem(cert) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    port = free_port()
    fake = FakeApi(f"https://127.0.0.1:{port}", pem(ca))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "srv.pem")
    server = TlsServer(("127.0.0.1", port), make_handler(fake), tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def kubeconfig(path: Path, server: str, ca_pem: bytes, token: str = TOKEN) -> Path:
    path.write_text(render_kubeconfig(server, base64.b64encode(ca_pem).decode(), token,
                                      NAMESPACE))
    return path
