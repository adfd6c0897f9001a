"""A real, bootable Debian 12 disk image built offline from Debian packages, for deployments.

``build_os_image()`` returns an :class:`OsImage`: the same disk as raw, raw.xz and qcow2, each
with a ``<file>.sha256`` beside it and one ``SHA256SUMS`` for all three, cached under the lab
cache dir (``$DRAGONFLY_LAB_CACHE``, default ~/.cache/dragonfly/lab) in
``os-image/<key>/``, where the key hashes the inputs (suite, package list, dpkg filters, disk
size and :data:`IMAGE_VERSION`, bumped whenever the assembly below changes). Later runs build
nothing. The files in the cache are shared: copy them before writing (``copy_disk``).

How it is made (root, loop devices; no network but the host's apt sources):

1. ``mmdebstrap --variant=apt --include=<PACKAGES> bookworm rootfs.tar`` with the host's apt
   sources, man pages/docs/locales filtered out. Cached on its own (``rootfs-<key>.tar``) so a
   change to the assembly does not re-download. The kernel is ``linux-image-cloud-amd64``
   (virtio, EFI and the usual cloud drivers; 90 MB of modules less than the generic flavour).
2. A 1 GiB sparse raw disk (so it fits QemuFactory's default 1 GiB target disk), GPT:
   p1 BIOS boot (1 MiB, EF02), p2 ESP (64 MiB, FAT32, label "ESP", EF00), p3 root (the rest,
   GPT name "root", type Linux root x86-64 4f68bce3-e8cd-4db1-96e7-fbcaf984b709, ext4 label
   "root"). Root is last so growpart can grow it to the end of a larger disk.
3. The tar is extracted into the root fs; /etc/fstab by UUID; ssh host keys and machine-id
   removed (cloud-init and systemd make them on first boot); cloud-init limited to
   ``datasource_list: [NoCloud, None]`` (Dragonfly's agent writes the seed into
   /var/lib/cloud/seed/nocloud/ on the root fs); network comes from cloud-init (its fallback is
   DHCP on the first NIC, ifupdown + dhclient renders it); timers and services useless in a lab
   VM (apt-daily*, fstrim, e2scrub*, dpkg-db-backup, getty@tty1) are masked.
4. GRUB from the image's own modules: ``grub-install --target=i386-pc`` on the loop disk
   (core.img in the BIOS boot partition; grub-probe needs ``udevadm`` to map /dev/loopNp3 to
   its disk, so a tiny stand-in is put on PATH when the host has no udev). For UEFI, what
   ``grub-install --target=x86_64-efi --removable --no-nvram`` would make, by hand: this
   host's kernel has no vfat (the ESP cannot be mounted, and grub-install insists on a mounted
   FAT ESP), so ``grub-mkimage -O x86_64-efi`` builds the loader (finds root by fs UUID, then
   /boot/grub) and mtools copies it to ``\\EFI\\BOOT\\BOOTX64.EFI`` (the removable-media
   path: no NVRAM entry needed). The shared /boot/grub/grub.cfg is written by the builder, not
   by grub-mkconfig: without udev /dev/disk/by-uuid does not exist here and grub-mkconfig
   would put ``root=/dev/loop0p3`` on the kernel line. It boots ``root=UUID=... ro
   console=tty0 console=ttyS0,115200`` (the serial log shows GRUB, kernel and systemd);
   /etc/default/grub holds the same settings for an update-grub inside the machine.
5. raw.xz (``xz -T0 -3``), qcow2 (``qemu-img convert``, uncompressed: a guest can stream it
   cheaply), sha256 of each (``<file>.sha256``, and ``SHA256SUMS``), manifest.json, build.log
   with the seconds per step.

Cost, measured on the 2-core lab machine: mmdebstrap 97-106 s (433 MB tar, kept), assembly
6-8 s, xz 108 s on a quiet host (262 s while other lab guests held the cores), qcow2 1 s,
sha256 3 s: 3.5-6 min once, then nothing. Sizes: raw 1 GiB virtual (505 MB allocated),
raw.xz 117 MB, qcow2 494 MB. Root fs: ~450 MB used of 958 MB before growpart.
First boot under TCG to cloud-init's phone_home: see tests/lab/test_lab_os_image.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

IMAGE_VERSION = "3"
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64", "initramfs-tools", "zstd", "systemd-sysv", "udev", "dbus",
    "cloud-init", "cloud-guest-utils", "fdisk", "e2fsprogs",
    "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "openssh-server",
    "grub-pc-bin", "grub-efi-amd64-bin", "grub2-common",
)
DPKG_FILTERS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
DISK_BYTES = 1 << 30
MIB = 1 << 20
SECTOR = 512
# (number, name, sgdisk type code, size in bytes or None for the rest)
BIOS_BOOT_PART, ESP_PART, ROOT_PART = 1, 2, 3
LAYOUT: tuple[tuple[int, str, str, int | None], ...] = (
    (BIOS_BOOT_PART, "bios", "EF02", 1 * MIB),
    (ESP_PART, "ESP", "EF00", 64 * MIB),
    (ROOT_PART, "root", "8304", None),
)
ROOT_PART_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"  # Linux root (x86-64)
ESP_PART_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_LABEL = "root"
ESP_LOADER = "\\EFI\\BOOT\\BOOTX64.EFI"
KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200"
BASENAME = "debian-12-dragonfly-lab"
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                "e2scrub_all.timer", "fstrim.timer", "e2scrub_reap.service",
                "getty@tty1.service")
TOOLS = ("mmdebstrap", "sgdisk", "losetup", "partx", "mkfs.ext4", "mkfs.vfat", "tar",
         "grub-install", "grub-mkimage", "mcopy", "xz", "qemu-img", "mount", "umount")
APT_PACKAGES = "mmdebstrap qemu-utils gdisk dosfstools e2fsprogs xz-utils grub-pc-bin " \
               "grub-efi-amd64-bin grub2-common fdisk mtools"


class OsImageError(RuntimeError):
    """The image cannot be built here; the message says why."""


@dataclass(frozen=True)
class OsImage:
    """One built image, all three formats of the same disk. Treat the files as read-only."""

    directory: Path
    raw: Path
    raw_xz: Path
    qcow2: Path
    sha256sums: Path  # SHA256SUMS for the three files (each also has <file>.sha256)
    raw_sha256: str
    raw_xz_sha256: str
    qcow2_sha256: str
    raw_bytes: int  # the virtual disk size (== DISK_BYTES)
    raw_xz_bytes: int
    qcow2_bytes: int
    raw_allocated_bytes: int  # what the sparse raw file really occupies
    kernel_release: str
    root_partition: int  # 3: /dev/vda3 in the machine
    root_part_label: str  # GPT partition name "root"
    root_part_type: str  # 4f68bce3-... Linux root (x86-64)
    root_fs_label: str  # ext4 label "root"
    root_fs_uuid: str
    esp_partition: int  # 2
    esp_fs_uuid: str  # vfat volume id, e.g. "1A2B-3C4D"
    esp_loader: str  # \EFI\BOOT\BOOTX64.EFI
    bios_boot_partition: int  # 1, holds GRUB's core.img
    packages: tuple[str, ...]
    key: str
    rootfs_seconds: float  # mmdebstrap (0 when the tar came from the cache)
    assemble_seconds: float  # disk, grub, xz, qcow2

    def manifest(self) -> dict[str, object]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}

    @classmethod
    def from_manifest(cls, data: dict[str, object], directory: Path) -> OsImage:
        """Paths are re-rooted at ``directory`` (the cache may have moved)."""
        paths = {"raw", "raw_xz", "qcow2", "sha256sums"}
        values = {k: (directory / Path(str(v)).name if k in paths else v)
                  for k, v in data.items()}
        values["directory"] = directory
        values["packages"] = tuple(values["packages"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------------

def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), check=True, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or exc.stdout or "").strip().splitlines()[-25:])
        raise OsImageError(f"{' '.join(args[:3])} ... failed (exit {exc.returncode}):\n"
                           f"{tail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OsImageError(f"{' '.join(args[:3])} ... took more than {timeout} s") from exc
    except FileNotFoundError as exc:
        raise OsImageError(f"{args[0]} is not installed (apt-get install {APT_PACKAGES})"
                           ) from exc


def check_tools() -> None:
    if os.geteuid() != 0:
        raise OsImageError("building the OS image needs root (loop devices, mount)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise OsImageError(f"tools missing: {', '.join(missing)} "
                           f"(apt-get install {APT_PACKAGES})")


class StepLog:
    """Seconds per build step, appended to build.log (kept beside the image)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        with open(self.path, "a") as fh:
            fh.write(f"step {name}: {time.monotonic() - started:.1f} s\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def rootfs_key(packages: Sequence[str]) -> str:
    return _key(SUITE, sorted(packages), DPKG_FILTERS)


def image_key(packages: Sequence[str]) -> str:
    return _key(IMAGE_VERSION, SUITE, sorted(packages), DPKG_FILTERS, DISK_BYTES, LAYOUT,
                KERNEL_ARGS, MASKED_UNITS)


def default_cache_dir() -> Path:
    env = os.environ.get("DRAGONFLY_LAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dragonfly" / "lab"


# --- loop devices and mounts ---------------------------------------------------------------------

@dataclass
class LoopDisk:
    device: str  # /dev/loopN

    def partition(self, number: int) -> str:
        return f"{self.device}p{number}"


def _partition_nodes(device: str) -> list[str]:
    """Make sure /dev/loopNpM exist. Without udev (this container) ``losetup -P`` does not
    always scan: ``partx -a`` does, and devtmpfs then creates the nodes; mknod as a fallback.
    Returns the nodes this function created itself (to unlink later)."""
    name = Path(device).name
    sysfs = Path("/sys/block") / name
    if not any(p.name.startswith(f"{name}p") for p in sysfs.iterdir()):
        subprocess.run(["partx", "-a", device], capture_output=True, check=False, timeout=30)
    made: list[str] = []
    parts = sorted(p for p in sysfs.iterdir() if p.name.startswith(f"{name}p"))
    if not parts:
        raise OsImageError(f"no partitions appeared for {device} (partx -a)")
    for part in parts:
        node = Path("/dev") / part.name
        deadline = time.monotonic() + 5
        while not node.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not node.exists():
            major, minor = (int(x) for x in (part / "dev").read_text().split(":"))
            os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
            made.append(str(node))
    return made


@contextlib.contextmanager
def loop_disk(image: Path, partitions: bool = True) -> Iterator[LoopDisk]:
    """Attach a disk image file to a loop device (with /dev/loopNpM nodes), detach after."""
    device = run("losetup", "--find", "--show", "--partscan", str(image)).stdout.strip()
    made: list[str] = []
    try:
        if partitions:
            made = _partition_nodes(device)
        yield LoopDisk(device)
    finally:
        subprocess.run(["sync"], check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        for node in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(node)


@contextlib.contextmanager
def mounted(device: str, target: Path, fstype: str = "ext4",
            options: str = "") -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    args = ["mount", "-t", fstype] + (["-o", options] if options else []) + [device,
                                                                             str(target)]
    run(*args)
    try:
        yield target
    finally:
        if subprocess.run(["umount", str(target)], capture_output=True,
                          check=False).returncode != 0:
            time.sleep(1)
            run("umount", str(target))


@contextlib.contextmanager
def mounted_root(image: Path, workdir: Path) -> Iterator[Path]:
    """The root filesystem (partition 3) of a disk image file, mounted read-write."""
    with loop_disk(image) as disk, mounted(disk.partition(ROOT_PART),
                                           workdir / "root-mnt") as root:
        yield root


def copy_disk(image: Path, target: Path, size_bytes: int | None = None) -> Path:
    """A private, sparse copy of a raw image, optionally grown to ``size_bytes`` (a bigger
    disk: the GPT's backup header then sits before the end, as on a real bigger disk)."""
    run("cp", "--sparse=always", str(image), str(target))
    if size_bytes is not None:
        if size_bytes < image.stat().st_size:
            raise ValueError("the target disk is smaller than the image")
        with open(target, "r+b") as fh:
            fh.truncate(size_bytes)
    return target


def write_nocloud_seed(image: Path, workdir: Path, meta_data: str, user_data: str,
                       network_config: str | None = None) -> None:
    """Write a NoCloud seed into /var/lib/cloud/seed/nocloud/ on the image's root fs (what
    Dragonfly's agent does after writing the image to the machine's disk)."""
    with mounted_root(image, workdir) as root:
        seed = root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "meta-data").write_text(meta_data)
        (seed / "user-data").write_text(user_data)
        if network_config is not None:
            (seed / "network-config").write_text(network_config)


# --- the build -----------------------------------------------------------------------------------

def build_rootfs(tar: Path, packages: Sequence[str], log: Path) -> float:
    """mmdebstrap into ``tar`` (atomically). Returns the seconds it took."""
    started = time.monotonic()
    partial = tar.with_name(f"{tar.stem}.partial-{os.getpid()}.tar")
    args = ["mmdebstrap", "--variant=apt", "--format=tar", f"--include={','.join(packages)}"]
    args += [f"--dpkgopt={f}" for f in DPKG_FILTERS]
    args += [SUITE, str(partial)]
    try:
        with open(log, "a") as out:
            out.write(f"$ {' '.join(args)}\n")
            out.flush()
            proc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=1200,
                                  check=False)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-25:])
            raise OsImageError(f"mmdebstrap failed (exit {proc.returncode}), using the host's "
                               f"apt sources; is the mirror reachable?\n{tail}")
        partial.rename(tar)
    except subprocess.TimeoutExpired as exc:
        raise OsImageError("mmdebstrap took more than 20 min") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return time.monotonic() - started


def _partition_table(raw: Path) -> None:
    args = ["sgdisk", "--zap-all", "--clear"]
    for number, name, code, size in LAYOUT:
        end = f"+{size // 1024}K" if size else "0"
        args += [f"--new={number}:0:{end}", f"--typecode={number}:{code}",
                 f"--change-name={number}:{name}"]
    run(*args, str(raw))


GRUB_CFG = """\
# Written by tests/lab/os_image.py (the equivalent of update-grub's output).
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry 'Debian GNU/Linux 12 (Dragonfly lab image)' {{
    linux /boot/vmlinuz-{kver} root=UUID={uuid} {args}
    initrd /boot/initrd.img-{kver}
}}
"""

DEFAULT_GRUB = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

CLOUD_CFG = """\
# Dragonfly lab image: the deployment agent writes the NoCloud seed into
# /var/lib/cloud/seed/nocloud/ (meta-data, user-data, optionally network-config).
datasource_list: [NoCloud, None]
locale: C.UTF-8
# First boot under TCG is slow: no DSA key (sshd ignores it anyway), no grub-pc debconf, and
# Debian's module lists without the Ubuntu/IBM-only modules (snap, byobu, fan, landscape, lxd,
# mcollective, rmc, rightscale).
ssh_genkeytypes: [rsa, ecdsa, ed25519]
grub_dpkg: {enabled: false}
cloud_config_modules:
 - ssh-import-id
 - keyboard
 - locale
 - set-passwords
 - apt-pipelining
 - apt-configure
 - ntp
 - timezone
 - disable-ec2-metadata
 - runcmd
cloud_final_modules:
 - package-update-upgrade-install
 - write-files-deferred
 - puppet
 - chef
 - salt-minion
 - scripts-vendor
 - scripts-per-once
 - scripts-per-boot
 - scripts-per-instance
 - scripts-user
 - ssh-authkey-fingerprints
 - keys-to-console
 - install-hotplug
 - phone-home
 - final-message
 - power-state-change
"""


def _customize(root: Path, root_uuid: str, esp_uuid: str) -> str:
    """Everything after extraction; returns the kernel release."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise OsImageError(f"expected one kernel in /boot, found {kernels}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    if not (root / f"boot/initrd.img-{kver}").exists():
        raise OsImageError(f"no initrd for {kver} (initramfs-tools did not run?)")
    (root / "etc/fstab").write_text(
        f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
        f"UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 2\n")
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 debian\n"
                                    "::1 localhost ip6-localhost ip6-loopback\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (root / "var/lib/dbus/machine-id").unlink()
    (root / "etc/cloud/cloud.cfg.d/90_dragonfly.cfg").write_text(CLOUD_CFG)
    # No locales package: C.UTF-8 is built in, so cloud-init's locale module has nothing to
    # generate (with Debian's default en_US.UTF-8 it fails).
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    (root / "etc/default/grub").write_text(DEFAULT_GRUB)
    systemd = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        for wants in systemd.glob("*.wants"):
            link = wants / unit
            if link.is_symlink():
                link.unlink()
        mask = systemd / unit
        if mask.is_symlink() or mask.exists():
            mask.unlink()
        mask.symlink_to("/dev/null")
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    (root / "boot/grub/grub.cfg").write_text(
        GRUB_CFG.format(uuid=root_uuid, kver=kver, args=KERNEL_ARGS))
    return kver


UDEVADM = """#!/bin/sh
# Stand-in for "udevadm info --query path --name DEV" (the only use grub-probe makes of it, to
# find a partition's start in sysfs): the host has no udev.
for last; do :; done
dev=$(stat -L -c '%t %T' "$last") || exit 1
set -- $dev
p=$(readlink -f "/sys/dev/block/$((0x$1)):$((0x$2))") || exit 1
echo "${p#/sys}"
"""


def _grub_env(work: Path) -> dict[str, str]:
    """grub-install's environment: without udevadm, grub-probe cannot map /dev/loopNp3 to a
    partition of /dev/loopN ("cannot find a GRUB drive"); give it a stand-in then."""
    env = dict(os.environ)
    if shutil.which("udevadm") is None:
        bindir = work / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "udevadm").write_text(UDEVADM)
        (bindir / "udevadm").chmod(0o755)
        env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


def _grub_efi(root: Path, root_uuid: str, work: Path) -> Path:
    """What ``grub-install --target=x86_64-efi --removable`` makes, done by hand: this host's
    kernel has no vfat, so the ESP cannot be mounted (and grub-install insists on a mounted
    FAT ESP). The modules go to /boot/grub/x86_64-efi, the core image (which finds the root fs
    by UUID, then loads normal.mod and grub.cfg from /boot/grub) is returned."""
    modules = root / "usr/lib/grub/x86_64-efi"
    target = root / "boot/grub/x86_64-efi"
    target.mkdir(parents=True, exist_ok=True)
    for path in modules.iterdir():
        if path.suffix in (".mod", ".lst"):
            shutil.copy2(path, target / path.name)
    early = work / "load.cfg"
    early.write_text(f"search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\n")
    loader = work / "BOOTX64.EFI"
    run("grub-mkimage", "-O", "x86_64-efi", "-d", str(modules), "-c", str(early),
        "-p", "/boot/grub", "-o", str(loader), "part_gpt", "part_msdos", "ext2",
        "search_fs_uuid")
    return loader


def _populate_esp(device: str, loader: Path) -> None:
    """\\EFI\\BOOT\\BOOTX64.EFI on the (unmounted) FAT ESP, with mtools."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for args in (["mmd", "-i", device, "::/EFI", "::/EFI/BOOT"],
                 ["mcopy", "-i", device, str(loader), "::/EFI/BOOT/BOOTX64.EFI"]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False,
                              timeout=60)
        if proc.returncode != 0:
            raise OsImageError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    listing = subprocess.run(["mdir", "-i", device, "-b", "::/EFI/BOOT"], capture_output=True,
                             text=True, env=env, check=False).stdout
    if "BOOTX64.EFI" not in listing:
        raise OsImageError(f"the ESP has no \\EFI\\BOOT\\BOOTX64.EFI: {listing!r}")


def assemble(tar: Path, raw: Path, work: Path, steps: StepLog) -> tuple[str, str, str]:
    """The raw disk from the rootfs tar. Returns (kernel release, root fs UUID, ESP id)."""
    with open(raw, "wb") as fh:
        fh.truncate(DISK_BYTES)
    _partition_table(raw)
    root_uuid = str(uuid.uuid4())
    esp_id = uuid.uuid4().hex[:8].upper()
    esp_uuid = f"{esp_id[:4]}-{esp_id[4:]}"
    mnt = work / "mnt"
    with loop_disk(raw) as disk:
        run("mkfs.vfat", "-F", "32", "-n", "ESP", "-i", esp_id, disk.partition(ESP_PART))
        # No orphan_file / metadata_csum_seed: readable by older e2fsprogs and GRUBs too.
        run("mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", root_uuid,
            "-O", "^orphan_file,^metadata_csum_seed", "-E", "lazy_itable_init=0",
            disk.partition(ROOT_PART))
        with mounted(disk.partition(ROOT_PART), mnt) as root:
            with steps.step("extract"):
                run("tar", "-C", str(root), "--numeric-owner", "--xattrs",
                    "--xattrs-include=*", "-xpf", str(tar), timeout=600)
            kver = _customize(root, root_uuid, esp_uuid)
            (root / "boot/efi").mkdir(parents=True, exist_ok=True)
            run("grub-install", "--target=i386-pc",
                f"--directory={root}/usr/lib/grub/i386-pc",
                f"--boot-directory={root}/boot", "--modules=part_gpt ext2", disk.device,
                env=_grub_env(work))
            efi_loader = _grub_efi(root, root_uuid, work)
        _populate_esp(disk.partition(ESP_PART), efi_loader)
        with steps.step("e2fsck"):
            run("e2fsck", "-fy", disk.partition(ROOT_PART), timeout=300)
    return kver, root_uuid, esp_uuid


def _write_sums(directory: Path, files: Sequence[Path]) -> dict[str, str]:
    sums: dict[str, str] = {}
    for path in files:
        digest = sha256_file(path)
        sums[path.name] = digest
        (directory / f"{path.name}.sha256").write_text(f"{digest}  {path.name}\n")
    (directory / "SHA256SUMS").write_text(
        "".join(f"{sums[p.name]}  {p.name}\n" for p in files))
    return sums


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_os_image(cache_dir: Path | None = None,
                    packages: Sequence[str] = PACKAGES) -> OsImage | None:
    """The image from the cache, or None when it was not built yet."""
    directory = (cache_dir or default_cache_dir()) / "os-image" / image_key(packages)
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    image = OsImage.from_manifest(json.loads(manifest.read_text()), directory)
    if not all(p.exists() for p in (image.raw, image.raw_xz, image.qcow2)):
        return None
    return image


def build_os_image(cache_dir: Path | None = None,
                   packages: Sequence[str] = PACKAGES) -> OsImage:
    """Build (once, then cached) the Debian 12 image; raises OsImageError saying why not."""
    cached = cached_os_image(cache_dir, packages)
    if cached is not None:
        return cached
    check_tools()
    base = (cache_dir or default_cache_dir()) / "os-image"
    with _locked(base / ".lock"):
        cached = cached_os_image(cache_dir, packages)  # another process built it meanwhile
        if cached is not None:
            return cached
        key = image_key(packages)
        final = base / key
        work = base / f"{key}.partial-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            log = work / "build.log"
            tar = base / f"rootfs-{rootfs_key(packages)}.tar"
            rootfs_seconds = 0.0
            if not tar.exists():
                rootfs_seconds = build_rootfs(tar, packages, log)
            started = time.monotonic()
            raw = work / f"{BASENAME}.raw"
            steps = StepLog(log)
            with steps.step("assemble"):
                kver, root_uuid, esp_uuid = assemble(tar, raw, work, steps)
            raw_xz = work / f"{BASENAME}.raw.xz"
            with steps.step("xz"), open(raw_xz, "wb") as out:
                proc = subprocess.run(["xz", "-T0", "-3", "-c", str(raw)], stdout=out,
                                      stderr=subprocess.PIPE, timeout=900, check=False)
            if proc.returncode != 0:
                raise OsImageError(f"xz failed: {proc.stderr.decode()[-2000:]}")
            qcow2 = work / f"{BASENAME}.qcow2"
            with steps.step("qcow2"):
                run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
            files = [raw, raw_xz, qcow2]
            with steps.step("sha256"):
                sums = _write_sums(work, files)
            for path in files:
                path.chmod(0o444)
            assemble_seconds = time.monotonic() - started
            (work / "mnt").rmdir()
            shutil.rmtree(final, ignore_errors=True)  # a stale one without manifest
            work.rename(final)

            def moved(p: Path) -> Path:
                return final / p.name

            image = OsImage(
                directory=final, raw=moved(raw), raw_xz=moved(raw_xz), qcow2=moved(qcow2),
                sha256sums=final / "SHA256SUMS", raw_sha256=sums[raw.name],
                raw_xz_sha256=sums[raw_xz.name], qcow2_sha256=sums[qcow2.name],
                raw_bytes=DISK_BYTES, raw_xz_bytes=moved(raw_xz).stat().st_size,
                qcow2_bytes=moved(qcow2).stat().st_size,
                raw_allocated_bytes=moved(raw).stat().st_blocks * 512,
                kernel_release=kver, root_partition=ROOT_PART, root_part_label=ROOT_LABEL,
                root_part_type=ROOT_PART_TYPE, root_fs_label=ROOT_LABEL,
                root_fs_uuid=root_uuid, esp_partition=ESP_PART, esp_fs_uuid=esp_uuid,
                esp_loader=ESP_LOADER, bios_boot_partition=BIOS_BOOT_PART,
                packages=tuple(packages), key=key, rootfs_seconds=round(rootfs_seconds, 1),
                assemble_seconds=round(assemble_seconds, 1))
            tmp = final / "manifest.json.tmp"
            tmp.write_text(json.dumps(image.manifest(), indent=2) + "\n")
            tmp.rename(final / "manifest.json")
            return image
        finally:
            shutil.rmtree(work, ignore_errors=True)
