"""Templates without a root label in Tinkerbell mode: the root partition is found in the stored
image's own GPT by the template's rule (GPT type, else the largest partition of its filesystem
type) and named by its unique partition GUID, never by a number. The images are real GPT disks
made here with sgdisk and mkfs.ext4; the deployment runs against the stand-in Kubernetes API
server (tests/kubeapi.py: no real API server can run here)."""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dragonfly.errors import InvalidInput
from dragonfly.templates.catalog import LINUX_ROOT_X86_64
from dragonfly.tinkerbell import rootpart, translate
from dragonfly.tinkerbell.backend import ROOT_KIND
from dragonfly.workflow.engine import PreparedImage
from tests.kubeapi import FakeApi, api_server
from tests.test_tinkerbell_backend import Rig, Sources, rig, until

__all__ = ["api_server", "rig"]

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
MiB = 1 << 20


def run(*args: str) -> str:
    assert shutil.which(args[0]), f"{args[0]} is needed (apt-get install gdisk e2fsprogs)"
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def partuuid(disk: Path, number: int) -> str:
    info = run("sgdisk", "-i", str(number), str(disk))
    found = re.search(r"Partition unique GUID: ([0-9A-F-]+)", info)
    assert found
    return found.group(1).lower()


def ext4_into(disk: Path, number: int, label: str = "") -> None:
    """An ext4 filesystem written into partition ``number`` of ``disk``."""
    info = run("sgdisk", "-i", str(number), str(disk))
    first = int(re.search(r"First sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    last = int(re.search(r"Last sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    fs = disk.with_suffix(f".p{number}")
    with open(fs, "wb") as fh:
        fh.truncate((last - first + 1) * 512)
    run("mkfs.ext4", "-q", "-F", *(["-L", label] if label else []), str(fs))
    with open(disk, "r+b") as out, open(fs, "rb") as src:
        out.seek(first * 512)
        out.write(src.read())
    fs.unlink()


def debian_like(tmp_path: Path) -> Path:
    """Debian's cloud layout: ESP first, then a small ext4 (a stand-in /boot), then root as
    partition 3 of type Linux root (x86-64) with no label: number and order must not matter."""
    disk = tmp_path / "debian.raw"
    with open(disk, "wb") as fh:
        fh.truncate(40 * MiB)
    run("sgdisk", "-n", "1:2048:+4M", "-t", f"1:{ESP}", "-n", "2:0:+6M", "-t", "2:8300",
        "-n", "3:0:0", "-t", f"3:{LINUX_ROOT_X86_64}", str(disk))
    ext4_into(disk, 2)
    ext4_into(disk, 3)
    return disk


def test_root_found_by_gpt_type_raw_and_xz(tmp_path: Path) -> None:
    disk = debian_like(tmp_path)
    want = partuuid(disk, 3)
    found = rootpart.find_root(disk, "raw", parttype=LINUX_ROOT_X86_64, fstype="ext4")
    assert found.partuuid == want and found.parttype == LINUX_ROOT_X86_64
    assert found.how == f"GPT type {LINUX_ROOT_X86_64}"
    packed = tmp_path / "debian.raw.xz"
    packed.write_bytes(lzma.compress(disk.read_bytes(), preset=0))
    assert rootpart.find_root(packed, "xz", parttype=LINUX_ROOT_X86_64).partuuid == want


def test_root_found_as_the_largest_partition_of_its_filesystem_type(tmp_path: Path) -> None:
    # Rocky's rule: no label, no type to go by, the largest xfs (ext4 here: mkfs.xfs is not
    # installed). The largest partition (p1) holds no filesystem and must not be chosen.
    disk = tmp_path / "rocky.raw"
    with open(disk, "wb") as fh:
        fh.truncate(48 * MiB)
    run("sgdisk", "-n", "1:2048:+20M", "-t", "1:8300", "-n", "2:0:+6M", "-t", "2:8300",
        "-n", "3:0:0", "-t", "3:8300", str(disk))
    ext4_into(disk, 2)
    ext4_into(disk, 3)
    found = rootpart.find_root(disk, "raw", fstype="ext4")
    assert found.partuuid == partuuid(disk, 3) and found.how == "the largest ext4 partition"
    gz = tmp_path / "rocky.raw.gz"
    run("sh", "-c", f"gzip -1 -c {disk} > {gz}")
    assert rootpart.find_root(gz, "gz", fstype="ext4").partuuid == partuuid(disk, 3)
    with pytest.raises(InvalidInput, match="no partition holding xfs"):
        rootpart.find_root(disk, "raw", fstype="xfs")


def test_an_image_without_gpt_says_so(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(2 * MiB))
    with pytest.raises(InvalidInput, match="no GPT"):
        rootpart.find_root(blank, "raw", parttype=LINUX_ROOT_X86_64)
    with pytest.raises(InvalidInput, match="qcow2"):
        rootpart.find_root(blank, "qcow2", fstype="ext4")


async def test_debian_deploys_with_its_root_by_partuuid(api_server: FakeApi, rig: Rig,
                                                        tmp_path: Path) -> None:
    disk = debian_like(tmp_path)
    image = PreparedImage(digest="ef" * 32, format="raw", size=disk.stat().st_size,
                          raw_size=disk.stat().st_size, raw_sha256="ef" * 32)
    reads: list[str] = []

    class RawSources(Sources):
        async def prepare_image(self, slug: str) -> PreparedImage:
            return image

    async def image_path(digest: str) -> Path | None:
        reads.append(digest)
        return disk if digest == image.digest else None
    rig.backend.sources = RawSources(rig.backend.templates, None)  # type: ignore[arg-type]
    rig.backend.image_path = image_path
    machine = await rig.machine()
    await rig.backend.start()
    await until(lambda: rig.backend.cluster.state == "ok", "the first reconcile")
    wf = await rig.backend.start_deployment(machine, "deploy", "debian-12", "admin")
    await until(lambda: translate.workflow_name(wf.id) in api_server.of_kind("Workflow"),
                "the Workflow")
    data = api_server.of_kind("Template")["df-debian-12"]["spec"]["data"]
    guid = partuuid(disk, 3)
    assert f"/dev/disk/by-partuuid/{guid}" in data and f"root=PARTUUID={guid}" in data
    assert not re.search(r"/dev/(sd[a-z]|vd[a-z]|nvme\dn\dp?)\d", data)
    doc = await rig.store.get(ROOT_KIND, image.digest)  # recorded with the image
    assert doc is not None and doc.data["root"]["partuuid"] == guid
    # Read once: a second deployment (or a reconcile) uses what was recorded.
    await rig.backend.abort(wf.id, "admin")
    wf2 = await rig.backend.start_deployment(machine, "deploy", "debian-12", "admin")
    await until(lambda: translate.workflow_name(wf2.id) in api_server.of_kind("Workflow"),
                "the second Workflow")
    assert reads == [image.digest]
