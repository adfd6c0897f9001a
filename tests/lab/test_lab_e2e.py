"""The whole boot edge, end to end, against real peers: `dragonfly serve` in a lab namespace
beside the site's dnsmasq (plain DHCP), and QEMU guests under TCG that PXE-boot through
proxyDHCP -> TFTP -> iPXE -> HTTP script -> discovery kernel -> agent check-in.

(a) SeaBIOS with QEMU's iPXE NIC ROM and (b) OVMF with EDK2's own PXE boot at the same time;
then full DHCP mode with no dnsmasq at all. The API must show each machine with inventory
matching its VM, and the boot doctor the whole chain. Last, OVMF with its PXE switched off uses
EDK2's UEFI HTTP boot: proxyDHCP -> loader over HTTP -> iPXE -> HTTP script, no TFTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.lab.harness import DiscoveryImage, LabNet, Proc, QemuFactory, start_process

pytestmark = pytest.mark.lab

GiB = 1 << 30
CHAIN = ["dhcp_discover", "dhcp_offer", "tftp", "ipxe_script", "kernel", "initrd", "checkin"]


@dataclass
class Server:
    net: LabNet
    port: int
    token: str
    proc: Proc
    state: Path

    def api(self, path: str) -> Any:
        """GET an API path from inside the namespace (the server listens on the lab bridge)."""
        result = subprocess.run(
            self.net.exec_args("curl", "-sf", "--max-time", "5", "-H",
                               f"Authorization: Bearer {self.token}",
                               f"http://{self.net.server_ip}:{self.port}{path}"),
            capture_output=True, text=True, timeout=15)
        if result.returncode != 0:
            raise AssertionError(f"GET {path} failed ({result.returncode}): {result.stderr}\n"
                                 f"server log:\n{self.proc.tail(60)}")
        return json.loads(result.stdout)


# The product as installed: the zipapp that `scripts/test` and `scripts/demo` build with
# build_zipapp.py (bundled iPXE loaders and all), run by the system's python3.
ZIPAPP = ROOT / "dist" / "dragonfly"
PROGRAMS = {"module": [sys.executable, "-m", "dragonfly"], "zipapp": [str(ZIPAPP)]}


def dragonfly(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
              program: str = "module") -> str:
    result = subprocess.run([*PROGRAMS[program], *args], input=stdin,
                            capture_output=True, text=True, timeout=60, check=True,
                            env={**os.environ, **(env or {})})
    return result.stdout.strip()


@pytest.fixture
def serve(lab_net: LabNet, tmp_path: Path, discovery_image: DiscoveryImage
          ) -> Iterator[Callable[..., Server]]:
    started: list[Proc] = []

    def start(dhcp_mode: str, program: str = "module", **settings: str) -> Server:
        if program == "zipapp" and not ZIPAPP.exists():
            pytest.fail(f"{ZIPAPP} is missing: build it with `python3 build_zipapp.py`")
        state = tmp_path / "state"
        discovery_image.install(state)
        env = {"DRAGONFLY_CONFIG": str(tmp_path / "none.toml"), **settings}
        # Setup done from the shell, as an operator may: an admin and an API token.
        dragonfly("user", "add", "admin", "--role", "admin", "--password-stdin",
                  "--state-dir", str(state), stdin="lab admin password\n", env=env,
                  program=program)
        token = dragonfly("token", "create", "--user", "admin", "--name", "lab",
                          "--state-dir", str(state), env=env, program=program)
        port = 3000 + os.getpid() % 1000
        args = lab_net.exec_args(
            "env", *(f"{k}={v}" for k, v in env.items()), *PROGRAMS[program], "serve",
            "--state-dir", str(state), "--bind", lab_net.server_ip, "--port", str(port),
            "--boot-interface", "br0", "--dhcp-mode", dhcp_mode)
        proc = start_process("dragonfly", args, tmp_path / "dragonfly.log")
        started.append(proc)
        server = Server(lab_net, port, token, proc, state)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.alive(), f"dragonfly serve exited:\n{proc.tail()}"
            try:
                server.api("/api/version")
                return server
            except AssertionError:
                time.sleep(0.3)
        raise AssertionError(f"dragonfly serve did not answer:\n{proc.tail()}")

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
        assert all("Traceback" not in p.text() for p in started), started[0].tail(80)


def wait_for_machines(server: Server, macs: list[str], guests: list[Any],
                      seconds: float = 300) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for item in server.api("/api/machines?limit=1000")["items"]:
            if item["mac"] in macs:
                found[item["mac"]] = server.api(f"/api/machines/{item['id']}")
        if len(found) == len(macs):
            return found
        for guest in guests:
            if guest.exited() is not None and guest.mac not in found:
                raise AssertionError(f"{guest.name} stopped before checking in:\n"
                                     f"{guest.diagnostics()}\nserver:\n{server.proc.tail()}")
        time.sleep(2)
    diagnostics = "\n".join(g.diagnostics() for g in guests)
    timelines = {mac: server.api(f"/api/boot/{mac}") for mac in macs}
    raise AssertionError(f"machines missing after {seconds} s: {set(macs) - set(found)}\n"
                         f"boot timelines: {json.dumps(timelines, indent=1)[:4000]}\n"
                         f"{diagnostics}\nserver:\n{server.proc.tail(80)}")


def assert_inventory(machine: dict[str, Any], smp: int, memory_mib: int, disk: int) -> None:
    assert machine["state"] == "discovered"
    assert machine["cpu"]["threads"] == smp, machine["cpu"]
    # MemTotal is what the kernel keeps after its own reservations: a little under -m.
    assert 0.75 * memory_mib * 2**20 <= machine["memory_bytes"] <= memory_mib * 2**20
    assert [d["size_bytes"] for d in machine["disks"]] == [disk]
    assert machine["name"]


def assert_boot_chain(server: Server, mac: str, loader: str) -> None:
    timeline = server.api(f"/api/boot/{mac}")
    steps = [s["step"] for s in timeline["steps"]]
    positions = [steps.index(step) for step in CHAIN]  # ValueError names a missing step
    assert positions == sorted(positions), steps
    offers = [s for s in timeline["steps"] if s["step"] == "dhcp_offer"]
    assert offers[0]["detail"]["loader"] == loader, offers
    tftp = next(s for s in timeline["steps"] if s["step"] == "tftp")
    assert tftp["detail"]["file"] == loader and tftp["detail"]["bytes"] > 50_000
    assert timeline["diagnosis"] is None


def test_proxydhcp_beside_dnsmasq_bios_and_uefi_at_once(
        serve: Callable[..., Server], site_dhcp: Callable[..., Proc], qemu: QemuFactory) -> None:
    site_dhcp()
    server = serve("auto")
    bios = qemu.start("bios", "52:54:00:e2:e0:01", firmware="bios", disk_bytes=GiB, smp=2,
                      memory_mib=512, seconds=400)
    uefi = qemu.start("uefi", "52:54:00:e2:e0:02", firmware="uefi", disk_bytes=2 * GiB,
                      smp=1, memory_mib=512, seconds=400)
    machines = wait_for_machines(server, [bios.mac, uefi.mac], [bios, uefi])
    assert_inventory(machines[bios.mac], smp=2, memory_mib=512, disk=GiB)
    assert_inventory(machines[uefi.mac], smp=1, memory_mib=512, disk=2 * GiB)
    assert_boot_chain(server, bios.mac, "undionly.kpxe")
    assert_boot_chain(server, uefi.mac, "ipxe.efi")
    # No boot loop: each guest fetched the iPXE script, and then the kernel, exactly once.
    for mac in (bios.mac, uefi.mac):
        steps = server.api(f"/api/boot/{mac}")["steps"]
        assert sum(s["count"] for s in steps if s["step"] == "kernel") == 1
    history = server.api(f"/api/machines/{machines[bios.mac]['id']}/history")
    assert [h["kind"] for h in history][-2:] == ["agent", "state"]  # registered, checked in
    assert history[-1]["data"]["state"] == "discovered"


def test_full_dhcp_mode_without_a_site_server(serve: Callable[..., Server],
                                              qemu: QemuFactory) -> None:
    """Run from the built zipapp, as `dragonfly install` installs it: the one file carries
    the iPXE loaders that this BIOS guest gets over TFTP."""
    server = serve("full", program="zipapp",
                   DRAGONFLY_BOOT_DHCP_RANGE="10.99.0.160-10.99.0.170")
    guest = qemu.start("full", "52:54:00:e2:e0:03", firmware="bios", disk_bytes=GiB, smp=1,
                       memory_mib=512, seconds=300)
    machines = wait_for_machines(server, [guest.mac], [guest])
    machine = machines[guest.mac]
    assert_inventory(machine, smp=1, memory_mib=512, disk=GiB)
    assert machine["ip"].startswith("10.99.0.16") or machine["ip"] == "10.99.0.170"
    assert_boot_chain(server, guest.mac, "undionly.kpxe")


def test_no_bundled_loader_missing() -> None:
    """The lab tests need the bundled loaders: `scripts/test` builds them into ipxe/loaders."""
    from dragonfly.boot.loaders import Loaders

    missing = set(Loaders(None).missing())
    assert not missing - {"snp.efi"}, (
        f"loaders missing: {missing}; run `python3 build_zipapp.py` or "
        f"`python3 {ROOT / 'scripts/fetch_loaders.py'}`")



# OVMF (Debian 12's, like upstream EDK2) has HttpBootDxe and tries its network boot options in
# the order PXEv4, PXEv6, HTTPv4, HTTPv6. It reads these fw_cfg knobs (OvmfPkg's
# RUNTIME_CONFIG.md): with both PXE variants off, its first boot option is UEFI HTTPv4.
NO_PXE = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
          "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]


def test_uefi_http_boot_with_ovmf(serve: Callable[..., Server], site_dhcp: Callable[..., Proc],
                                  qemu: QemuFactory) -> None:
    """EDK2's own HTTP boot client (no iPXE ROM, no TFTP): its DISCOVER says HTTPClient, arch
    16; Dragonfly's proxy offer carries HTTPClient and the loader's URL; the firmware takes its
    address from dnsmasq, HEADs then GETs ipxe.efi, and that iPXE fetches its per-MAC script."""
    site_dhcp()
    server = serve("auto")
    guest = qemu.start("httpboot", "52:54:00:e2:e0:04", firmware="uefi", memory_mib=512,
                       seconds=90, extra=NO_PXE)
    deadline = time.monotonic() + 75
    steps: list[dict[str, Any]] = []
    while not any(s["step"] == "ipxe_script" for s in steps):
        if time.monotonic() > deadline or guest.exited() is not None:
            raise AssertionError(f"no iPXE script fetch: {json.dumps(steps, indent=1)[:4000]}"
                                 f"\n{guest.diagnostics()}\nserver:\n{server.proc.tail(60)}")
        time.sleep(1)
        steps = server.api(f"/api/boot/{guest.mac}")["steps"]
    names = [s["step"] for s in steps]
    chain = ["dhcp_discover", "dhcp_offer", "http_loader", "ipxe_script"]
    positions = [names.index(step) for step in chain]
    assert positions == sorted(positions), names
    discover = steps[names.index("dhcp_discover")]["detail"]
    assert discover["vendor_class"].startswith("HTTPClient") and discover["arch"] == 16
    offer = steps[names.index("dhcp_offer")]["detail"]
    assert offer["method"] == "uefi-http-x64" and offer["loader"] == "ipxe.efi"
    assert offer["boot_file"] == f"http://{server.net.server_ip}:{server.port}" \
                                 "/boot/loaders/ipxe.efi"
    fetch = [s for s in steps if s["step"] == "http_loader"]
    assert len(fetch) == 1 and fetch[0]["count"] == 1, fetch  # the HEAD is not a fetch
    assert fetch[0]["detail"]["file"] == "ipxe.efi" and fetch[0]["detail"]["bytes"] > 50_000
    # The iPXE that came back got the script, not the loader again, and nothing used TFTP.
    offers = [s["detail"]["script"] for s in steps if s["step"] == "dhcp_offer"]
    assert offers[0] is False and offers[-1] is True, offers
    assert not {"tftp", "tftp_error"} & set(names), names
    assert "Start HTTP Boot over IPv4" in guest.serial and "Start PXE" not in guest.serial
