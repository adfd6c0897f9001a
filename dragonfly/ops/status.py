"""``dragonfly status`` (and bare ``dragonfly`` once installed): what is here and is it up.

Everything is read, nothing is changed: the config file, the install manifest, systemd's view of
the unit, what is actually listening (``/proc/net``, owners from ``/proc/*/fd``), the running
server's version over HTTP, and machines by state from the database opened read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sqlite3
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dragonfly import __version__
from dragonfly.config import Config, config_path_from_env
from dragonfly.domain.fleet import MACHINE
from dragonfly.errors import DragonflyError
from dragonfly.ops.kubecheck import ClusterCheck, check_cluster
from dragonfly.ops.plan import Runner, read_manifest, run_command
from dragonfly.store import db_path as db_path_of
from dragonfly.store import open_store

BINARY = "/usr/local/bin/dragonfly"
UNIT = "/etc/systemd/system/dragonfly.service"
SERVICE = "dragonfly.service"

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True)
class Listener:
    proto: str  # "tcp" or "udp"
    address: str
    port: int
    inode: int
    pids: tuple[int, ...] = ()
    programs: tuple[str, ...] = ()

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        who = ", ".join(f"{name} ({pid})" for pid, name in zip(self.pids, self.programs,
                                                              strict=True))
        return f"{self.proto} {host}:{self.port}" + (f" by {who}" if who else "")


def _decode_address(text: str) -> tuple[str, int]:
    """``0100007F:0BB8`` (or 32 hex digits for IPv6) from /proc/net: words in host order."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        address = ".".join(str(b) for b in words)
    else:
        ip6 = ipaddress.IPv6Address(words)
        address = str(ip6.ipv4_mapped or ip6)
    return address, int(port_hex, 16)


def socket_owners(proc: Path = Path("/proc")) -> dict[int, list[tuple[int, str]]]:
    """Socket inode -> [(pid, program)], for the processes this user may look into."""
    owners: dict[int, list[tuple[int, str]]] = {}
    try:
        pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = list(fd_dir.iterdir())
            name = (proc / str(pid) / "comm").read_text().strip()
        except OSError:
            continue
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if (pid, name) not in owners.get(inode, []):
                    owners.setdefault(inode, []).append((pid, name))
    return owners


def read_listeners(proc: Path = Path("/proc"), with_owners: bool = True) -> list[Listener]:
    """TCP sockets listening and UDP sockets bound (unconnected) in this network namespace."""
    owners = socket_owners(proc) if with_owners else {}
    found: list[Listener] = []
    for table, proto, state in (("tcp", "tcp", _TCP_LISTEN), ("tcp6", "tcp", _TCP_LISTEN),
                                ("udp", "udp", _UDP_UNCONNECTED),
                                ("udp6", "udp", _UDP_UNCONNECTED)):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != state:
                continue
            try:
                address, port = _decode_address(cols[1])
                inode = int(cols[9])
            except ValueError:
                continue
            who = owners.get(inode, [])
            found.append(Listener(proto, address, port, inode, tuple(p for p, _ in who),
                                  tuple(n for _, n in who)))
    return found


@dataclass
class ServiceCheck:
    """One port Dragonfly (or Tinkerbell) should have open, and who actually has it."""

    name: str
    proto: str
    port: int
    expected: bool
    listeners: list[str] = field(default_factory=list)


def expected_services(config: Config) -> list[ServiceCheck]:
    dhcp = config["boot.dhcp_mode"] != "off"
    ours = config["server.mode"] != "tinkerbell"  # in Tinkerbell mode smee serves DHCP/TFTP
    return [ServiceCheck("panel, API and boot HTTP", "tcp", config["server.port"], True),
            ServiceCheck("DHCP / proxyDHCP", "udp", 67, ours and dhcp),
            ServiceCheck("proxyDHCP (PXE boot server)", "udp", 4011, ours and dhcp),
            # The boot stack starts TFTP only together with DHCP (bootstack.build_boot_stack).
            ServiceCheck("TFTP", "udp", 69, ours and dhcp)]


@dataclass
class Status:
    installed: bool
    config_path: Path
    version: str = __version__
    installed_version: str = ""
    running_version: str = ""
    binary: bool = False
    unit: bool = False
    enabled: str = "unknown"
    service: str = "unknown"
    mode: str = ""
    url: str = ""
    state_dir: str = ""
    services: list[ServiceCheck] = field(default_factory=list)
    machines: dict[str, int] = field(default_factory=dict)
    cluster: str = ""  # Tinkerbell mode: whether Dragonfly reaches its cluster
    backend: str = ""  # Tinkerbell mode: what the running server's backend last saw
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config_path"] = str(self.config_path)
        return data


def _systemctl(runner: Runner, *args: str) -> str:
    result = runner(["systemctl", *args, SERVICE], timeout=10)
    if result.returncode == 127:
        return "no systemd"
    return result.stdout.strip() or "unknown"


def machine_counts(state_dir: Path) -> dict[str, int]:
    """Machines by state, from the installation's store opened read-only: status must never
    create, migrate or change the database."""
    async def count() -> dict[str, int]:
        store = open_store(state_dir, readonly=True)
        await store.open()
        try:
            docs = await store.list(MACHINE)
        finally:
            await store.close()
        return dict(Counter(str(doc.data.get("state")) for doc in docs))

    return asyncio.run(count())


def backend_state(state_dir: Path) -> dict[str, Any] | None:
    """Tinkerbell mode: the cluster state the running server's backend last stored (it
    cannot be asked: status reads, it never calls the server's API with credentials)."""
    async def read() -> dict[str, Any] | None:
        store = open_store(state_dir, readonly=True)
        await store.open()
        try:
            doc = await store.get("tinkerbell_cluster", "state")
        finally:
            await store.close()
        return dict(doc.data) if doc is not None else None

    return asyncio.run(read())


def fetch_version(url: str) -> str:
    """The version a running server reports at ``url``/api/version; "" when it does not answer."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/version", timeout=2) as response:
            return str(json.loads(response.read()).get("version", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def collect_status(config_path: Path, *, root: Path = Path("/"), proc: Path = Path("/proc"),
                   runner: Runner | None = None,
                   version_of: Callable[[str], str] = fetch_version,
                   cluster_check: Callable[[Path, str], ClusterCheck] = check_cluster
                   ) -> Status:
    live = root == Path("/")
    status = Status(installed=config_path.exists(), config_path=config_path)
    status.binary = (root / BINARY.lstrip("/")).exists()
    status.unit = (root / UNIT.lstrip("/")).exists()
    status.installed_version = str(read_manifest(root).get("version", ""))
    if live or runner is not None:
        run = runner or run_command
        status.service = _systemctl(run, "is-active")
        status.enabled = _systemctl(run, "is-enabled")
    else:
        status.service = status.enabled = "not checked (--root)"
    if not status.installed:
        return status
    try:
        config = Config.load(config_path)
    except DragonflyError as exc:
        status.problems.append(exc.message)
        return status
    status.mode = config["server.mode"]
    bind, port = config["server.bind"], config["server.port"]
    local = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    local_url = f"http://{'[' + local + ']' if ':' in local else local}:{port}/"
    status.url = config["server.public_url"] or local_url
    status.running_version = version_of(local_url)
    listeners = read_listeners(proc)
    for check in expected_services(config):
        check.listeners = [str(x) for x in listeners
                           if x.proto == check.proto and x.port == check.port]
        if check.expected or check.listeners:
            status.services.append(check)
    status.state_dir = str(config.state_dir)
    state_dir = root / str(config.state_dir).lstrip("/")
    db_path = db_path_of(state_dir)
    if db_path.exists():
        try:
            status.machines = machine_counts(state_dir)
        except sqlite3.Error as exc:
            status.problems.append(f"cannot read {db_path}: {exc}")
    else:
        status.problems.append(f"no database yet at {db_path} (has the service started?)")
    if status.mode == "tinkerbell":
        if live:
            reach = cluster_check(Path(config["tinkerbell.kubeconfig"]),
                                  config["tinkerbell.namespace"])
            status.cluster = reach.detail
            if not reach.ok:
                status.problems.append(f"Tinkerbell cluster: {reach.detail}")
        else:
            status.cluster = "not checked (--root: the cluster is that system's)"
        if db_path.exists():
            try:
                seen = backend_state(state_dir)
            except sqlite3.Error:
                seen = None
            if seen is None:
                status.backend = "no state stored yet (has the service started?)"
            else:
                status.backend = f"{seen.get('state')}: {seen.get('message')}"
                if seen.get("state") != "ok":
                    status.problems.append(f"Tinkerbell backend: {seen.get('message')}")
    if not status.binary:
        status.problems.append(f"{BINARY} is missing: re-run `sudo dragonfly install`")
    if not status.unit:
        status.problems.append(f"{UNIT} is missing: re-run `sudo dragonfly install`")
    return status


def format_status(status: Status) -> str:
    if not status.installed:
        return (f"Dragonfly {status.version} is not installed (no {status.config_path}).\n"
                "Run `dragonfly` to try the demo, or `sudo dragonfly install` to install.\n")
    running = status.running_version or "not answering"
    lines = [f"Dragonfly {status.version}",
             f"  config:    {status.config_path}",
             f"  installed: {status.installed_version or 'unknown (no install manifest)'}"
             f"{'' if status.binary else ' (binary missing)'}",
             f"  service:   {status.service}, {status.enabled} at boot"
             f"{'' if status.unit else ' (unit missing)'}",
             f"  running:   {running}",
             f"  mode:      {status.mode}",
             f"  panel:     {status.url}",
             f"  state:     {status.state_dir}"]
    if status.cluster:
        lines.append(f"  cluster:   {status.cluster}")
    if status.backend:
        lines.append(f"  backend:   {status.backend}")
    lines.append("  listening:")
    for check in status.services:
        where = "; ".join(check.listeners) if check.listeners else "nothing listening"
        flag = "" if check.expected else " (not expected in this mode)"
        lines.append(f"    {check.proto}/{check.port:<5} {check.name}: {where}{flag}")
    total = sum(status.machines.values())
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(status.machines.items())) or "none yet"
    lines.append(f"  machines:  {total} ({by_state})")
    lines += [f"  problem:   {p}" for p in status.problems]
    return "\n".join(lines) + "\n"


# --- the command (cli.py wires these in) ------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="look at an installation under this directory (default /)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    root: Path = getattr(args, "root", None) or Path("/")
    explicit = getattr(args, "config", None)
    path = explicit or (root / "etc/dragonfly/dragonfly.toml" if root != Path("/")
                        else config_path_from_env())
    status = collect_status(path, root=root)
    if getattr(args, "json", False):
        out.write(json.dumps(status.as_dict(), indent=2) + "\n")
    else:
        out.write(format_status(status))
    return 0
