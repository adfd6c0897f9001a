"""Tinkerbell mode: can Dragonfly reach its cluster with the kubeconfig install wrote?

One request answers every question at once: listing Tinkerbell ``Hardware`` in Tinkerbell's
namespace needs the API server to answer (k3s running), its certificate to match the
kubeconfig's CA, the service account's token to be valid, its Role to allow it, and
Tinkerbell's CRDs to be installed. Each failure is told apart and named with what to do.
Used by ``dragonfly status``, a synchronous command, so plain urllib is fine here.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARDWARE_PATH = "/apis/tinkerbell.org/v1alpha1/namespaces/{namespace}/hardware?limit=1"


@dataclass
class ClusterCheck:
    ok: bool
    detail: str
    server: str = ""


@dataclass
class KubeConfig:
    server: str
    ca_pem: str
    token: str
    namespace: str


def read_kubeconfig(path: Path) -> KubeConfig:
    """The current context's server, CA and token. Install writes JSON (which is YAML); a
    hand-made YAML kubeconfig is read when PyYAML is there."""
    text = path.read_text()
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            import yaml  # type: ignore[import-untyped]  # optional: not a runtime dependency
        except ImportError:
            raise ValueError("it is not JSON, as `dragonfly install` writes it") from None
        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("it is not a kubeconfig")
    try:
        contexts = {c["name"]: c["context"] for c in doc["contexts"]}
        context = contexts[doc["current-context"]]
        cluster = {c["name"]: c["cluster"] for c in doc["clusters"]}[context["cluster"]]
        user = {u["name"]: u["user"] for u in doc["users"]}[context["user"]]
        ca_pem = base64.b64decode(cluster["certificate-authority-data"], validate=True).decode()
        return KubeConfig(server=str(cluster["server"]).rstrip("/"), ca_pem=ca_pem,
                          token=str(user["token"]),
                          namespace=str(context.get("namespace") or ""))
    except (KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"it lacks the current context's server, CA or token ({exc})") from None


def check_cluster(path: Path, namespace: str, timeout: float = 5.0) -> ClusterCheck:
    try:
        kube = read_kubeconfig(path)
    except FileNotFoundError:
        return ClusterCheck(False, f"no kubeconfig at {path}: run `sudo dragonfly install "
                                   "--mode tinkerbell` again to write it")
    except PermissionError:
        return ClusterCheck(False, f"cannot read {path}: run `sudo dragonfly status`")
    except (OSError, ValueError) as exc:
        return ClusterCheck(False, f"cannot use {path}: {exc}")
    namespace = namespace or kube.namespace
    url = kube.server + HARDWARE_PATH.format(namespace=urllib.parse.quote(namespace, safe=""))
    try:
        tls = ssl.create_default_context(cadata=kube.ca_pem)
    except ssl.SSLError as exc:
        return ClusterCheck(False, f"the CA in {path} is not a certificate: {exc}", kube.server)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {kube.token}",
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
            json.load(response)
    except urllib.error.HTTPError as exc:
        return ClusterCheck(False, _refusal(exc.code, namespace), kube.server)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return ClusterCheck(False, f"{kube.server} presents a certificate that the CA in "
                                       f"{path} did not sign: re-run `sudo dragonfly install "
                                       "--mode tinkerbell` to refresh it", kube.server)
        return ClusterCheck(False, f"the Kubernetes API at {kube.server} does not answer "
                                   f"({reason}): is k3s running? (`systemctl status k3s`)",
                            kube.server)
    except (TimeoutError, OSError) as exc:
        return ClusterCheck(False, f"the Kubernetes API at {kube.server} does not answer "
                                   f"({exc}): is k3s running? (`systemctl status k3s`)",
                            kube.server)
    except ValueError:
        return ClusterCheck(False, f"{kube.server} answered something that is not the "
                                   "Kubernetes API", kube.server)
    return ClusterCheck(True, f"reachable; Tinkerbell's API answers in namespace {namespace}",
                        kube.server)


def _refusal(status: int, namespace: str) -> str:
    if status == 401:
        return ("the cluster refused Dragonfly's token: re-run `sudo dragonfly install --mode "
                "tinkerbell` to write a new kubeconfig")
    if status == 403:
        return (f"Dragonfly's service account may not list Tinkerbell hardware in {namespace}: "
                "its Role is missing (re-run install, which re-applies the HelmChart manifest)")
    if status == 404:
        return ("Tinkerbell's API is not there yet: the HelmChart is still installing, or "
                "failed (`k3s kubectl -n kube-system get helmchart,pods`)")
    return f"the Kubernetes API answered HTTP {status}"
