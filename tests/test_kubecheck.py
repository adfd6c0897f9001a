"""Tinkerbell mode's cluster check, over real TLS.

A Kubernetes API server cannot run on this machine (no k3s, no kube-apiserver: see
shared/lab/README.md), so the peer is a stand-in (tests/kubeapi.py): a real HTTPS server on
loopback with a certificate signed by a CA made here, answering the request the check makes the
way the API server does (200 with a list, 401 for a bad token, 403 without RBAC, 404 without
the CRDs).
The kubeconfig is the one ``install_tinkerbell.render_kubeconfig`` writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dragonfly.config import Config, render_toml
from dragonfly.ops.kubecheck import ClusterCheck, check_cluster, read_kubeconfig
from dragonfly.ops.status import collect_status, format_status
from tests.conftest import free_port
from tests.kubeapi import NAMESPACE, TOKEN, FakeApi, api_server, kubeconfig, make_ca, pem
from tests.test_install import FakeRunner

__all__ = ["api_server"]  # the stand-in's fixture, shared with tests/test_tinkerbell*.py


def test_reads_what_install_writes(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443/", b"-----BEGIN X-----\n")
    kube = read_kubeconfig(path)
    assert (kube.server, kube.token, kube.namespace) == ("https://127.0.0.1:6443", TOKEN,
                                                         NAMESPACE)
    assert kube.ca_pem == "-----BEGIN X-----\n"


def test_reachable_cluster(api_server: FakeApi, tmp_path: Path) -> None:
    result = check_cluster(kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem),
                           NAMESPACE)
    assert result == ClusterCheck(True, f"reachable; Tinkerbell's API answers in namespace "
                                        f"{NAMESPACE}", api_server.url)
    assert api_server.seen == [(f"/apis/tinkerbell.org/v1alpha1/namespaces/{NAMESPACE}/"
                                "hardware?limit=1", f"Bearer {TOKEN}")]


@pytest.mark.parametrize(("answer", "words"), [
    (403, "its Role is missing"),
    (404, "HelmChart is still installing"),
    (500, "answered HTTP 500"),
])
def test_each_refusal_is_named(api_server: FakeApi, tmp_path: Path, answer: int,
                               words: str) -> None:
    api_server.answer = answer
    result = check_cluster(kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem),
                           NAMESPACE)
    assert not result.ok and words in result.detail


def test_bad_token_and_foreign_certificate(api_server: FakeApi, tmp_path: Path) -> None:
    result = check_cluster(kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem,
                                      token="stale"), NAMESPACE)
    assert not result.ok and "refused Dragonfly's token" in result.detail
    _, other_ca = make_ca("someone-else")
    result = check_cluster(kubeconfig(tmp_path / "kc2", api_server.url, pem(other_ca)),
                           NAMESPACE)
    assert not result.ok and "did not sign" in result.detail
    assert len(api_server.seen) == 1  # the foreign-CA client never got as far as a request


def test_nothing_listening_missing_or_broken_kubeconfig(tmp_path: Path) -> None:
    _, ca = make_ca("k3s")
    result = check_cluster(kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{free_port()}",
                                      pem(ca)), NAMESPACE, timeout=3)
    assert not result.ok and "does not answer" in result.detail and "k3s" in result.detail
    result = check_cluster(tmp_path / "absent", NAMESPACE)
    assert not result.ok and "no kubeconfig at" in result.detail
    (tmp_path / "broken").write_text('{"apiVersion": "v1"}')
    result = check_cluster(tmp_path / "broken", NAMESPACE)
    assert not result.ok and "lacks the current context" in result.detail


def test_status_reports_the_cluster_in_tinkerbell_mode(api_server: FakeApi,
                                                       tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = kubeconfig(tmp_path / "kc", api_server.url, api_server.ca_pem)
    config = tmp_path / "dragonfly.toml"
    config.write_text(render_toml({**Config.defaults().as_dict(), "server.mode": "tinkerbell",
                                   "server.state_dir": str(state),
                                   "tinkerbell.kubeconfig": str(path)}))
    status = collect_status(config, runner=FakeRunner(), version_of=lambda url: "")
    assert status.cluster.startswith("reachable") and not any(
        "Tinkerbell cluster" in p for p in status.problems)
    assert "  cluster:   reachable" in format_status(status)
    api_server.answer = 404
    status = collect_status(config, runner=FakeRunner(), version_of=lambda url: "")
    assert "Tinkerbell cluster: Tinkerbell's API is not there yet" in " ".join(status.problems)
    under_root = collect_status(config, root=tmp_path, version_of=lambda url: "")
    assert under_root.cluster == "not checked (--root: the cluster is that system's)"
