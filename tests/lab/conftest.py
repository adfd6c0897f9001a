"""Lab fixtures: real peers in network namespaces this test run creates and always deletes.

- ``lab_net``: namespace ``ns`` with bridge ``br0`` (10.99.0.1/24, where the server listens),
  taps ``tap0``/``tap1`` for guests, and a second namespace ``site_ns`` on the same segment
  (10.99.0.2) for the site's DHCP server. Names are unique per run (``dfl<pid>x<n>p``);
  namespaces of dead earlier runs are swept first. Both namespaces (and /etc/netns/<ns>) are
  deleted at teardown, after every process in them was killed.
- ``site_dhcp``: a factory starting dnsmasq as the site's plain DHCP server (no PXE options,
  IPv6 RA so iPXE does not stall), optionally with DNS (A/PTR for the given hosts, domain
  ``lab.internal``, nothing forwarded). ``site_dhcp(hosts=[DhcpHost(mac, ip, name)], dns=True)``.
- ``bmc_sim``: a factory starting OpenIPMI's ipmi_sim in ``ns`` as a guest's BMC:
  ``sim = bmc_sim(ip, mac, source)``, then ``qemu.start(..., extra=sim.qemu_args())``; the
  guest sees a KCS interface, and `ipmitool lan print` there shows ``ip``/``mac``/``source``.
- ``qemu``: a ``QemuFactory``; ``qemu.start(name, mac, firmware="bios"|"uefi", kernel=...,
  initrd=..., append=..., disk_bytes=1 << 30, smp=2, memory_mib=512, seconds=180)``. Always
  under ``timeout``, TCG, serial log in ``guest.serial``; every guest is killed at teardown.
- ``discovery_image`` (session): the discovery kernel and stock initrd built offline from Debian
  packages by scripts/build_discovery_image.py, cached in $DRAGONFLY_LAB_CACHE (default
  ~/.cache/dragonfly/lab) so later runs download and build nothing.
- ``lab_server``: a factory serving an aiohttp app inside ``lab_net.ns`` on 10.99.0.1:<free
  port> (and on 127.0.0.1:<free port> for the test itself), via a socket created in the
  namespace by ``harness.socket_in_netns``.

Every fixture calls ``require_lab()``: with DRAGONFLY_SKIP_LAB=1 the tests skip; otherwise a
missing tool or privilege makes them FAIL. Mark lab tests with ``@pytest.mark.lab``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.lab.harness import (
    BmcSim,
    DhcpHost,
    DiscoveryImage,
    LabNet,
    Proc,
    QemuFactory,
    build_discovery_image,
    create_lab_net,
    delete_lab_net,
    require_lab,
    socket_in_netns,
    start_bmc_sim,
    start_site_dhcp,
)


@pytest.fixture(scope="session")
def lab_tools() -> None:
    require_lab()


@pytest.fixture(scope="session")
def discovery_image(lab_tools: None) -> DiscoveryImage:
    return build_discovery_image()


@pytest.fixture
def lab_net(lab_tools: None) -> Iterator[LabNet]:
    net = create_lab_net(taps=2)
    try:
        yield net
    finally:
        delete_lab_net(net)


@pytest.fixture
def site_dhcp(lab_net: LabNet, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(hosts: Sequence[DhcpHost] = (), dns: bool = False) -> Proc:
        if dns:
            lab_net.use_site_dns()
        proc = start_site_dhcp(lab_net, tmp_path / f"dnsmasq{len(started)}", hosts, dns)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def bmc_sim(lab_net: LabNet, tmp_path: Path) -> Iterator[Callable[..., BmcSim]]:
    started: list[BmcSim] = []

    def start(ip: str, mac: str, source: str = "static") -> BmcSim:
        require_lab("ipmi_sim", "ss")
        sim = start_bmc_sim(lab_net, tmp_path / f"bmc{len(started)}", ip, mac, source,
                            vm_port=9002 + len(started))
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture
def qemu(lab_net: LabNet, tmp_path: Path) -> Iterator[QemuFactory]:
    factory = QemuFactory(lab_net, tmp_path / "guests")
    try:
        yield factory
    finally:
        factory.stop_all()


@dataclass
class LabServer:
    url: str  # what guests use: http://10.99.0.1:<port>
    local_url: str  # what the test uses: http://127.0.0.1:<port>
    runner: web.AppRunner


@pytest.fixture
async def lab_server(lab_net: LabNet) -> AsyncIterator[Callable[[web.Application],
                                                                Awaitable[LabServer]]]:
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> LabServer:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        sock = socket_in_netns(lab_net.ns, lab_net.server_ip, 0)
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        local = socket.socket()
        local.bind(("127.0.0.1", 0))
        local.listen(128)
        local.setblocking(False)
        await web.SockSite(runner, local).start()
        return LabServer(f"http://{lab_net.server_ip}:{port}",
                         f"http://127.0.0.1:{local.getsockname()[1]}", runner)

    try:
        yield serve
    finally:
        for runner in runners:
            await runner.cleanup()


# --- the Debian 12 deployment image --------------------------------------------------------------
# (appended: tests/lab/os_image.py builds it; imported here so existing imports stay untouched)
from tests.lab import os_image as os_image_builder  # noqa: E402


@pytest.fixture(scope="session")
def os_image(lab_tools: None) -> os_image_builder.OsImage:
    """A real, bootable Debian 12 disk image (GPT: BIOS boot, ESP, root "root"; GRUB for BIOS
    and UEFI; cloud-init with NoCloud) as raw, raw.xz and qcow2 with SHA256SUMS, built offline
    with mmdebstrap once and cached in $DRAGONFLY_LAB_CACHE/os-image/ (~4 min the first time).
    The files are shared: copy before writing (``os_image_builder.copy_disk``)."""
    try:
        return os_image_builder.build_os_image()
    except os_image_builder.OsImageError as exc:
        pytest.fail(f"cannot build the Debian OS image offline: {exc}")


# --- a BMC that powers a real guest (appended for tests/lab/test_lab_power.py) -------------------
from tests.lab.harness import BmcVm, start_bmc_vm  # noqa: E402


@pytest.fixture
def bmc_vm(lab_net: LabNet, tmp_path: Path) -> Iterator[Callable[..., BmcVm]]:
    """``bmc = bmc_vm(address="10.99.0.60", mac=..., password=...)``: OpenIPMI's ipmi_sim
    listening for IPMI over LAN on ``address``:623 in ``lab_net.ns`` (the address is added to
    the bridge), with a chassis_control program that powers a PXE-booting QEMU guest on the
    last tap (on: starts it, off: stops it, reset: both, boot pxe: recorded, used once). The
    guest is off at first; its KCS BMC reports ``address``. At teardown ipmi_sim is stopped
    and the guest's process group killed, whoever started it. See ``harness.start_bmc_vm``."""
    started: list[BmcVm] = []

    def start(address: str, mac: str, **options: object) -> BmcVm:
        require_lab("ipmi_sim", "ipmitool", "ss", "qemu-system-x86_64", "timeout", "setsid")
        bmc = start_bmc_vm(lab_net, tmp_path / f"bmcvm{len(started)}", address=address,
                           mac=mac, vm_port=9102 + len(started), **options)  # type: ignore[arg-type]
        started.append(bmc)
        return bmc

    try:
        yield start
    finally:
        for bmc in started:
            bmc.stop()
