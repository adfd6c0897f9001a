"""The discovery agent on a real (emulated) machine, without proxyDHCP or TFTP.

QEMU boots the discovery kernel with the initrd exactly as the server streams it (stock initrd
+ agent overlay), gets its address from the site's dnsmasq, and the agent checks in with the
app in the namespace. The inventory must match the VM: MAC, 2 CPUs, ~512 MiB, a 1 GiB disk; its
name comes from the PTR record dnsmasq serves. A second test goes through real iPXE: the
per-MAC script, the kernel and the initrd over HTTP. A third gives the VM a BMC (OpenIPMI's
ipmi_sim behind QEMU's KCS interface): the agent reads its address with the image's ipmitool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from dragonfly.agent.checkin import AgentCommands
from dragonfly.context import AppContext
from dragonfly.domain.model import Machine, State
from dragonfly.domain.naming import machine_name
from tests.lab.conftest import LabServer
from tests.lab.harness import (
    IPXE_LKRN,
    BmcSim,
    DhcpHost,
    DiscoveryImage,
    Guest,
    LabNet,
    Proc,
    QemuFactory,
    RecordingBootLog,
    agent_app,
    make_context,
    netns_reverse_lookup,
)

pytestmark = pytest.mark.lab

MIB = 1024 * 1024


async def wait_for_machine(ctx: AppContext, guest: Guest, seconds: float = 150
                           ) -> Machine:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        machine = ctx.fleet.find_machine([guest.mac])
        if machine is not None:
            return machine
        if guest.exited() is not None:
            pytest.fail(f"the guest stopped before checking in\n{guest.diagnostics()}")
        await asyncio.sleep(0.5)
    pytest.fail(f"no check-in from {guest.mac} within {seconds} s\n{guest.diagnostics()}")


async def wait_for_exit(guest: Guest, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code = guest.exited()
        if code is not None:
            return code
        await asyncio.sleep(0.5)
    pytest.fail(f"the guest did not power off within {seconds} s\n{guest.diagnostics()}")


def lab_context(tmp_path: Path, net: LabNet, image: DiscoveryImage) -> AppContext:
    lookup = netns_reverse_lookup(net.ns)

    async def resolve(ip: str | None, mac: str) -> str:
        return await machine_name(ip, mac, 2.0, lookup)

    ctx = make_context(tmp_path / "state", poll_seconds=2, resolve_name=resolve)
    image.install(tmp_path / "state")
    return ctx


async def served_initrd(server: LabServer, tmp_path: Path) -> Path:
    """Exactly the bytes the server streams (stock initrd + agent overlay), for QEMU to boot."""
    initrd = tmp_path / "served-initrd.img"
    async with aiohttp.ClientSession() as http, \
            http.get(server.local_url + "/boot/discovery/initrd.img") as response:
        assert response.status == 200
        initrd.write_bytes(await response.read())
    assert initrd.stat().st_size == int(response.headers["Content-Length"])
    return initrd


def assert_inventory(machine: Machine, mac: str) -> None:
    assert machine.state is State.DISCOVERED
    assert machine.mac == mac and mac in machine.macs
    assert machine.cpu["threads"] == 2
    # -m 512: MemTotal is what is left after the kernel's own reservations.
    assert 400 * MIB < machine.memory_bytes <= 512 * MIB, machine.memory_bytes
    assert [(d["name"], d["size_bytes"]) for d in machine.disks] == [("vda", 1 << 30)]
    assert [(n["name"], n["mac"]) for n in machine.nics] == [("eth0", mac)]
    assert machine.virtualization == "qemu"
    assert machine.vendor == "QEMU"


async def test_agent_checks_in_from_a_vm(
        tmp_path: Path, lab_net: LabNet, site_dhcp: Callable[..., Proc],
        discovery_image: DiscoveryImage, qemu: QemuFactory,
        lab_server: Callable[..., Awaitable[LabServer]]) -> None:
    mac = "52:54:00:d1:5c:01"
    site_dhcp(hosts=[DhcpHost(mac, "10.99.0.120", "labnode")], dns=True)
    ctx = lab_context(tmp_path, lab_net, discovery_image)
    server = await lab_server(agent_app(ctx))

    initrd = await served_initrd(server, tmp_path)

    started = time.monotonic()
    guest = qemu.start("vm1", mac, kernel=discovery_image.vmlinuz, initrd=initrd,
                       append=f"console=ttyS0 dragonfly.url={server.url} "
                              f"dragonfly.mac={mac} panic=30",
                       disk_bytes=1 << 30, smp=2, memory_mib=512, seconds=240)
    machine = await wait_for_machine(ctx, guest)
    boot_seconds = time.monotonic() - started
    assert_inventory(machine, mac)
    assert machine.ip == "10.99.0.120"
    assert machine.name == "labnode"  # PTR record served by the site's DNS

    # The agent keeps polling: heartbeats move last_seen; then it obeys a poweroff.
    first_seen = machine.last_seen or 0.0
    deadline = time.monotonic() + 30
    while (ctx.fleet.get_machine(machine.id).last_seen or 0.0) <= first_seen:
        if time.monotonic() > deadline:
            pytest.fail(f"no heartbeat within 30 s\n{guest.diagnostics()}")
        await asyncio.sleep(0.5)
    commands = ctx.commands
    assert isinstance(commands, AgentCommands)
    commands.queue(machine.id, "poweroff")
    assert await wait_for_exit(guest, 30) == 0  # -no-reboot: QEMU ends when the guest does
    assert "server says poweroff" in guest.serial
    history = [h.message for h in await ctx.fleet.history(machine.id)]
    assert "Told the agent to poweroff" in history
    assert ctx.fleet.machine_count() == 1
    print(f"VM booted and checked in after {boot_seconds:.1f} s")


async def test_ipxe_follows_the_per_mac_script(
        tmp_path: Path, lab_net: LabNet, site_dhcp: Callable[..., Proc],
        discovery_image: DiscoveryImage, qemu: QemuFactory,
        lab_server: Callable[..., Awaitable[LabServer]]) -> None:
    """Real iPXE (ipxe.lkrn, no PXE needed) fetches /boot/<mac>.ipxe, which loads the kernel
    and the overlaid initrd over HTTP; the agent checks in. No PTR record: memorable name."""
    if not IPXE_LKRN.exists():
        pytest.fail(f"{IPXE_LKRN} is missing: apt-get install ipxe")
    mac = "52:54:00:d1:5c:02"
    site_dhcp(dns=True)  # no record for this guest: the PTR lookup gets NXDOMAIN
    ctx = lab_context(tmp_path, lab_net, discovery_image)
    ctx.bootlog = bootlog = RecordingBootLog(ctx.store)
    seen = bootlog.seen
    server = await lab_server(agent_app(ctx))
    script = f"dhcp && chain {server.url}/boot/${{mac}}.ipxe"
    guest = qemu.start("vm2", mac, kernel=IPXE_LKRN, append=script, disk_bytes=1 << 30,
                       smp=2, memory_mib=512, seconds=300)
    machine = await wait_for_machine(ctx, guest, 240)
    assert_inventory(machine, mac)
    assert machine.ip is not None and machine.ip.startswith("10.99.0.1")
    assert machine.name.count("-") == 2  # adjective-noun-NN: dnsmasq answers no PTR here
    assert [s for s in seen if s[1] != "heartbeat"][:4] == [
        (mac, "ipxe_script"), (mac, "kernel"), (mac, "initrd"), (mac, "checkin")]


async def test_agent_reports_the_bmc_address(
        tmp_path: Path, lab_net: LabNet, site_dhcp: Callable[..., Proc],
        discovery_image: DiscoveryImage, qemu: QemuFactory,
        bmc_sim: Callable[..., BmcSim],
        lab_server: Callable[..., Awaitable[LabServer]]) -> None:
    """QEMU's ipmi-bmc-extern + isa-ipmi-kcs connected to ipmi_sim, whose LAN channel says
    10.99.7.42 (DHCP): the IPMI drivers load from the stock initrd, the image's own ipmitool
    (with the libraries the builder resolved) reads `lan print`, the server stores it."""
    mac = "52:54:00:d1:5c:03"
    sim = bmc_sim("10.99.7.42", "52:54:00:BE:EF:03", "dhcp")
    site_dhcp(hosts=[DhcpHost(mac, "10.99.0.121", "bmcnode")])
    ctx = lab_context(tmp_path, lab_net, discovery_image)
    server = await lab_server(agent_app(ctx))
    initrd = await served_initrd(server, tmp_path)
    guest = qemu.start("vm3", mac, kernel=discovery_image.vmlinuz, initrd=initrd,
                       append=f"console=ttyS0 dragonfly.url={server.url} "
                              f"dragonfly.mac={mac} panic=30",
                       smp=1, memory_mib=512, seconds=240, extra=sim.qemu_args())
    started = time.monotonic()
    machine = await wait_for_machine(ctx, guest)
    print(f"VM with a BMC checked in after {time.monotonic() - started:.1f} s")
    assert machine.bmc == {"ip": "10.99.7.42", "interface": "ipmi0",
                           "mac": "52:54:00:be:ef:03", "ip_source": "dhcp"}, \
        guest.diagnostics()
    commands = ctx.commands
    assert isinstance(commands, AgentCommands)
    commands.queue(machine.id, "poweroff")
    assert await wait_for_exit(guest, 30) == 0


async def test_a_silent_bmc_does_not_hold_up_discovery(
        tmp_path: Path, lab_net: LabNet, site_dhcp: Callable[..., Proc],
        discovery_image: DiscoveryImage, qemu: QemuFactory,
        lab_server: Callable[..., Awaitable[LabServer]]) -> None:
    """The firmware announces a BMC (SMBIOS type 38, the KCS interface) but nothing answers
    behind it: the agent checks in anyway, within the usual time, with the BMC present and no
    address."""
    mac = "52:54:00:d1:5c:04"
    site_dhcp(hosts=[DhcpHost(mac, "10.99.0.122", "deadbmc")])
    ctx = lab_context(tmp_path, lab_net, discovery_image)
    server = await lab_server(agent_app(ctx))
    initrd = await served_initrd(server, tmp_path)
    nobody = ["-chardev", "socket,id=ipmi0,host=127.0.0.1,port=9,reconnect=10",
              "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
              "-device", "isa-ipmi-kcs,bmc=bmc0"]
    guest = qemu.start("vm4", mac, kernel=discovery_image.vmlinuz, initrd=initrd,
                       append=f"console=ttyS0 dragonfly.url={server.url} "
                              f"dragonfly.mac={mac} panic=30",
                       smp=1, memory_mib=512, seconds=240, extra=nobody)
    machine = await wait_for_machine(ctx, guest, 120)
    assert machine.bmc is not None and machine.bmc["ip"] == "", machine.bmc
