"""Tinkerbell mode: k3s on this server, the Tinkerbell chart on k3s, Dragonfly driving it.

The files are rendered from templates in ``dragonfly/data`` (``k3s-config.yaml``,
``tinkerbell-helmchart.yaml``); every value goes in JSON-quoted, which YAML reads as a plain
string, so no interface name or address can break the document. k3s is installed with its
official installer; readiness is polled through ``k3s kubectl`` with progress on the terminal.
Every command goes through the injected runner, so tests drive the whole flow offline.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from dragonfly.ops.plan import (
    ROOT_OWNER,
    Context,
    Do,
    InstallError,
    MakeDir,
    Owner,
    Plan,
    WriteFile,
)

CHART = "oci://ghcr.io/tinkerbell/charts/tinkerbell"
DEFAULT_CHART_VERSION = "v0.19.1"
DEFAULT_NAMESPACE = "tink-system"
K3S_INSTALLER_URL = "https://get.k3s.io"
K3S_BIN = "/usr/local/bin/k3s"
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"
K3S_MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
HELMCHART = f"{K3S_MANIFESTS}/dragonfly-tinkerbell.yaml"
KUBECONFIG = "/etc/dragonfly/kubeconfig"
HOOKOS_DIR = "/var/lib/tinkerbell/hookos"
CLUSTER_CIDR = "10.42.0.0/16"  # k3s's default pod network, written out so both files agree
KUBE_VIP_CLASS = "kube-vip.io/kube-vip-class"
READY_TIMEOUT = 20 * 60.0  # first start pulls every image from ghcr.io
PROGRESS_EVERY = 15.0

# Dragonfly's DHCP modes in smee's terms.
SMEE_DHCP_MODES = {"full": "reservation", "auto": "auto-proxy", "selective": "proxy",
                   "off": "proxy"}

NO_INTERNET = """\
Could not download the k3s installer from {url}: {reason}
Dragonfly itself is installed, and the Tinkerbell files are in place:
  {config}
  {helmchart}
To continue without internet access, install k3s the air-gapped way
(https://docs.k3s.io/installation/airgap): copy the k3s binary to /usr/local/bin/k3s, the
k3s-airgap-images tarball to /var/lib/rancher/k3s/agent/images/, and the Tinkerbell images
(ghcr.io/tinkerbell/*) into a registry k3s can reach; run the k3s install script with
INSTALL_K3S_SKIP_DOWNLOAD=true. Then run `sudo dragonfly install --mode tinkerbell` again:
it finds k3s and finishes the setup."""


@dataclass(frozen=True)
class TinkerbellSettings:
    interface: str
    node_ip: str
    public_ip: str  # the chart's publicIP: node_ip, or a separate address held by kube-vip
    vip: bool
    namespace: str = DEFAULT_NAMESPACE
    chart_version: str = DEFAULT_CHART_VERSION
    dhcp_mode: str = "auto"


def _template(name: str) -> string.Template:
    return string.Template(files("dragonfly").joinpath("data", name).read_text())


def _q(value: object) -> str:
    return json.dumps(value)


def render_k3s_config(s: TinkerbellSettings) -> str:
    disable = ["traefik", "servicelb"] if s.vip else ["traefik"]
    note = ("\n# kube-vip holds the Tinkerbell address, so k3s's ServiceLB is not needed either."
            if s.vip else "")
    return _template("k3s-config.yaml").substitute(
        node_ip=_q(s.node_ip), interface=_q(s.interface), cluster_cidr=_q(CLUSTER_CIDR),
        disable=_q(disable), servicelb_note=note)


def render_helmchart(s: TinkerbellSettings) -> str:
    return _template("tinkerbell-helmchart.yaml").substitute(
        namespace=_q(s.namespace), chart=_q(CHART), chart_version=_q(s.chart_version),
        public_ip=_q(s.public_ip), artifacts_url=_q(f"http://{s.public_ip}:7173"),
        cluster_cidr=_q(CLUSTER_CIDR), interface=_q(s.interface),
        dhcp_enabled=_q(s.dhcp_mode != "off"), smee_dhcp_mode=_q(SMEE_DHCP_MODES[s.dhcp_mode]),
        # Without kube-vip the services carry no load-balancer class, so k3s's ServiceLB
        # serves them on the node's own address.
        lb_class=_q(KUBE_VIP_CLASS if s.vip else ""), kubevip=_q(s.vip),
        hookos_path=_q(HOOKOS_DIR))


def render_kubeconfig(server: str, ca_data: str, token: str, namespace: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "k3s", "cluster": {"server": server,
                                                    "certificate-authority-data": ca_data}}],
           "users": [{"name": "dragonfly", "user": {"token": token}}],
           "contexts": [{"name": "dragonfly", "context": {"cluster": "k3s", "user": "dragonfly",
                                                         "namespace": namespace}}],
           "current-context": "dragonfly"}
    # JSON is YAML: kubectl and every Kubernetes client read this file as it is.
    return ("# Written by `dragonfly install --mode tinkerbell`.\n"
            + json.dumps(doc, indent=2) + "\n")


# --- live steps -------------------------------------------------------------------------------

def _kubectl(*args: str) -> list[str]:
    return [K3S_BIN, "kubectl", *args]


def install_k3s(ctx: Context) -> None:
    if ctx.path(K3S_BIN).exists():
        ctx.say(f"    k3s is already installed ({K3S_BIN}): making sure it runs")
        result = ctx.runner(["systemctl", "enable", "--now", "k3s.service"], timeout=120)
        ctx.commands.append({"argv": ["systemctl", "enable", "--now", "k3s.service"],
                             "status": "ran", "returncode": result.returncode})
        if not result.ok:
            raise InstallError(f"k3s is installed but does not start: {result.output()}\n"
                               "See `journalctl -u k3s` and run the install again.")
        return
    with tempfile.TemporaryDirectory(prefix="dragonfly-k3s-") as tmp:
        script = str(Path(tmp) / "install.sh")
        fetch = ["curl", "-sfL", "--max-time", "60", "-o", script, K3S_INSTALLER_URL]
        result = ctx.runner(fetch, timeout=90)
        ctx.commands.append({"argv": fetch, "status": "ran", "returncode": result.returncode})
        if not result.ok:
            reason = result.output() or f"curl exited with {result.returncode}"
            raise InstallError(NO_INTERNET.format(url=K3S_INSTALLER_URL, reason=reason,
                                                  config=K3S_CONFIG, helmchart=HELMCHART))
        ctx.say("    running the official k3s installer (downloads k3s, starts k3s.service)")
        result = ctx.runner(["sh", script], timeout=900)
        ctx.commands.append({"argv": ["sh", f"<{K3S_INSTALLER_URL}>"], "status": "ran",
                             "returncode": result.returncode})
        if not result.ok:
            raise InstallError(f"the k3s installer failed ({result.returncode}):\n"
                               f"{result.output()[-3000:]}\nFix the cause and run the install "
                               "again; the Tinkerbell files are already in place.")
    ctx.facts["k3s_installed_by_dragonfly"] = True


@dataclass(frozen=True)
class Readiness:
    name: str
    argv: list[str]
    ready: Callable[[str], bool]
    hint: str


def readiness_checks(namespace: str) -> list[Readiness]:
    def positive(text: str) -> bool:
        return text.strip().isdigit() and int(text.strip()) > 0

    return [
        Readiness("the k3s API server", _kubectl("get", "--raw=/readyz"),
                  lambda text: text.strip() == "ok", "journalctl -u k3s"),
        Readiness("the Tinkerbell chart to install",
                  _kubectl("-n", "kube-system", "get", "job", "helm-install-tinkerbell",
                           "-o", "jsonpath={.status.succeeded}"), positive,
                  "k3s kubectl -n kube-system logs job/helm-install-tinkerbell"),
        Readiness("Tinkerbell to run",
                  _kubectl("-n", namespace, "get", "deployment", "tinkerbell",
                           "-o", "jsonpath={.status.readyReplicas}"), positive,
                  f"k3s kubectl -n {namespace} get pods; k3s kubectl -n {namespace} "
                  "describe deployment tinkerbell"),
        Readiness("Dragonfly's access token",
                  _kubectl("-n", namespace, "get", "secret", "dragonfly-token",
                           "-o", "jsonpath={.data.token}"), lambda text: bool(text.strip()),
                  f"k3s kubectl -n {namespace} describe secret dragonfly-token"),
    ]


def wait_ready(ctx: Context, namespace: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll each readiness check in turn, printing progress, until all pass or time runs out."""
    start = ctx.clock()
    for check in readiness_checks(namespace):
        began = ctx.clock()
        next_note = began + PROGRESS_EVERY
        ctx.say(f"    waiting for {check.name}…")
        while True:
            result = ctx.runner(check.argv, timeout=30)
            if result.ok and check.ready(result.stdout):
                ctx.say(f"    ✓ {check.name} ({ctx.clock() - began:.0f} s)")
                break
            now = ctx.clock()
            if now - start > timeout:
                raise InstallError(
                    f"gave up waiting for {check.name} after {now - start:.0f} s. Look at "
                    f"`{check.hint}`, then run `sudo dragonfly install --mode tinkerbell` "
                    "again: it continues where it stopped.")
            if now >= next_note:
                ctx.say(f"      still waiting for {check.name} ({now - began:.0f} s)")
                next_note = now + PROGRESS_EVERY
            ctx.sleep(3.0)


def write_kubeconfig(ctx: Context, namespace: str, owner: Owner) -> None:
    token_b64 = ctx.runner(_kubectl("-n", namespace, "get", "secret", "dragonfly-token", "-o",
                                    "jsonpath={.data.token}"), timeout=30)
    ca_b64 = ctx.runner(_kubectl("-n", namespace, "get", "secret", "dragonfly-token", "-o",
                                 "jsonpath={.data.ca\\.crt}"), timeout=30)
    try:
        token = base64.b64decode(token_b64.stdout.strip(), validate=True).decode()
        base64.b64decode(ca_b64.stdout.strip(), validate=True)
    except (binascii.Error, UnicodeDecodeError):
        token = ""
    if not (token_b64.ok and ca_b64.ok and token):
        raise InstallError("could not read the dragonfly-token secret from the cluster: "
                           f"{(token_b64.output() + ' ' + ca_b64.output()).strip()}")
    text = render_kubeconfig("https://127.0.0.1:6443", ca_b64.stdout.strip(), token, namespace)
    WriteFile(KUBECONFIG, text.encode(), 0o640, owner).apply(ctx)


def add_tinkerbell_steps(plan: Plan, s: TinkerbellSettings, config_owner: Owner) -> None:
    """Files first (k3s reads them at its first start), then k3s, readiness and credentials."""
    plan.add(MakeDir("/etc/rancher/k3s", 0o755, ROOT_OWNER))
    plan.add(WriteFile(K3S_CONFIG, render_k3s_config(s).encode(), 0o600, ROOT_OWNER,
                       "k3s server configuration"))
    plan.add(MakeDir(K3S_MANIFESTS, 0o700, ROOT_OWNER))
    plan.add(WriteFile(HELMCHART, render_helmchart(s).encode(), 0o600, ROOT_OWNER,
                       f"HelmChart for Tinkerbell {s.chart_version} and Dragonfly's account"))
    plan.add(MakeDir(HOOKOS_DIR, 0o755, ROOT_OWNER))
    plan.add(Do(f"install k3s with its official installer (curl -sfL {K3S_INSTALLER_URL} | "
                "sh -), unless it is already installed", install_k3s, live=True,
                paths=[K3S_BIN]))
    plan.add(Do("wait until k3s, the Tinkerbell chart and its deployment are ready",
                lambda ctx: wait_ready(ctx, s.namespace), live=True))
    plan.add(Do(f"write {KUBECONFIG} (0640 {config_owner}) with the dragonfly service "
                "account's token", lambda ctx: write_kubeconfig(ctx, s.namespace, config_owner),
                live=True, paths=[KUBECONFIG]))
