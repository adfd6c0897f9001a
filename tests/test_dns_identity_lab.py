"""DNS-driven identity against a real resolver: dnsmasq in a network namespace joined to the
host by a veth pair answers PTR (``--ptr-record``) and TXT (``--txt-record``) queries; the boot
routes run on the host side and the "machine" (curl) fetches its iPXE script and checks in
from inside the namespace, so its boot address is the one DNS names. Needs root; fails (never
skips) without it unless DRAGONFLY_SKIP_LAB=1."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from dragonfly.context import AppContext
from dragonfly.dnsid.resolver import DnsLookup
from dragonfly.dnsid.rules import parse_rules
from dragonfly.dnsid.service import DnsIdentity
from dragonfly.domain.model import Machine, State, new_id
from dragonfly.domain.naming import memorable_name
from tests.lab.harness import agent_app, make_context
from tests.test_agent_checkin import report_body

pytestmark = pytest.mark.lab


def _require() -> None:
    if os.environ.get("DRAGONFLY_SKIP_LAB") == "1":
        pytest.skip("lab tests disabled by DRAGONFLY_SKIP_LAB=1")
    if os.geteuid() != 0:
        pytest.fail("the DNS lab test needs root (network namespaces); set "
                    "DRAGONFLY_SKIP_LAB=1 to skip it")
    missing = [t for t in ("ip", "curl", "dnsmasq") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (apt-get install iproute2 curl "
                    "dnsmasq-base)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@dataclass
class DnsLab:
    ns: str
    host: str  # the host side: where Dragonfly listens
    client: str  # the namespace side: the booting machine's address, named in DNS
    dns: str  # dnsmasq, in the namespace


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


@pytest.fixture
def dns_lab(tmp_path: Path) -> Iterator[DnsLab]:
    _require()
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"dfdns{tag}", f"dfdh{tag}", f"dfdn{tag}"
    octet = int(tag[:2], 16) % 250 + 1
    lab = DnsLab(ns, f"10.252.{octet}.1", f"10.252.{octet}.2", f"10.252.{octet}.3")
    proc: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{lab.host}/29", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{lab.client}/29", "dev", ns_if)
        _ip("-n", ns, "addr", "add", f"{lab.dns}/29", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        # The tags string holds a comma: dnsmasq splits command-line TXT strings at commas
        # without reading quotes, so that record comes from a conf file, the role's from the
        # command line.
        conf = tmp_path / "dnsmasq.conf"
        conf.write_text('txt-record=web-07.lab.example,"dragonfly:tags=ceph,nvme",'
                        '"v=spf1 -all"\n')
        log = open(tmp_path / "dnsmasq.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", f"--conf-file={conf}",
             "--no-resolv", "--no-hosts", f"--listen-address={lab.dns}", "--bind-interfaces",
             "--port=53", "--log-queries",
             f"--ptr-record={_reverse(lab.client)},web-07.lab.example",
             "--txt-record=web-07.lab.example,dragonfly:role=ceph-osd"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while b"started" not in (tmp_path / "dnsmasq.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)
        yield lab
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


async def curl_in(ns: str, url: str, body: str | None = None) -> tuple[int, str, float]:
    """GET (POST ``body`` as JSON) from inside the namespace: status, text, seconds taken."""
    post = [] if body is None else ["-H", "Content-Type: application/json",
                                    "--data-binary", body]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "curl", "-sS", "-m", "20", *post, "-w", "\n%{http_code}",
        url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text, _, code = out.decode().rpartition("\n")
    return int(code), text, time.monotonic() - started


async def _start(lab: DnsLab, tmp_path: Path, identity: DnsIdentity
                 ) -> tuple[web.AppRunner, str, AppContext]:
    # The check-in's own first name: the MAC's memorable name, not the test host's resolver
    # (which would send this namespace's address to DNS outside the lab).
    async def memorable(ip: str | None, mac: str) -> str:
        return memorable_name(mac)
    ctx = make_context(tmp_path / "state", resolve_name=memorable)
    ctx.identity = identity
    runner = web.AppRunner(agent_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, lab.host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{lab.host}:{port}", ctx


async def test_real_dns_names_tags_and_roles_a_booting_machine(dns_lab: DnsLab,
                                                               tmp_path: Path) -> None:
    rules = parse_rules([r"^web-\d+$ role=web tag=frontend"])
    identity = DnsIdentity(DnsLookup([dns_lab.dns], 1.5, 300), rules)
    runner, url, ctx = await _start(dns_lab, tmp_path, identity)
    fleet = ctx.fleet
    try:
        # A machine the fleet knows boots: its iPXE script fetch re-reads its identity.
        mac = "52:54:00:d5:00:01"
        known = await fleet.add_machine(Machine(id=new_id(), name="brave-falcon-42",
                                                state=State.READY, mac=mac, macs=[mac],
                                                tags=["rack-4"]))
        status, script, _ = await curl_in(dns_lab.ns, f"{url}/boot/{mac}.ipxe")
        assert status == 200 and script.startswith("#!ipxe")
        m = fleet.get_machine(known.id)
        assert m.name == "web-07"
        assert m.role == "ceph-osd"  # TXT beats the rule's role
        assert m.tags == ["rack-4", "ceph", "nvme", "frontend"]
        ident = m.identity
        assert ident["fqdn"] == "web-07.lab.example." and ident["ip"] == dns_lab.client
        assert ident["name"]["source"] == f"DNS PTR of {dns_lab.client} (web-07.lab.example)"
        assert ident["role"]["source"] == "DNS TXT of web-07.lab.example"
        assert {t["value"]: t["source"] for t in ident["tags"]}["frontend"].startswith("rule ")
        history = await fleet.history(m.id)
        assert any(h.kind == "identity" and "web-07" in h.message for h in history)

        # A machine first seen at its agent's check-in gets its identity there (once the
        # first machine has been renamed by its operator, freeing the name).
        def rename(machine: Machine) -> None:
            machine.name = "old-07"
        await fleet.update_machine(m.id, rename)
        mac2 = "52:54:00:d5:00:02"
        body = report_body(boot_mac=mac2, ip=dns_lab.client,
                           nics=[{"name": "eth0", "mac": mac2, "ip": dns_lab.client}])
        status, text, _ = await curl_in(dns_lab.ns, f"{url}/api/agent/checkin",
                                        json.dumps(body))
        assert status == 200, text
        new = fleet.find_machine([mac2])
        assert new is not None and new.name == "web-07" and new.role == "ceph-osd"
        assert "nvme" in new.tags
    finally:
        await runner.cleanup()


async def test_a_resolver_that_never_answers_costs_the_boot_only_the_timeout(
        dns_lab: DnsLab, tmp_path: Path) -> None:
    # A UDP socket on the host side that takes queries and never answers.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((dns_lab.host, 53))
    identity = DnsIdentity(DnsLookup([dns_lab.host], 0.8, 300), [])
    runner, url, ctx = await _start(dns_lab, tmp_path, identity)
    fleet = ctx.fleet
    try:
        mac = "52:54:00:d5:00:03"
        known = await fleet.add_machine(Machine(id=new_id(), name="quiet-one",
                                                state=State.READY, mac=mac, macs=[mac]))
        status, script, took = await curl_in(dns_lab.ns, f"{url}/boot/{mac}.ipxe")
        assert status == 200 and "discovery" in script
        assert 0.7 < took < 0.8 + 1.0, took  # waited for DNS, and no longer than its timeout
        m = fleet.get_machine(known.id)
        assert m.name == "quiet-one"
        assert m.identity["error"] == "no answer from DNS within 0.8 s"
        # The failure is cached briefly: the next boot does not wait again.
        status, _, took = await curl_in(dns_lab.ns, f"{url}/boot/{mac}.ipxe")
        assert status == 200 and took < 0.7, took
    finally:
        silent.close()
        await runner.cleanup()
