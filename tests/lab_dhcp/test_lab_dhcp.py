"""Dragonfly's DHCP against real PXE clients and a real site DHCP server, in namespaces.

Each test builds its own lab (tests/lab/harness.py): a namespace with bridge br0
(10.99.0.1) and taps, a second namespace on the segment (10.99.0.2) for the site's dnsmasq.
Dragonfly's DHCP service runs in the lab namespace as a subprocess (tests/lab_dhcp/runner.py,
bound to br0 with SO_BINDTODEVICE on the real ports 67 and 4011) next to a stand-in HTTP
server for the per-MAC iPXE script; a dnsmasq serves TFTP only (the real TFTP server is
tested elsewhere). QEMU boots SeaBIOS with its iPXE ROM and OVMF with EDK2's own PXE.

Proved from the runner's on_event records, the TFTP log and the guests' serial consoles:
each client takes our offer, fetches the loader for its architecture by TFTP exactly once,
comes back as iPXE, gets the script URL and fetches it (no boot loop).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dragonfly.edge.dhcp.leases import LEASE_KIND
from dragonfly.store import SqliteStore
from tests.lab.harness import (
    Guest,
    LabNet,
    Proc,
    QemuFactory,
    create_lab_net,
    delete_lab_net,
    require_lab,
    start_process,
    start_site_dhcp,
)

pytestmark = pytest.mark.lab

RUNNER = Path(__file__).resolve().parent / "runner.py"
BIOS_MAC = "52:54:00:d1:00:01"
UEFI_MAC = "52:54:00:d1:00:02"
TOOLS = ("ip", "qemu-system-x86_64", "dnsmasq", "timeout")


@dataclass
class DhcpRunner:
    proc: Proc
    events_path: Path
    http_port: int = 0

    def events(self, mac: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = [json.loads(line) for line in lines if line.strip()]
        return [e for e in out if mac is None or e["mac"] == mac]

    def steps(self, mac: str, step: str) -> list[dict[str, Any]]:
        return [e["detail"] | {"t": e["t"]} for e in self.events(mac) if e["step"] == step]


@dataclass
class Lab:
    net: LabNet
    workdir: Path
    procs: list[Proc]
    qemu: QemuFactory
    tftp_log: Path

    def tftp(self) -> str:
        try:
            return self.tftp_log.read_text()
        except FileNotFoundError:
            return ""

    def start_tftp(self) -> None:
        """dnsmasq as a TFTP-only server for /usr/lib/ipxe on 10.99.0.1:69."""
        args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--enable-tftp", "--tftp-root=/usr/lib/ipxe", "--interface=br0",
                "--bind-interfaces", "--user=root", f"--log-facility={self.tftp_log}"]
        self.procs.append(start_process("tftp", self.net.exec_args(*args),
                                        self.workdir / "tftp.out"))
        wait_until(lambda: "TFTP root" in self.tftp(), 10, "dnsmasq TFTP to start")

    def start_ra_only(self) -> None:
        """IPv6 router advertisements without any DHCPv4 (else iPXE waits ~16 s per step)."""
        args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--interface=veth-d", "--bind-interfaces", "--user=root", "--enable-ra",
                "--dhcp-range=fd99::,ra-only,64", "--log-facility=-"]
        self.procs.append(start_process("ra", self.net.exec_args(*args, ns=self.net.site_ns),
                                        self.workdir / "ra.log"))

    def start_site_dhcp(self) -> Proc:
        proc = start_site_dhcp(self.net, self.workdir / "site")
        self.procs.append(proc)
        return proc

    def start_dragonfly(self, *args: str, name: str = "dhcp", ready: bool = True
                        ) -> DhcpRunner:
        events = self.workdir / f"{name}-events.jsonl"
        cmd = self.net.exec_args(sys.executable, str(RUNNER), "--interface", "br0",
                                 "--server-ip", self.net.server_ip, "--events", str(events),
                                 *args)
        proc = start_process(name, cmd, self.workdir / f"{name}.log")
        self.procs.append(proc)
        runner = DhcpRunner(proc, events)
        if ready:
            wait_until(lambda: "READY" in proc.text() or not proc.alive(), 20,
                       "the DHCP runner to start")
            assert proc.alive(), f"the DHCP runner failed:\n{proc.tail()}"
            line = next(x for x in proc.text().splitlines() if x.startswith("READY"))
            runner.http_port = json.loads(line.split(" ", 1)[1])["http"]
        return runner


def wait_until(predicate: Callable[[], bool], seconds: float, what: str,
               diagnostics: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds} s waiting for {what}\n{diagnostics()}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_lab(*TOOLS)
    net = create_lab_net(taps=2)
    procs: list[Proc] = []
    qemu = QemuFactory(net, tmp_path / "guests")
    try:
        yield Lab(net, tmp_path, procs, qemu, tmp_path / "tftp.log")
    finally:
        qemu.stop_all()
        for proc in reversed(procs):
            proc.stop()
        delete_lab_net(net)


def diagnostics(lab: Lab, runner: DhcpRunner, *guests: Guest) -> Callable[[], str]:
    def text() -> str:
        parts = [g.diagnostics(30) for g in guests]
        parts.append("--- dragonfly events ---\n" + "\n".join(
            f"{e['mac']} {e['step']} {json.dumps(e['detail'])[:300]}" for e in runner.events()))
        parts.append(f"--- runner ---\n{runner.proc.tail(20)}\n--- tftp ---\n{lab.tftp()}")
        return "\n".join(parts)
    return text


def assert_boot_chain(lab: Lab, runner: DhcpRunner, guest: Guest, loader: str,
                      first_user_class: list[str]) -> None:
    """offer(loader) -> TFTP of that loader -> iPXE discover -> offer(script) -> HTTP."""
    mac = guest.mac
    discovers = runner.steps(mac, "dhcp_discover")
    offers = runner.steps(mac, "dhcp_offer") + runner.steps(mac, "dhcp_ack")
    assert discovers[0]["user_class"] == first_user_class
    loader_offers = [o for o in offers if not o["script"]]
    script_offers = [o for o in offers if o["script"]]
    assert loader_offers and all(o["loader"] == loader for o in loader_offers)
    url = f"http://{lab.net.server_ip}:{runner.http_port}/boot/{mac}.ipxe"
    assert script_offers and all(o["boot_file"] == url for o in script_offers)
    assert "coming back" in script_offers[0]["reason"]
    # No boot loop: once the chainloaded iPXE shows up (a new transaction), it never gets
    # a loader again. (The ROM's retransmissions, same xid, rightly get the same loader.)
    loader_xids = {o["xid"] for o in loader_offers}
    back = [d for d in discovers if d["ipxe"] and d["xid"] not in loader_xids]
    assert back and "http" in back[0]["ipxe_features"]
    assert all(o["t"] < back[0]["t"] for o in loader_offers)
    assert all(o["t"] > back[0]["t"] for o in script_offers)
    assert f"sent /usr/lib/ipxe/{loader} to" in lab.tftp()
    fetches = runner.steps(mac, "http_script")
    assert fetches and fetches[0]["t"] > script_offers[0]["t"]
    assert f"DRAGONFLY-SCRIPT-OK {mac}" in guest.serial


def script_fetched(runner: DhcpRunner, guest: Guest) -> Callable[[], bool]:
    return lambda: (bool(runner.steps(guest.mac, "http_script"))
                    and f"DRAGONFLY-SCRIPT-OK {guest.mac}" in guest.serial)


def test_proxy_beside_site_dhcp_boots_bios_and_uefi_to_the_script(lab: Lab) -> None:
    site = lab.start_site_dhcp()
    lab.start_tftp()
    runner = lab.start_dragonfly("--mode", "auto")
    bios = lab.qemu.start("bios", BIOS_MAC, firmware="bios", seconds=80)
    uefi = lab.qemu.start("uefi", UEFI_MAC, firmware="uefi", seconds=80)
    diag = diagnostics(lab, runner, bios, uefi)
    wait_until(lambda: script_fetched(runner, bios)() and script_fetched(runner, uefi)(), 70,
               "both guests to fetch their iPXE script", diag)

    # SeaBIOS's NIC ROM is itself iPXE: chainloaded once into our undionly.kpxe.
    assert_boot_chain(lab, runner, bios, "undionly.kpxe", ["iPXE"])
    # EDK2 sends no user class: ipxe.efi, then iPXE gets the script.
    assert_boot_chain(lab, runner, uefi, "ipxe.efi", [])
    assert runner.steps(UEFI_MAC, "dhcp_discover")[0]["arch"] == 7
    assert runner.steps(BIOS_MAC, "dhcp_discover")[0]["arch"] == 0
    # The addresses came from the site's dnsmasq; we only proxied (yiaddr stays 0).
    assert "DHCPACK(veth-d)" in site.text() and BIOS_MAC in site.text()
    assert all(r["ours"] is False for r in runner.steps(BIOS_MAC, "dhcp_request"))
    assert all(r["ip"] and r["ip"].startswith("10.99.0.1")
               for r in runner.steps(UEFI_MAC, "dhcp_request"))
    assert "4011" not in json.dumps([r["port"] for r in runner.steps(UEFI_MAC, "dhcp_request")])

    runner.proc.stop()
    counters = runner.steps("-", "counters")[-1]
    assert counters["malformed"] == 0 and counters["errors"] == 0
    assert counters["answered"] >= 4


def test_edk2_without_option_43_asks_port_4011_and_gets_snponly(lab: Lab) -> None:
    lab.start_site_dhcp()
    lab.start_tftp()
    runner = lab.start_dragonfly("--mode", "auto", "--no-option43",
                                 "--uefi-loader", "snponly.efi")
    uefi = lab.qemu.start("uefi", UEFI_MAC, firmware="uefi", seconds=80)
    wait_until(script_fetched(runner, uefi), 70, "the UEFI guest to fetch its script",
               diagnostics(lab, runner, uefi))
    acks = [a for a in runner.steps(UEFI_MAC, "dhcp_ack") if not a["script"]]
    requests = runner.steps(UEFI_MAC, "dhcp_request")
    assert any(r["port"] == 4011 and r["ours"] for r in requests)
    assert acks and acks[0]["loader"] == "snponly.efi"
    assert_boot_chain(lab, runner, uefi, "snponly.efi", [])


def test_full_mode_leases_addresses_and_boots(lab: Lab) -> None:
    lab.start_ra_only()
    lab.start_tftp()
    store = lab.workdir / "store.db"
    runner = lab.start_dragonfly("--mode", "full", "--store", str(store),
                                 "--range", "10.99.0.50-10.99.0.60",
                                 "--reservation", f"{BIOS_MAC}=10.99.0.42")
    bios = lab.qemu.start("bios", BIOS_MAC, firmware="bios", seconds=80)
    uefi = lab.qemu.start("uefi", UEFI_MAC, firmware="uefi", seconds=80)
    wait_until(lambda: script_fetched(runner, bios)() and script_fetched(runner, uefi)(), 75,
               "both guests to fetch their iPXE script", diagnostics(lab, runner, bios, uefi))
    assert "net0: 10.99.0.42/255.255.255.0" in bios.serial
    assert "net0: 10.99.0.50/255.255.255.0" in uefi.serial
    assert_boot_chain(lab, runner, bios, "undionly.kpxe", ["iPXE"])
    assert_boot_chain(lab, runner, uefi, "ipxe.efi", [])
    assert runner.steps(BIOS_MAC, "http_script")[0]["from"] == "10.99.0.42"
    assert {a["ip"] for a in runner.steps(UEFI_MAC, "dhcp_ack")} == {"10.99.0.50"}
    runner.proc.stop()

    async def leases() -> dict[str, dict[str, Any]]:
        s = SqliteStore(store)
        await s.open()
        try:
            return {d.key: d.data for d in await s.list(LEASE_KIND)}
        finally:
            await s.close()

    stored = asyncio.run(leases())
    assert stored[BIOS_MAC]["ip"] == "10.99.0.42" and stored[BIOS_MAC]["state"] == "bound"
    assert stored[UEFI_MAC]["ip"] == "10.99.0.50"
    assert stored[UEFI_MAC]["expires"] > time.time() + 3000


def test_full_mode_refuses_to_start_beside_another_dhcp_server(lab: Lab) -> None:
    lab.start_site_dhcp()
    store = str(lab.workdir / "store.db")
    refused = lab.start_dragonfly("--mode", "full", "--store", store,
                                  "--range", "10.99.0.50-10.99.0.60", ready=False)
    wait_until(lambda: not refused.proc.alive(), 20, "full mode to refuse")
    assert refused.proc.popen.returncode == 3
    assert "another DHCP server already answers on br0" in refused.proc.text()
    assert "10.99.0.2 offered 10.99.0.1" in refused.proc.text()  # from the 100-150 range

    forced = lab.start_dragonfly("--mode", "full", "--store", store, "--force",
                                 "--range", "10.99.0.50-10.99.0.60", name="forced")
    assert forced.proc.alive()
