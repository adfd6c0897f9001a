#!/usr/bin/env python3
"""Build Dragonfly's discovery kernel and stock initrd offline, from Debian packages
(`dragonfly discovery build`, or `python3 scripts/build_discovery_image.py` from a checkout).

Needs a Debian/Ubuntu host with apt (run `apt-get update` once first) and dpkg-deb; no other
network access. The packages are fetched with `apt-get download` into a cache directory, so a
second run (and every test run after the first) downloads nothing:

  linux-image-<version>-amd64   the kernel (/boot/vmlinuz-*) and its modules (plain .ko files)
  busybox-static                /bin/busybox with every applet the agent needs (sh, wget, udhcpc,
                                ip, insmod ...)
  ipmitool                      /usr/bin/ipmitool, with which the agent reads the BMC's address;
                                its shared libraries and the dynamic loader come from the
                                packages it depends on (libc6, libfreeipmi17, libssl3 ...),
                                found by reading the ELF headers (dragonfly.boot.elf)
  gdisk, util-linux, zstd,      the deployment tools (docs/deployment-protocol.md): sgdisk
  efibootmgr                    (fix-gpt), blkid, partx and wipefs, zstd (zst images),
                                efibootmgr (UEFI boot entries), with their libraries likewise

The stock initrd holds busybox, ipmitool, the deployment tools, the kernel modules for common
NICs, disks, the BMC and the root filesystems a deployment writes its seed into (ext4, xfs,
btrfs; virtio for the lab) with their dependencies in load order (/etc/dragonfly/modules), a udhcpc
hook and a placeholder /init that explains that the agent overlay is missing. The Dragonfly
server appends the agent's overlay (its own /init, the agent, the config) when it serves
/boot/discovery/initrd.img.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dragonfly.agent import cpio
from dragonfly.agent.initramfs import agent_file
from dragonfly.boot.elf import ElfError, read_elf

FORMAT = 3  # bump when the image layout changes, so cached builds are redone

# Module names to load, in this order; each is preceded by its dependencies (from .modinfo).
# Missing ones (built in, or absent from the kernel) are skipped.
DEFAULT_MODULES = (
    # virtio, as in the lab (lab/README.md section 4)
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "virtio_blk", "virtio_scsi",
    # common server and desktop NICs
    "e1000", "e1000e", "igb", "ixgbe", "r8169", "tg3",
    # disks
    "libata", "libahci", "ahci", "scsi_common", "scsi_mod", "sd_mod", "nvme_core", "nvme",
    # the BMC: /dev/ipmi0 for ipmitool (the device interface first, so that it sees the
    # system interface as soon as ipmi_si finds it) and /sys/class/ipmi
    "ipmi_msghandler", "ipmi_devintf", "ipmi_si",
    # deployments: the root filesystems write-seed mounts, with the crc32c drivers they ask the
    # crypto API for (there is no modprobe to load one on demand), and efivarfs for efibootmgr
    "crc32c_generic", "crc32c_intel", "ext4", "xfs", "btrfs", "efivarfs",
)
# Module parameters, written after the module's path in /etc/dragonfly/modules.
MODULE_PARAMS: dict[str, str] = {}

NETBOOT_HELP = """\
Where there is internet access and no apt, a distro netboot kernel with its busybox initramfs
can be used instead (the server appends the agent overlay, whose init falls back to modprobe),
for example Alpine's:

  mkdir -p /var/lib/dragonfly/discovery && cd /var/lib/dragonfly/discovery
  curl -fL -o vmlinuz \\
    https://dl-cdn.alpinelinux.org/alpine/latest-stable/releases/x86_64/netboot/vmlinuz-lts
  curl -fL -o initrd.img \\
    https://dl-cdn.alpinelinux.org/alpine/latest-stable/releases/x86_64/netboot/initramfs-lts
"""


class BuildError(Exception):
    pass


@dataclass
class BuildResult:
    out: Path
    vmlinuz: Path
    initrd: Path
    kernel_release: str
    kernel_package: str
    modules: list[str] = field(default_factory=list)
    reused: bool = False


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:
            # A system user with no home (the service's own sandbox): keep .debs with the state.
            return default_out().parent / "cache" / "discovery"
    return Path(base) / "dragonfly" / "discovery"


def default_out() -> Path:
    state = os.environ.get("DRAGONFLY_SERVER_STATE_DIR", "/var/lib/dragonfly")
    return Path(state) / "discovery"


def log(message: str) -> None:
    sys.stderr.write(f"build_discovery_image: {message}\n")


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{args[0]} is not installed (this needs a Debian/Ubuntu host)") from None
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{' '.join(args)} failed: {exc.stderr.strip()[-800:]}") from None
    return done.stdout


# --- packages ------------------------------------------------------------------------------------

_KERNEL_RE = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+)-amd64$")


def _version_key(name: str) -> tuple[int, ...]:
    match = _KERNEL_RE.match(name)
    return tuple(int(p) for p in re.split(r"[.-]", match.group(1))) if match else ()


def cached_debs(cache: Path, package: str) -> list[Path]:
    return sorted(cache.glob(f"{package}_*.deb"))


def current_kernel_package(cache: Path) -> str:
    """The versioned kernel package the metapackage points at (apt-cache), else the newest one
    in the cache (offline re-runs)."""
    try:
        deps = _run(["apt-cache", "depends", "linux-image-amd64"])
    except BuildError:
        deps = ""
    names = [m.group(1) for m in re.finditer(r"Depends:\s*(linux-image-\S+-amd64)\b", deps)
             if _KERNEL_RE.match(m.group(1))]
    if not names:
        try:
            found = _run(["apt-cache", "search", "--names-only",
                          r"^linux-image-[0-9.]+-[0-9]+-amd64$"])
        except BuildError:
            found = ""
        names = [line.split()[0] for line in found.splitlines()
                 if line and _KERNEL_RE.match(line.split()[0])]
    if not names:
        names = [p.name.split("_")[0] for p in cache.glob("linux-image-*_*.deb")
                 if _KERNEL_RE.match(p.name.split("_")[0])]
    if not names:
        raise BuildError("apt-cache knows no linux-image-*-amd64 package: run `apt-get update`")
    return max(names, key=_version_key)


def fetch(cache: Path, package: str) -> Path:
    """The package's .deb, downloaded into ``cache`` once."""
    have = cached_debs(cache, package)
    if have:
        return have[-1]
    cache.mkdir(parents=True, exist_ok=True)
    log(f"apt-get download {package} (into {cache})")
    _run(["apt-get", "download", package], cwd=cache)
    have = cached_debs(cache, package)
    if not have:
        raise BuildError(f"apt-get download {package} produced no .deb in {cache}")
    return have[-1]


def deb_members(deb: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the data archive of a .deb (dpkg-deb --fsys-tarfile) without unpacking it all."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                yield info, tar
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise BuildError(f"dpkg-deb --fsys-tarfile {deb} failed")


# --- kernel modules ------------------------------------------------------------------------------

def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section (comma separated names)."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not match or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",") if d]


def module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def load_order(wanted: Iterable[str], depends: dict[str, list[str]]) -> list[str]:
    """``wanted`` (those that exist) with their dependencies first, each once."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name not in depends or name in visiting:
            return
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


@dataclass
class KernelParts:
    release: str
    vmlinuz: bytes
    modules: dict[str, tuple[str, bytes]]  # name -> (path under lib/modules, contents)
    order: list[str]


def extract_kernel(deb: Path, wanted: Iterable[str]) -> KernelParts:
    wanted = list(wanted)
    # Pass 1: every module's dependencies; pass 2: the contents of the closure only.
    depends: dict[str, list[str]] = {}
    release = ""
    vmlinuz = b""
    for info, tar in deb_members(deb):
        if info.isfile() and info.name.endswith(".ko"):
            handle = tar.extractfile(info)
            assert handle is not None
            depends[module_name(info.name)] = modinfo_depends(handle.read())
        elif info.isfile() and re.search(r"boot/vmlinuz-", info.name):
            handle = tar.extractfile(info)
            assert handle is not None
            vmlinuz = handle.read()
            release = info.name.rsplit("vmlinuz-", 1)[1]
    if not vmlinuz:
        raise BuildError(f"{deb.name} has no /boot/vmlinuz-*")
    if not depends:
        raise BuildError(f"{deb.name} has no plain .ko modules (compressed modules are not "
                         "supported by busybox insmod)")
    order = load_order(wanted, depends)
    needed = set(order)
    modules: dict[str, tuple[str, bytes]] = {}
    for info, tar in deb_members(deb):
        if info.isfile() and info.name.endswith(".ko") and module_name(info.name) in needed:
            handle = tar.extractfile(info)
            assert handle is not None
            path = info.name.lstrip("./")
            modules[module_name(info.name)] = (path, handle.read())
    return KernelParts(release, vmlinuz, modules, order)


def extract_busybox(deb: Path) -> bytes:
    for info, tar in deb_members(deb):
        if info.isfile() and info.name.lstrip("./") in ("bin/busybox", "usr/bin/busybox"):
            handle = tar.extractfile(info)
            assert handle is not None
            return handle.read()
    raise BuildError(f"{deb.name} has no bin/busybox")


# --- programs with their shared libraries --------------------------------------------------------

# Dynamically linked programs the image carries: package -> paths of the programs inside it.
# Their shared libraries and the dynamic loader are found by reading the programs' ELF headers
# (DT_NEEDED, PT_INTERP) and looking the names up in the package and its dependencies.
IPMI_PROGRAMS: dict[str, tuple[str, ...]] = {"ipmitool": ("usr/bin/ipmitool",)}
# What the agent's deployment actions use beyond busybox (dragonfly/agent/agent.sh): sgdisk moves
# the backup GPT header and grows the root partition, blkid finds the root filesystem and the
# ESP (busybox has no blkid here), partx makes the kernel see a rewritten partition table,
# wipefs removes old signatures, zstd decompresses .zst images (busybox has gunzip and xzcat),
# efibootmgr adds the UEFI boot entry.
DEPLOY_PROGRAMS: dict[str, tuple[str, ...]] = {
    "gdisk": ("sbin/sgdisk",),
    "util-linux": ("sbin/blkid", "usr/bin/partx", "sbin/wipefs"),
    "zstd": ("usr/bin/zstd",),
    "efibootmgr": ("bin/efibootmgr",),
    # Big-buffer copies of what the image streams through (busybox's move 1-4 KiB per call);
    # coreutils dd also says how many bytes it wrote, which spares the agent counting them.
    "coreutils": ("usr/bin/tee", "usr/bin/wc", "usr/bin/head", "usr/bin/sha256sum", "bin/dd"),
}
DEFAULT_PROGRAMS: dict[str, tuple[str, ...]] = {**IPMI_PROGRAMS, **DEPLOY_PROGRAMS}
# Where the dynamic loader looks without /etc/ld.so.cache (Debian's glibc, multiarch first).
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib")
# How far from the program's own package a library's package may be in the Depends graph
# (dpkg-shlibdeps makes it 1; a little slack for libraries that come through a metapackage).
MAX_DEPENDS_DEPTH = 3


@dataclass
class DebFiles:
    """The parts of a .deb the resolver needs: programs and libraries, symlinks, Depends."""

    package: str
    deb: Path
    depends: list[list[str]]  # each alternative group, in order
    files: dict[str, bytes]  # "usr/bin/x" -> contents (programs and shared libraries only)
    links: dict[str, str]  # "lib/x86_64-linux-gnu/libz.so.1" -> "libz.so.1.2.13"

    def resolve(self, path: str, hops: int = 0) -> str | None:
        """``path`` with symlinks followed (within this package), or None."""
        if path in self.files:
            return path
        target = self.links.get(path)
        if target is None or hops > 8:
            return None
        base = "" if target.startswith("/") else str(Path(path).parent)
        joined = posixpath.normpath(posixpath.join(base, target.lstrip("/")))
        return self.resolve(joined, hops + 1)


def parse_depends(field_value: str) -> list[list[str]]:
    """``a (>= 1), b:any | c`` -> [["a"], ["b", "c"]]."""
    groups = []
    for group in field_value.split(","):
        names = [re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0]
                 for alt in group.split("|")]
        names = [n for n in names if n]
        if names:
            groups.append(names)
    return groups


def _is_program_or_library(path: str) -> bool:
    return ".so" in Path(path).name or path.split("/")[-2:-1] in (["bin"], ["sbin"])


def read_deb_files(package: str, deb: Path) -> DebFiles:
    control = _run(["dpkg-deb", "-f", str(deb), "Depends", "Pre-Depends"])
    depends: list[list[str]] = []
    for line in control.splitlines():
        _, _, value = line.partition(":")
        depends += parse_depends(value)
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    for info, tar in deb_members(deb):
        path = os.path.normpath(info.name.lstrip("./")) if info.name.strip("./") else ""
        if not path or not _is_program_or_library(path):
            continue
        if info.issym():
            links[path] = info.linkname
        elif info.isfile():
            handle = tar.extractfile(info)
            assert handle is not None
            files[path] = handle.read()
    return DebFiles(package, deb, depends, files, links)


@dataclass
class Userland:
    """Files to add to the initrd: path -> contents, and symlinks: path -> target."""

    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    debs: dict[str, str] = field(default_factory=dict)  # package -> .deb file name

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())


class PackageSet:
    """Packages fetched (``apt-get download``) and read on first use, each once."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.loaded: dict[str, DebFiles | None] = {}

    def get(self, package: str) -> DebFiles | None:
        if package not in self.loaded:
            try:
                deb = fetch(self.cache, package)
            except BuildError as exc:  # a virtual package, or one this release lacks
                log(f"skipping dependency {package}: {exc}")
                self.loaded[package] = None
            else:
                self.loaded[package] = read_deb_files(package, deb)
        return self.loaded[package]

    def find_library(self, soname: str, start: str) -> tuple[DebFiles, str, str] | None:
        """(package, path of the soname in the search path, path of the real file), looked up
        in ``start`` and then breadth first through its Depends."""
        # Each Depends group is satisfied by its first alternative that can be fetched.
        frontier: list[list[str]] = [[start]]
        seen: set[str] = set()
        for _ in range(MAX_DEPENDS_DEPTH + 1):
            following: list[list[str]] = []
            for group in frontier:
                deb = next((d for d in map(self.get, group) if d is not None), None)
                if deb is None or deb.package in seen:
                    continue
                seen.add(deb.package)
                for directory in LIBRARY_DIRS:
                    path = f"{directory}/{soname}"
                    real = deb.resolve(path)
                    if real is not None:
                        return deb, path, real
                following += deb.depends
            frontier = following
        return None


def resolve_programs(cache: Path, programs: dict[str, tuple[str, ...]]) -> Userland:
    """The programs, every shared library they need (transitively) and the dynamic loader,
    placed where the loader finds them without an ld.so.cache."""
    try:
        return _resolve_programs(cache, programs)
    except ElfError as exc:
        raise BuildError(f"unreadable ELF file: {exc}") from None


def _resolve_programs(cache: Path, programs: dict[str, tuple[str, ...]]) -> Userland:
    packages = PackageSet(cache)
    out = Userland()
    placed: set[str] = set()  # sonames already in ``out``
    # (package that asked, ELF contents, where it comes from, for messages)
    pending: list[tuple[str, bytes, str]] = []
    machine: int | None = None
    for package, paths in programs.items():
        deb = packages.get(package)
        if deb is None:
            raise BuildError(f"cannot fetch {package}")
        for path in paths:
            real = deb.resolve(path)
            if real is None:
                raise BuildError(f"{deb.deb.name} has no {path}")
            data = deb.files[real]
            info = read_elf(data)
            machine = info.machine if machine is None else machine
            out.files[path] = data
            pending.append((package, data, path))
            if info.interpreter:
                interp = info.interpreter.lstrip("/")
                name = Path(interp).name
                found = packages.find_library(name, package)
                if found is None:
                    raise BuildError(f"no package among {package}'s dependencies has the "
                                     f"dynamic loader {info.interpreter}")
                owner, lib_path, lib_real = found
                if lib_path not in out.files:
                    out.files[lib_path] = owner.files[lib_real]
                    placed.add(name)
                if interp != lib_path:
                    out.links[interp] = "/" + lib_path
    while pending:
        package, data, where = pending.pop(0)
        for soname in read_elf(data).needed:
            if soname in placed:
                continue
            found = packages.find_library(soname, package)
            if found is None:
                raise BuildError(f"{where} needs {soname}, which no package among "
                                 f"{package}'s dependencies provides")
            owner, lib_path, lib_real = found
            lib = owner.files[lib_real]
            info = read_elf(lib)
            if machine is not None and info.machine != machine:
                raise BuildError(f"{lib_path} from {owner.deb.name} is for another machine")
            out.files[lib_path] = lib
            placed.add(soname)
            pending.append((owner.package, lib, lib_path))
    for name, deb_files in packages.loaded.items():
        if deb_files is not None:
            out.debs[name] = deb_files.deb.name
    return out


# --- the stock initrd ----------------------------------------------------------------------------

PLACEHOLDER_INIT = """\
#!/bin/sh
# Dragonfly's stock discovery initrd without the agent overlay.
/bin/busybox --install -s 2>/dev/null
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
echo "dragonfly: this is the stock discovery initrd without the agent overlay."
echo "dragonfly: boot /boot/discovery/initrd.img from the Dragonfly server, which appends it."
echo "dragonfly: powering off in 30 seconds."
sleep 30
poweroff -f
"""


def stock_initrd(busybox: bytes, kernel: KernelParts, userland: Userland | None = None) -> bytes:
    entries: list[cpio.Entry] = []
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/udhcpc", "etc/dragonfly", "proc",
              "sys", "dev", "run", "root", "lib/modules"):
        entries.append(cpio.directory(d))
    entries.append(cpio.directory("tmp", 0o1777))
    entries.append(cpio.char_device("dev/console", 5, 1))
    entries.append(cpio.regular("bin/busybox", busybox, 0o755))
    entries.append(cpio.symlink("bin/sh", "busybox"))
    entries.append(cpio.regular("init", PLACEHOLDER_INIT.encode(), 0o755))
    entries.append(cpio.regular("etc/udhcpc/default.script", agent_file("udhcpc.script"), 0o755))
    lines = []
    for name in kernel.order:
        path, data = kernel.modules[name]
        entries.append(cpio.regular(path, data, 0o644))
        params = MODULE_PARAMS.get(name, "")
        lines.append(f"/{path} {params}".rstrip())
    entries.append(cpio.regular("etc/dragonfly/modules", ("\n".join(lines) + "\n").encode()))
    entries.append(cpio.regular("etc/dragonfly/kernel-release", kernel.release.encode() + b"\n"))
    if userland is not None:
        for path, data in sorted(userland.files.items()):
            entries.append(cpio.regular(path, data, 0o755))
        for path, target in sorted(userland.links.items()):
            entries.append(cpio.symlink(path, target))
    return gzip.compress(cpio.pack(cpio.with_parents(entries)), compresslevel=6, mtime=0)


# --- the whole build -----------------------------------------------------------------------------

def build(out: Path, cache: Path, kernel_package: str | None = None,
          modules: Iterable[str] = DEFAULT_MODULES, force: bool = False,
          programs: dict[str, tuple[str, ...]] | None = None) -> BuildResult:
    cache.mkdir(parents=True, exist_ok=True)
    package = kernel_package or current_kernel_package(cache)
    kernel_deb = fetch(cache, package)
    busybox_deb = fetch(cache, "busybox-static")
    modules = list(modules)
    programs = DEFAULT_PROGRAMS if programs is None else programs
    userland = resolve_programs(cache, programs) if programs else Userland()
    recipe = {"format": FORMAT, "kernel_deb": kernel_deb.name, "busybox_deb": busybox_deb.name,
              "modules": modules, "params": MODULE_PARAMS,
              "programs": {k: list(v) for k, v in sorted(programs.items())},
              "program_debs": dict(sorted(userland.debs.items())),
              "agent_udhcpc": hashlib.sha256(agent_file("udhcpc.script")).hexdigest()}
    manifest_path = out / "manifest.json"
    vmlinuz_path, initrd_path = out / "vmlinuz", out / "initrd.img"
    if not force and manifest_path.exists() and vmlinuz_path.exists() and initrd_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("recipe") == recipe:
            return BuildResult(out, vmlinuz_path, initrd_path, manifest["kernel_release"],
                               package, manifest["loaded_modules"], reused=True)
    log(f"extracting {kernel_deb.name} and {busybox_deb.name}")
    kernel = extract_kernel(kernel_deb, modules)
    busybox = extract_busybox(busybox_deb)
    initrd = stock_initrd(busybox, kernel, userland)
    out.mkdir(parents=True, exist_ok=True)
    for path, data in ((vmlinuz_path, kernel.vmlinuz), (initrd_path, initrd)):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    manifest_path.write_text(json.dumps({
        "recipe": recipe, "kernel_release": kernel.release, "kernel_package": package,
        "loaded_modules": kernel.order,
        "missing_modules": [m for m in modules if m not in kernel.order],
        "program_files": sorted([*userland.files, *userland.links]),
        "vmlinuz_sha256": hashlib.sha256(kernel.vmlinuz).hexdigest(),
        "initrd_sha256": hashlib.sha256(initrd).hexdigest(),
    }, indent=2) + "\n")
    log(f"wrote {vmlinuz_path} ({len(kernel.vmlinuz)} bytes) and {initrd_path} "
        f"({len(initrd)} bytes, {len(kernel.order)} modules, {len(userland.files)} program "
        f"and library files of {userland.size} bytes)")
    return BuildResult(out, vmlinuz_path, initrd_path, kernel.release, package, kernel.order)


def add_commands(sub: Any) -> None:
    """`dragonfly discovery build ...` (added through dragonfly.commands.COMMAND_MODULES)."""
    discovery = sub.add_parser("discovery", help="build the discovery kernel and initrd",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = discovery.add_subparsers(dest="discovery_action", metavar="ACTION",
                                       required=True)
    build_parser = actions.add_parser(
        "build", help="build vmlinuz and initrd.img offline from Debian packages",
        epilog=NETBOOT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_build_arguments(build_parser)
    discovery.set_defaults(run=_build_from_args)


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help="target directory (default: <state_dir>/discovery, i.e. "
                             "$DRAGONFLY_SERVER_STATE_DIR/discovery or "
                             "/var/lib/dragonfly/discovery)")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"where downloaded .deb files are kept (default: {default_cache()})")
    parser.add_argument("--kernel-package", default=None,
                        help="e.g. linux-image-6.1.0-28-amd64 (default: the one "
                             "linux-image-amd64 depends on, per apt-cache)")
    parser.add_argument("--module", action="append", default=None, metavar="NAME",
                        help="a kernel module to include (repeatable; default: virtio, common "
                             "NICs and disks, IPMI)")
    parser.add_argument("--no-ipmitool", action="store_true",
                        help="leave ipmitool and its libraries out (the agent then reports a "
                             "BMC's presence but not its address)")
    parser.add_argument("--no-deploy-tools", action="store_true",
                        help="leave sgdisk, blkid, partx, wipefs, zstd and efibootmgr out (the "
                             "machines can then be discovered but not deployed)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")


def programs_for(no_ipmitool: bool = False,
                 no_deploy_tools: bool = False) -> dict[str, tuple[str, ...]]:
    """The programs of a build: ipmitool and the deployment tools, unless left out."""
    return {**({} if no_ipmitool else IPMI_PROGRAMS),
            **({} if no_deploy_tools else DEPLOY_PROGRAMS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=NETBOOT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_build_arguments(parser)
    return _build_from_args(parser.parse_args(argv), sys.stdout)


def _build_from_args(args: argparse.Namespace, out: TextIO) -> int:
    try:
        result = build(args.out or default_out(), args.cache or default_cache(),
                       args.kernel_package, args.module or DEFAULT_MODULES, args.force,
                       programs=programs_for(args.no_ipmitool, args.no_deploy_tools))
    except BuildError as exc:
        log(f"error: {exc}")
        return 1
    state = "up to date" if result.reused else "built"
    out.write(f"{state}: {result.vmlinuz} and {result.initrd} "
                     f"(kernel {result.kernel_release})\n")
    return 0

