"""Pre-flight checks for ``dragonfly install``: each returns a sentence saying what is wrong and
what to do, or None. Plus the small facts about this machine they need (interfaces, addresses,
default route, the interpreter the service would run)."""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import socket
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dragonfly.boot.loaders import LoaderSpec, Manifest, bundled_root, parse_manifest
from dragonfly.edge.dhcp import netif
from dragonfly.ops.plan import Runner
from dragonfly.ops.status import read_listeners

# systemd's default PATH for services: what `#!/usr/bin/env python3` resolves against.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIOCGIFADDR = 0x8915

DhcpProbe = Callable[[str, float], list[str]]


@dataclass(frozen=True)
class Problem:
    message: str
    fatal: bool = True


def list_interfaces(sysfs: Path = Path("/sys")) -> list[str]:
    try:
        return sorted(p.name for p in (sysfs / "class/net").iterdir())
    except OSError:
        return []


def interface_ipv4(name: str) -> str | None:
    """The first IPv4 address of interface ``name``, or None."""
    found = netif.interface_ipv4(name)
    return found[0] if found is not None else None


def interface_problem(name: str, sysfs: Path = Path("/sys")) -> str | None:
    if (sysfs / "class/net" / name).exists():
        return None
    known = ", ".join(list_interfaces(sysfs)) or "none found"
    return (f"there is no network interface {name!r} on this machine (interfaces: {known}); "
            "pass the one facing the machines to provision with --interface")


def port_problem(host: str, port: int, proc: Path = Path("/proc")) -> str | None:
    """Whether the panel could listen on ``host``:``port``; names the process holding it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"address {host} (server.bind) is not on this machine"
            if exc.errno != errno.EADDRINUSE:
                return None  # e.g. EACCES for a non-root dry run: the service has the capability
        else:
            return None
    holders = [str(x) for x in read_listeners(proc) if x.proto == "tcp" and x.port == port]
    who = f" ({'; '.join(holders)})" if holders else ""
    return (f"TCP port {port} is already in use{who}: stop that program or choose another "
            "port with --port")


ZIPAPP_IPXE = "site-packages/dragonfly/ipxe/"  # the package dragonfly.ipxe inside the zipapp


def zipapp_build_record(binary: Path) -> dict[str, object]:
    """The build record (Python version, architecture) inside a Dragonfly zipapp."""
    try:
        with zipfile.ZipFile(binary) as zf:
            record = json.loads(zf.read("site-packages/dragonfly/_build.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}
    return record if isinstance(record, dict) else {}


def binary_problem(binary: Path | None) -> str | None:
    if binary is None:
        return ("install copies the Dragonfly zipapp, and this is not running from one. Build it "
                "with `python3 build_zipapp.py` and run `sudo ./dist/dragonfly install`, or pass "
                "--binary FILE")
    try:
        with zipfile.ZipFile(binary) as zf:
            zf.getinfo("environment.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return f"{binary} is not a Dragonfly zipapp (built by build_zipapp.py)"
    return None


def missing_loaders(binary: Path, override_dir: Path) -> list[LoaderSpec]:
    """The iPXE loaders a PXE boot needs that neither the zipapp ``binary`` carries nor
    ``override_dir`` (the target's <state_dir>/loaders/, which the server prefers) holds.

    Needed are the manifest's loaders that a Debian package provides, i.e. the ones every build
    bundles (arm64 snp.efi never is). The manifest is the binary's own: it is what the
    installed server will serve from."""
    with zipfile.ZipFile(binary) as zf:
        names = set(zf.namelist())
        try:
            text: str | None = zf.read(ZIPAPP_IPXE + "manifest.toml").decode("utf-8")
        except KeyError:
            text = None
    if text is None:  # a build older than the loader manifest: judge it by this one
        bundled = bundled_root()
        manifest = (parse_manifest((bundled / "manifest.toml").read_text(encoding="utf-8"))
                    if bundled is not None else Manifest(()))
    else:
        manifest = parse_manifest(text)
    return [spec for spec in manifest.loaders if spec.debian_path
            and f"{ZIPAPP_IPXE}loaders/{spec.filename}" not in names
            and not (override_dir / spec.filename).is_file()]


def loaders_problem(binary: Path, override_dir: Path) -> str | None:
    """Refuse a zipapp built without the iPXE loaders (``build_zipapp.py --no-loaders``, or an
    older build on a machine without Debian's ipxe package): installed, it could not PXE-boot
    anything. Accepted when the target's override directory already holds what it lacks."""
    try:
        missing = missing_loaders(binary, override_dir)
    except (OSError, UnicodeDecodeError, ValueError, zipfile.BadZipFile) as exc:
        return f"cannot read the iPXE loader manifest inside {binary}: {exc}"
    if not missing:
        return None
    names = ", ".join(spec.filename for spec in missing)
    sources = " ".join(spec.debian_path for spec in missing)
    return (f"{binary} was built without the iPXE boot loaders ({names}), so the installed "
            "appliance could not PXE-boot any machine. Rebuild it with `python3 build_zipapp.py` "
            "on a machine that has Debian's ipxe package or can reach the Debian archive (the "
            "build runs `apt-get download ipxe` itself), or put the loaders where the server "
            f"looks first: `apt-get install ipxe && mkdir -p {override_dir} && cp {sources} "
            f"{override_dir}/`; then run the install again")


def service_interpreter(binary: Path, root: Path) -> str | None:
    """The interpreter the service would start ``binary`` with (its shebang, on systemd's PATH)."""
    try:
        with open(binary, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if words[0].endswith("/env") and len(words) > 1:
        path = ":".join(str(root / p.lstrip("/")) for p in SYSTEMD_PATH.split(":"))
        return shutil.which(words[1], path=path)
    return str(root / words[0].lstrip("/"))


def service_python_problem(binary: Path, root: Path, runner: Runner) -> str | None:
    """Can the service's interpreter run this build (same CPython minor version)?"""
    record = zipapp_build_record(binary)
    want = record.get("python")
    interpreter = service_interpreter(binary, root)
    if interpreter is None:
        return (f"{binary} starts with `#!/usr/bin/env python3` and systemd finds no python3 on "
                f"its PATH ({SYSTEMD_PATH}): install Debian's python3 (3.11)")
    if not isinstance(want, list) or len(want) != 2:
        return None
    result = runner([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                    timeout=20)
    have = result.stdout.strip()
    wanted = f"{want[0]}.{want[1]}"
    if not result.ok or have != wanted:
        return (f"the service would run this Dragonfly with {interpreter} (Python "
                f"{have or 'unknown'}), but it was built for CPython {wanted}: install "
                f"python{wanted} as python3, or build the zipapp with the Python this machine has")
    return None


def probe_dhcp_servers(interface: str, timeout: float = 5.0) -> list[str]:
    """Addresses of DHCP servers answering on ``interface``: the DHCP service's own probe
    (blocking wrapper: install runs before any event loop)."""
    from dragonfly.edge.dhcp.probe import probe_dhcp_servers as probe

    # Servers often ping an address before offering it (dnsmasq ~3 s): never listen less.
    offers = asyncio.run(probe(interface, listen_for=max(timeout, 5.0)))
    return sorted({offer.server_id or offer.source for offer in offers})


def dhcp_problem(interface: str, probe: DhcpProbe, timeout: float = 3.0) -> Problem | None:
    """Full DHCP mode on a network that already has a DHCP server would fight it for clients."""
    try:
        servers = probe(interface, timeout)
    except OSError as exc:
        return Problem(f"could not check {interface} for other DHCP servers ({exc}); make sure "
                       "this network has none before using --dhcp-mode full", fatal=False)
    if not servers:
        return None
    return Problem(f"another DHCP server already answers on {interface}: "
                   f"{', '.join(servers)}. --dhcp-mode full is for an isolated network; beside an "
                   "existing DHCP server use --dhcp-mode auto (proxyDHCP answers only PXE "
                   "clients and hands out no addresses)")
