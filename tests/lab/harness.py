"""Building blocks of the lab: namespaces, a site DHCP server, QEMU guests, the discovery image,
and a minimal app serving the agent routes. The fixtures in ``conftest.py`` wrap these; the
pieces are importable on their own (``from tests.lab.harness import ...``) for tests that
compose them differently. See ``/work/shared/lab/README.md`` for what each peer does and why.

Everything here cleans up after itself: processes are started in their own session and killed
by process group, namespaces are deleted, /etc/netns/<ns> is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dragonfly.agent import routes as agent_routes
from dragonfly.agent.checkin import ResolveName
from dragonfly.boot.log import BootLog
from dragonfly.config import Config
from dragonfly.context import CTX, AppContext
from dragonfly.domain.events import EventHub
from dragonfly.domain.fleet import Fleet
from dragonfly.edge import routes as edge_routes
from dragonfly.http.errors import error_middleware
from dragonfly.store import SqliteStore, Store

ROOT = Path(__file__).resolve().parents[2]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
IPXE_LKRN = Path("/usr/lib/ipxe/ipxe.lkrn")
LAB_TOOLS = ("ip", "qemu-system-x86_64", "dnsmasq", "timeout", "dpkg-deb", "apt-get")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]|.\x08")


# --- availability --------------------------------------------------------------------------------

def require_lab(*tools: str) -> None:
    """Skip when DRAGONFLY_SKIP_LAB=1; otherwise FAIL (never skip) when the lab cannot run."""
    if os.environ.get("DRAGONFLY_SKIP_LAB") == "1":
        pytest.skip("lab tests disabled by DRAGONFLY_SKIP_LAB=1")
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces, tap devices); "
                    "set DRAGONFLY_SKIP_LAB=1 to skip them")
    missing = [t for t in (tools or LAB_TOOLS) if shutil.which(t) is None]
    if missing:
        pytest.fail(f"lab tools missing: {', '.join(missing)} (apt-get install qemu-system-x86 "
                    "ipxe-qemu ipxe dnsmasq-base ovmf busybox-static iproute2 cpio); "
                    "or set DRAGONFLY_SKIP_LAB=1")


def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True,
                          timeout=timeout)


# --- network namespaces --------------------------------------------------------------------------

_counter = itertools.count(1)
PREFIX = "dfl"


def unique_name(kind: str) -> str:
    """``dfl<pid>x<n><kind>``: unique per process, and the pid tells a stale one apart."""
    return f"{PREFIX}{os.getpid():x}x{next(_counter)}{kind}"


def sweep_stale_namespaces() -> None:
    """Delete lab namespaces left by test processes that no longer exist (a killed run)."""
    out = run("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"^{PREFIX}([0-9a-f]+)x\d+", name)
        if not match:
            continue
        pid = int(match.group(1), 16)
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            run("ip", "netns", "del", name, check=False)
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


@dataclass
class LabNet:
    """``ns`` holds the bridge ``br0`` (10.99.0.1/24, the server's side) and the taps the
    guests use; ``site_ns`` is a second host on the segment (10.99.0.2) for the site's DHCP."""

    ns: str
    site_ns: str
    taps: list[str]
    server_ip: str = "10.99.0.1"
    site_ip: str = "10.99.0.2"
    prefix: int = 24
    dhcp_range: tuple[str, str] = ("10.99.0.100", "10.99.0.150")
    _resolv: bool = False

    def exec_args(self, *args: str, ns: str | None = None) -> list[str]:
        return ["ip", "netns", "exec", ns or self.ns, *args]

    def use_site_dns(self) -> None:
        """Make processes started with ``ip netns exec <ns>`` resolve through the site's
        dnsmasq (ip-netns bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf), so
        no lookup ever leaves the namespaces."""
        d = Path("/etc/netns") / self.ns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(f"nameserver {self.site_ip}\noptions timeout:1\n")
        self._resolv = True


def create_lab_net(taps: int = 2) -> LabNet:
    sweep_stale_namespaces()
    net = LabNet(unique_name("p"), unique_name("s"), [f"tap{i}" for i in range(taps)])
    try:
        ns, site = net.ns, net.site_ns
        run("ip", "netns", "add", ns)
        run("ip", "netns", "add", site)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", site, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", ns, "link", "set", "br0", "type", "bridge", "stp_state", "0",
            "forward_delay", "0")
        run("ip", "-n", ns, "addr", "add", f"{net.server_ip}/{net.prefix}", "dev", "br0")
        run("ip", "-n", ns, "link", "set", "br0", "up")
        for tap in net.taps:
            run(*net.exec_args("ip", "tuntap", "add", "dev", tap, "mode", "tap"))
            run("ip", "-n", ns, "link", "set", tap, "master", "br0")
            run("ip", "-n", ns, "link", "set", tap, "up")
        # Both ends are created directly inside the namespaces: no name in the host's.
        run("ip", "link", "add", "veth-d", "netns", site, "type", "veth", "peer", "name",
            "veth-dbr", "netns", ns)
        run("ip", "-n", ns, "link", "set", "veth-dbr", "master", "br0")
        run("ip", "-n", ns, "link", "set", "veth-dbr", "up")
        run("ip", "-n", site, "addr", "add", f"{net.site_ip}/{net.prefix}", "dev", "veth-d")
        run("ip", "-n", site, "addr", "add", "fd99::2/64", "dev", "veth-d")
        run("ip", "-n", site, "link", "set", "veth-d", "up")
    except BaseException:
        delete_lab_net(net)
        raise
    return net


def delete_lab_net(net: LabNet) -> None:
    for name in (net.ns, net.site_ns):
        run("ip", "netns", "del", name, check=False)
        shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def socket_in_netns(ns: str, host: str, port: int = 0,
                    kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    """A socket bound inside namespace ``ns``, usable from this process.

    A short-lived thread enters the namespace (setns affects only the calling thread) and
    creates the socket there; a socket stays in the namespace it was created in, so the event
    loop can serve it like any other (``web.SockSite``, ``create_datagram_endpoint(sock=)``).
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with open(f"/run/netns/{ns}", "rb") as fh:
                if _libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            sock = socket.socket(socket.AF_INET, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
            sock.setblocking(False)
            result["sock"] = sock
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["sock"]
    return sock


# --- processes -----------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        """Terminate the whole process group (ip netns exec -> timeout -> qemu)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)

    def text(self) -> str:
        try:
            return clean_text(self.log.read_bytes())
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def start_process(name: str, args: Sequence[str], log: Path) -> Proc:
    with open(log, "wb") as out:
        popen = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, popen, log)


# --- the site's DHCP server ----------------------------------------------------------------------

@dataclass(frozen=True)
class DhcpHost:
    mac: str
    ip: str
    name: str = ""


def start_site_dhcp(net: LabNet, workdir: Path, hosts: Sequence[DhcpHost] = (),
                    dns: bool = False) -> Proc:
    """dnsmasq in ``site_ns`` as the site's plain DHCP server (no PXE options) with IPv6 router
    advertisements (without them every iPXE "Configuring" step waits ~16 s for SLAAC).

    ``dns=True`` also answers DNS on 10.99.0.2 for the domain ``lab.internal``: A and PTR
    records for ``hosts`` with names, NXDOMAIN for any other private address, nothing
    forwarded anywhere.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--interface=veth-d",
            "--bind-interfaces",
            f"--dhcp-range={net.dhcp_range[0]},{net.dhcp_range[1]},255.255.255.0,1h",
            f"--dhcp-leasefile={workdir / 'leases'}", "--dhcp-option=3", "--log-dhcp",
            "--dhcp-authoritative", "--user=root", "--enable-ra",
            "--dhcp-range=fd99::,ra-only,64", f"--pid-file={workdir / 'dnsmasq.pid'}"]
    if dns:
        args += ["--port=53", "--no-resolv", "--no-hosts", "--bogus-priv",
                 "--domain=lab.internal", "--local=/lab.internal/",
                 f"--dhcp-option=6,{net.site_ip}"]
        for host in hosts:
            if host.name:
                args.append(f"--host-record={host.name}.lab.internal,{host.name},{host.ip}")
    else:
        args += ["--port=0", "--dhcp-option=6"]
    for host in hosts:
        args.append(f"--dhcp-host={host.mac},{host.ip}" + (f",{host.name}" if host.name else ""))
    proc = start_process("dnsmasq", net.exec_args(*args, ns=net.site_ns),
                         workdir / "dnsmasq.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"dnsmasq exited: {proc.tail()}")
        if "started" in proc.text() or "DHCP, IP range" in proc.text():
            return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"dnsmasq did not start: {proc.tail()}")


# --- a BMC for a guest: OpenIPMI's ipmi_sim ------------------------------------------------------

LANCONTROL = """#!/bin/sh
# ipmi_sim's lan_config_program: "lancontrol DEVICE get PARM..." prints PARM:VALUE lines; the
# values are what `ipmitool lan print` shows as the BMC's own network settings.
shift
[ "$1" = get ] || exit 0
shift
for p in "$@"; do
    case $p in
        ip_addr) echo "ip_addr:{ip}" ;;
        ip_addr_src) echo "ip_addr_src:{source}" ;;
        mac_addr) echo "mac_addr:{mac}" ;;
        subnet_mask) echo "subnet_mask:255.255.255.0" ;;
        default_gw_ip_addr) echo "default_gw_ip_addr:0.0.0.0" ;;
        backup_gw_ip_addr) echo "backup_gw_ip_addr:0.0.0.0" ;;
        *_mac_addr) echo "$p:00:00:00:00:00:00" ;;
    esac
done
"""


@dataclass
class BmcSim:
    """ipmi_sim in the lab namespace, waiting for a guest on ``vm_port`` (loopback of the
    namespace). ``qemu_args()`` attach it to a guest as a KCS system interface, so the guest's
    ipmi_si driver and ipmitool talk to it; its LAN settings are ``ip``/``mac``/``source``."""

    proc: Proc
    vm_port: int
    ip: str
    mac: str
    source: str

    def qemu_args(self) -> list[str]:
        return ["-chardev", f"socket,id=ipmi0,host=127.0.0.1,port={self.vm_port},reconnect=10",
                "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                "-device", "isa-ipmi-kcs,bmc=bmc0"]

    def stop(self) -> None:
        self.proc.stop()


def start_bmc_sim(net: LabNet, workdir: Path, ip: str, mac: str, source: str = "static",
                  vm_port: int = 9002) -> BmcSim:
    """lan.conf: a LAN channel 1 on the namespace's loopback, the LAN settings from a
    lan_config_program, and ``serial 15 ... codec VM`` for QEMU's ipmi-bmc-extern."""
    workdir.mkdir(parents=True, exist_ok=True)
    lancontrol = workdir / "lancontrol.sh"
    lancontrol.write_text(LANCONTROL.format(ip=ip, mac=mac, source=source))
    lancontrol.chmod(0o755)
    (workdir / "lan.conf").write_text(f"""name "labbmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 623
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_callback none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "{lancontrol} lab0"
  endlan
  serial 15 127.0.0.1 {vm_port} codec VM
  user 2 true "admin" "password" admin 10 none md2 md5 straight
""")
    (workdir / "sim.emu").write_text(
        "mc_setbmc 0x20\n"
        "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
        "sel_enable 0x20 1000 0x0a\nmc_enable 0x20\n")
    (workdir / "state").mkdir(exist_ok=True)
    proc = start_process("ipmi_sim", net.exec_args(
        "ipmi_sim", "-c", str(workdir / "lan.conf"), "-f", str(workdir / "sim.emu"),
        "-s", str(workdir / "state"), "-n"), workdir / "ipmi_sim.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"ipmi_sim exited: {proc.tail()}")
        listening = run(*net.exec_args("ss", "-Hltn", f"sport = :{vm_port}"), check=False)
        if listening.stdout.strip():
            return BmcSim(proc, vm_port, ip, mac, source)
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"ipmi_sim did not listen on port {vm_port}: {proc.tail()}")


# --- QEMU guests ---------------------------------------------------------------------------------

def clean_text(raw: bytes) -> str:
    """Serial output without ANSI escapes and backspace overstrikes."""
    return _ANSI.sub(b"", raw).decode("utf-8", "replace")


@dataclass
class Guest:
    name: str
    mac: str
    proc: Proc  # its log is QEMU's own stdout/stderr
    workdir: Path

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def serial(self) -> str:
        try:
            return clean_text(self.serial_log.read_bytes())
        except FileNotFoundError:
            return ""

    def exited(self) -> int | None:
        return self.proc.popen.poll()

    def diagnostics(self, lines: int = 60) -> str:
        serial = "\n".join(self.serial.splitlines()[-lines:])
        return (f"--- {self.name}: qemu exit {self.exited()} ---\n{self.proc.tail(10)}\n"
                f"--- serial (last {lines} lines) ---\n{serial}")


@dataclass
class QemuFactory:
    """Starts guests on the lab's taps; every guest is killed at teardown."""

    net: LabNet
    workdir: Path
    guests: list[Guest] = field(default_factory=list)
    _taps: Iterator[str] | None = None

    def start(self, name: str, mac: str, *, firmware: str = "bios",
              kernel: Path | None = None, initrd: Path | None = None, append: str = "",
              disk_bytes: int | None = None, smp: int = 1, memory_mib: int = 512,
              seconds: int = 180, tap: str | None = None, ipxe_rom: bool | None = None,
              extra: Sequence[str] = (), disk: Path | None = None,
              nvram: Path | None = None, network_first: bool = True) -> Guest:
        """BIOS (SeaBIOS + the NIC's iPXE ROM) or UEFI (OVMF with its own EDK2 PXE: the NIC's
        ROM is dropped with romfile=, unless ``ipxe_rom=True``). Without ``kernel`` the guest
        network-boots (-boot n / bootindex=1). ``seconds`` bounds its life (timeout(1))."""
        if self._taps is None:
            self._taps = iter(self.net.taps)
        tap = tap or next(self._taps)
        work = self.workdir / name
        work.mkdir(parents=True, exist_ok=True)
        args = ["timeout", "--kill-after=5", str(seconds), "qemu-system-x86_64",
                "-accel", "tcg", "-m", str(memory_mib), "-smp", str(smp), "-nodefaults",
                "-vga", "none", "-display", "none", "-no-reboot", "-monitor", "none",
                "-serial", f"file:{work / 'serial.log'}",
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
        nic = f"virtio-net-pci,netdev=n0,mac={mac}"
        if firmware == "uefi":
            # ``nvram``: the variables of an earlier guest, kept as a machine keeps them across
            # a reboot (boot entries, BootNext); else a fresh copy.
            vars_copy = nvram or work / "OVMF_VARS.fd"
            if nvram is None:
                shutil.copyfile(OVMF_VARS, vars_copy)
            args += ["-machine", "q35,graphics=off",
                     "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
            # (QEMU's boot order, when given, is what OVMF boots by, whatever its NVRAM says;
            # without it OVMF follows its own BootOrder and BootNext.)
            if kernel is None and network_first:
                nic += ",bootindex=1"
        elif firmware == "bios":
            args += ["-machine", "pc,graphics=off"]
            if kernel is None:
                args += ["-boot", "n"]
        else:
            raise ValueError(f"firmware must be bios or uefi, not {firmware!r}")
        if not (firmware == "bios" if ipxe_rom is None else ipxe_rom):
            nic += ",romfile="
        args += ["-device", nic]
        if disk is None and disk_bytes is not None:
            disk = work / "disk.img"
            with open(disk, "wb") as fh:
                fh.truncate(disk_bytes)
        if disk is not None:  # ``disk``: a raw file kept across power cycles (a reboot)
            args += ["-drive", f"file={disk},if=virtio,format=raw"]
        if kernel is not None:
            args += ["-kernel", str(kernel)]
            if initrd is not None:
                args += ["-initrd", str(initrd)]
            if append:
                args += ["-append", append]
        args += list(extra)
        # QEMU writes the serial log itself; its own stdout/stderr go to qemu.log.
        proc = start_process(f"qemu-{name}", self.net.exec_args(*args), work / "qemu.log")
        guest = Guest(name, mac, proc, work)
        self.guests.append(guest)
        return guest

    def stop_all(self) -> None:
        for guest in self.guests:
            guest.proc.stop()


# --- the discovery image -------------------------------------------------------------------------

def lab_cache_dir() -> Path:
    env = os.environ.get("DRAGONFLY_LAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dragonfly" / "lab"


def build_script() -> Any:
    """The discovery image builder (`dragonfly discovery build`)."""
    from dragonfly.boot import discovery_image

    return discovery_image


@dataclass(frozen=True)
class DiscoveryImage:
    vmlinuz: Path
    initrd: Path  # the stock initrd, without the agent overlay
    kernel_release: str

    def install(self, state_dir: Path) -> Path:
        """Put the files where the server looks for them: <state_dir>/discovery/."""
        d = state_dir / "discovery"
        d.mkdir(parents=True, exist_ok=True)
        for src, name in ((self.vmlinuz, "vmlinuz"), (self.initrd, "initrd.img")):
            target = d / name
            if not target.exists():
                target.symlink_to(src)
        return d


def build_discovery_image() -> DiscoveryImage:
    """Built once from Debian packages (apt-get download, cached), reused by later runs."""
    script = build_script()
    cache = lab_cache_dir()
    try:
        result = script.build(cache / "image", cache / "debs")
    except script.BuildError as exc:
        pytest.fail(f"cannot build the discovery image offline: {exc}")
    return DiscoveryImage(result.vmlinuz, result.initrd, result.kernel_release)


# --- a minimal app serving the agent routes ------------------------------------------------------

def make_context(state_dir: Path, *, poll_seconds: int | None = None,
                 resolve_name: ResolveName | None = None,
                 bootlog: BootLog | None = None) -> AppContext:
    values = Config.defaults().as_dict()
    values["server.state_dir"] = str(state_dir)
    if poll_seconds is not None:
        values["agent.poll_seconds"] = poll_seconds
    store = SqliteStore(":memory:")
    ctx = AppContext(config=Config(values), store=store, fleet=Fleet(store),
                     events=EventHub(store), demo=False, bootlog=bootlog)
    if resolve_name is not None:
        ctx.resolve_name = resolve_name
    return ctx


class RecordingBootLog(BootLog):
    """The boot doctor, also keeping every (mac, step) it is told, in order."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.seen: list[tuple[str, str]] = []

    def record(self, mac: str, step: str, detail: dict[str, Any] | None = None) -> None:
        self.seen.append((mac, step))
        super().record(mac, step, detail)


def agent_app(ctx: AppContext) -> web.Application:
    """The agent and boot routes alone, behind the real error edge, with the context's store
    and fleet opened and closed with the app (what ``create_app`` does, minus the panel)."""
    app = web.Application(middlewares=[error_middleware])
    app[CTX] = ctx
    for route in [*agent_routes.api.routes, *edge_routes.api.routes]:
        app.router.add_route(route.method, route.path, route.handler)

    async def lifecycle(app: web.Application) -> Any:
        await ctx.store.open()
        await ctx.fleet.start()
        yield
        ctx.fleet.stop()
        await ctx.store.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def netns_reverse_lookup(ns: str) -> Callable[[str, float], Awaitable[str | None]]:
    """A PTR lookup made from inside ``ns`` (``getent hosts`` through the namespace's
    resolv.conf), for servers that run in this process but serve a namespace: the system
    resolver of the test process would ask the host's DNS, outside the lab."""
    async def lookup(ip: str, seconds: float) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, "getent", "hosts", ip,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), seconds + 2)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        parts = out.decode().split()
        return parts[1] if len(parts) > 1 else None
    return lookup


# --- a BMC whose chassis control drives a real QEMU guest ----------------------------------------
# (appended for the power tests: ipmi_sim answers IPMI over LAN at an address of the lab
# namespace, and its chassis_control program starts, stops and resets a PXE-booting QEMU)

def qemu_argv(workdir: Path, mac: str, *, tap: str, firmware: str = "bios",
              disk_bytes: int | None = None, smp: int = 1, memory_mib: int = 512,
              seconds: int = 600, ipxe_rom: bool | None = None,
              extra: Sequence[str] = (), disk: Path | None = None) -> list[str]:
    """The command line ``QemuFactory.start`` runs for a network-booting guest (same flags:
    TCG, -no-reboot, serial log in ``workdir/serial.log``, network first), without the
    ``ip netns exec`` prefix and without starting it: for a BMC that powers the guest on.
    ``disk``: an existing raw file as its disk (e.g. one a deployment wrote), instead of a new
    sparse one of ``disk_bytes``."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["timeout", "--kill-after=5", str(seconds), "qemu-system-x86_64",
            "-accel", "tcg", "-m", str(memory_mib), "-smp", str(smp), "-nodefaults",
            "-vga", "none", "-display", "none", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{workdir / 'serial.log'}",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    nic = f"virtio-net-pci,netdev=n0,mac={mac}"
    if firmware == "uefi":
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        args += ["-machine", "q35,graphics=off",
                 "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        nic += ",bootindex=1"
    elif firmware == "bios":
        args += ["-machine", "pc,graphics=off", "-boot", "n"]
    else:
        raise ValueError(f"firmware must be bios or uefi, not {firmware!r}")
    if not (firmware == "bios" if ipxe_rom is None else ipxe_rom):
        nic += ",romfile="
    args += ["-device", nic]
    if disk is None and disk_bytes is not None:
        disk = workdir / "disk.img"
        with open(disk, "wb") as fh:
            fh.truncate(disk_bytes)
    if disk is not None:
        args += ["-drive", f"file={disk},if=virtio,format=raw"]
    return args + list(extra)


# ipmi_sim's chassis_control program: "<prog> <device> get PARM..." prints PARM:VALUE lines,
# "<prog> <device> set PARM VALUE..." acts (OpenIPMI lanserv/bmc_chassis.c). PARM is power (0|1),
# reset (1), boot (none|pxe|default|cdrom|bios), shutdown (1) or identify. ipmi_sim waits for it
# (popen, reading to EOF), so QEMU runs in its own session with its output elsewhere. The guest
# is one process group (timeout -> qemu) whose id is in vm.pid; every call is logged, one line
# each, in chassis.log (never a password: ipmi_sim does not pass one).
CHASSIS_CONTROL = r"""#!/bin/sh
W=__WORKDIR__
echo "$(date +%s.%N) $*" >> "$W/chassis.log"
shift
op=$1
shift
running() {
    pid=$(cat "$W/vm.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    # a zombie is off; a reused pid is not our guest
    [ "$(sed 's/^.*) //' "/proc/$pid/stat" | cut -c1)" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$W/serial.log"
}
power_on() {
    running && return 0
    rm -f "$W/vm.pid"
    [ -f "$W/serial.log" ] && cat "$W/serial.log" >> "$W/serial.earlier.log"
    boot=$(cat "$W/boot" 2>/dev/null)
    echo "$(date +%s.%N) starting the guest (boot device: ${boot:-default})" >> "$W/chassis.log"
    rm -f "$W/boot"  # a one-time boot device is used up by this power-on
    setsid sh -c 'echo $$ > "$0/vm.pid.new" && mv "$0/vm.pid.new" "$0/vm.pid" && exec "$@"' \
        "$W" __ARGV__ </dev/null >>"$W/qemu.log" 2>&1 &
    i=0
    while [ ! -s "$W/vm.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    echo "$(date +%s.%N) guest started: pid $(cat "$W/vm.pid" 2>/dev/null)" >> "$W/chassis.log"
}
power_off() {
    running || return 0
    pid=$(cat "$W/vm.pid")
    kill -TERM -"$pid" 2>/dev/null
    i=0
    while running && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    running && kill -KILL -"$pid" 2>/dev/null
    echo "$(date +%s.%N) guest stopped: pid $pid" >> "$W/chassis.log"
}
case $op in
get)
    for p in "$@"; do
        case $p in
            power) if running; then echo "power:1"; else echo "power:0"; fi ;;
            boot) echo "boot:$(cat "$W/boot" 2>/dev/null || echo default)" ;;
            *) echo "cannot get $p"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -gt 1 ]; do
        p=$1; v=$2; shift 2
        case $p in
            power) if [ "$v" = 1 ]; then power_on; else power_off; fi ;;
            reset) power_off; power_on ;;
            shutdown) power_off ;;
            boot) if [ "$v" = pxe ]; then echo pxe > "$W/boot"; else rm -f "$W/boot"; fi ;;
            identify) shift ;;  # "identify INTERVAL FORCE"
            *) echo "cannot set $p"; exit 1 ;;
        esac
    done ;;
check) exit 1 ;;
*) echo "unknown operation $op"; exit 1 ;;
esac
exit 0
"""


@dataclass
class PoweredGuest:
    """The QEMU guest a ``BmcVm`` powers: on while its process group (id in vm.pid) runs."""

    workdir: Path
    mac: str

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def serial(self) -> str:
        """Serial output of every power-on so far (earlier boots first)."""
        text = ""
        for log in (self.workdir / "serial.earlier.log", self.serial_log):
            with contextlib.suppress(FileNotFoundError):
                text += clean_text(log.read_bytes())
        return text

    @property
    def chassis_log(self) -> str:
        try:
            return (self.workdir / "chassis.log").read_text()
        except FileNotFoundError:
            return ""

    def pid(self) -> int | None:
        try:
            return int((self.workdir / "vm.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and \
            str(self.serial_log).encode() in cmdline

    def power_ons(self) -> int:
        return self.chassis_log.count("starting the guest")

    def kill(self) -> None:
        """Kill the guest's process group, and anything else still running with this guest's
        files on its command line (a guest started while the BMC was being stopped)."""
        pid = self.pid()
        if pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
                deadline = time.monotonic() + 3
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.1)
        marker = str(self.serial_log).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def diagnostics(self, lines: int = 60) -> str:
        serial = "\n".join(self.serial.splitlines()[-lines:])
        try:
            qemu = "\n".join((self.workdir / "qemu.log").read_text().splitlines()[-10:])
        except FileNotFoundError:
            qemu = "(never started)"
        return (f"--- guest {self.mac}: running={self.running()} ---\n"
                f"--- chassis control ---\n{self.chassis_log[-3000:]}\n"
                f"--- qemu ---\n{qemu}\n--- serial (last {lines} lines) ---\n{serial}")


@dataclass
class BmcVm:
    """ipmi_sim in the lab namespace answering IPMI over LAN on ``address``:``port`` (an
    address of its own on the lab bridge), whose chassis control powers ``guest``. QEMU's
    ipmi-bmc-extern connects the guest back to it (the VM codec on ``vm_port``), so the guest
    sees a KCS BMC whose LAN settings say ``address`` (source static, MAC ``bmc_mac``)."""

    proc: Proc
    guest: PoweredGuest
    net: LabNet
    address: str
    port: int
    user: str
    password: str
    bmc_mac: str
    vm_port: int

    def ipmitool(self, *args: str, password: str | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """ipmitool over lanplus from the lab namespace (cipher suite 3: no 10 s probe); the
        password goes through the environment (-E), not the command line."""
        env = {**os.environ, "IPMI_PASSWORD": self.password if password is None else password}
        return subprocess.run(
            self.net.exec_args("ipmitool", "-I", "lanplus", "-C", "3", "-H", self.address,
                               "-p", str(self.port), "-U", self.user, "-E", *args),
            capture_output=True, text=True, timeout=timeout, env=env)

    def power_status(self) -> str:
        """"on" or "off" as the BMC itself says (ipmitool chassis power status)."""
        out = self.ipmitool("chassis", "power", "status")
        if out.returncode != 0:
            raise RuntimeError(f"ipmitool failed ({out.returncode}): {out.stderr}")
        return out.stdout.strip().rsplit(" ", 1)[-1]

    def logs(self) -> list[Path]:
        """Every log file this BMC and its guest wrote."""
        return sorted(p for p in self.proc.log.parent.rglob("*.log") if p.is_file())

    def stop(self) -> None:
        self.proc.stop()
        self.guest.kill()


def start_bmc_vm(net: LabNet, workdir: Path, *, address: str, mac: str, port: int = 623,
                 user: str = "admin", password: str = "lab-bmc-secret",
                 bmc_mac: str = "52:54:00:be:ef:10", vm_port: int = 9102,
                 tap: str | None = None, firmware: str = "bios",
                 disk_bytes: int | None = 1 << 30, smp: int = 1, memory_mib: int = 512,
                 seconds: int = 900, disk: Path | None = None) -> BmcVm:
    """ipmi_sim with a LAN channel on ``address`` (added to the lab bridge as a /32), a
    lan_config_program that reports ``address``, a chassis_control program that starts and
    stops a PXE-booting guest (``qemu_argv`` plus the KCS BMC on ``vm_port``), and user
    ``user``/``password`` (admin). The guest is off until someone powers it on. ``disk``: the
    guest's disk is this existing raw file (say, a deployed machine's), not a new blank one."""
    import shlex

    workdir.mkdir(parents=True, exist_ok=True)
    guest_dir = workdir / "guest"
    run("ip", "-n", net.ns, "addr", "add", f"{address}/32", "dev", "br0")
    argv = qemu_argv(guest_dir, mac, tap=tap or net.taps[-1], firmware=firmware,
                     disk_bytes=disk_bytes, smp=smp, memory_mib=memory_mib, seconds=seconds,
                     disk=disk,
                     extra=["-chardev",
                            f"socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect=10",
                            "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                            "-device", "isa-ipmi-kcs,bmc=bmc0"])
    chassis = workdir / "chassis-control.sh"
    chassis.write_text(CHASSIS_CONTROL.replace("__WORKDIR__", shlex.quote(str(guest_dir)))
                       .replace("__ARGV__", shlex.join(argv)))
    chassis.chmod(0o755)
    lancontrol = workdir / "lancontrol.sh"
    lancontrol.write_text(LANCONTROL.format(ip=address, mac=bmc_mac, source="static"))
    lancontrol.chmod(0o755)
    for text in (user, password):
        if '"' in text or "\n" in text:
            raise ValueError("ipmi_sim's lan.conf cannot quote a double quote or a newline")
    (workdir / "lan.conf").write_text(f"""name "labpower"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_callback none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "{lancontrol} lab0"
  endlan
  chassis_control "{chassis} 0x20"
  serial 15 127.0.0.1 {vm_port} codec VM
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
""")
    (workdir / "sim.emu").write_text(
        "mc_setbmc 0x20\n"
        "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
        "sel_enable 0x20 1000 0x0a\nmc_enable 0x20\n")
    (workdir / "state").mkdir(exist_ok=True)
    proc = start_process("ipmi_sim", net.exec_args(
        "ipmi_sim", "-c", str(workdir / "lan.conf"), "-f", str(workdir / "sim.emu"),
        "-s", str(workdir / "state"), "-n"), workdir / "ipmi_sim.log")
    bmc = BmcVm(proc, PoweredGuest(guest_dir, mac), net, address, port, user, password,
                bmc_mac, vm_port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"ipmi_sim exited: {proc.tail()}")
        listening = run(*net.exec_args("ss", "-Hltn", f"sport = :{vm_port}"), check=False)
        if listening.stdout.strip():
            return bmc
        time.sleep(0.1)
    bmc.stop()
    raise RuntimeError(f"ipmi_sim did not listen on port {vm_port}: {proc.tail()}")
