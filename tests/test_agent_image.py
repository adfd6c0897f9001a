"""scripts/build_discovery_image.py: module dependencies, programs with their shared libraries
and the stock initrd's layout.
(The real build from Debian packages runs in the lab tests, which boot its output.)"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dragonfly.agent import cpio
from tests.elf_fixtures import make_elf
from tests.lab.harness import build_script


@pytest.fixture(scope="module")
def script() -> Any:
    return build_script()


def test_modinfo_depends(script: Any) -> None:
    blob = b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring,mdio-devres\0vermagic=6.1\0"
    assert script.modinfo_depends(blob) == ["virtio", "virtio_ring", "mdio_devres"]
    assert script.modinfo_depends(b"\0depends=\0name=x\0") == []
    assert script.modinfo_depends(b"no modinfo at all") == []


def test_load_order_puts_dependencies_first_once(script: Any) -> None:
    depends = {"virtio_net": ["virtio", "virtio_ring", "net_failover"],
               "net_failover": ["failover"], "failover": [], "virtio": [], "virtio_ring": [],
               "virtio_blk": ["virtio", "virtio_ring"], "cyclic_a": ["cyclic_b"],
               "cyclic_b": ["cyclic_a"]}
    order = script.load_order(["virtio_net", "virtio_blk", "absent", "cyclic_a"], depends)
    assert order == ["virtio", "virtio_ring", "failover", "net_failover", "virtio_net",
                     "virtio_blk", "cyclic_b", "cyclic_a"]


def test_current_kernel_package_prefers_the_newest(script: Any) -> None:
    names = ["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-28-amd64",
             "linux-image-6.1.0-10-amd64"]
    assert max(names, key=script._version_key) == "linux-image-6.1.0-28-amd64"


def test_stock_initrd_layout(script: Any) -> None:
    kernel = script.KernelParts(
        release="6.1.0-99-amd64", vmlinuz=b"kernel",
        modules={"virtio": ("lib/modules/6.1.0-99-amd64/kernel/virtio.ko", b"ko1"),
                 "virtio_net": ("lib/modules/6.1.0-99-amd64/kernel/virtio_net.ko", b"ko2")},
        order=["virtio", "virtio_net"])
    image = script.stock_initrd(b"BUSYBOX", kernel)
    assert image[:2] == b"\x1f\x8b"
    result = cpio.unpack_all(image)
    assert result.ok, result.invalid_reason
    files = result.by_name()
    assert files["bin/busybox"].data == b"BUSYBOX"
    assert stat.S_IMODE(files["bin/busybox"].mode) == 0o755
    assert files["bin/sh"].is_symlink and files["bin/sh"].target == "busybox"
    assert stat.S_ISCHR(files["dev/console"].mode)
    assert b"without the agent overlay" in files["init"].data
    assert files["etc/dragonfly/modules"].data.decode().splitlines() == [
        "/lib/modules/6.1.0-99-amd64/kernel/virtio.ko",
        "/lib/modules/6.1.0-99-amd64/kernel/virtio_net.ko"]
    assert files["lib/modules/6.1.0-99-amd64/kernel/virtio_net.ko"].data == b"ko2"
    assert files["etc/udhcpc/default.script"].data.startswith(b"#!/bin/sh")
    assert script.stock_initrd(b"BUSYBOX", kernel) == image  # deterministic


# --- programs with their shared libraries --------------------------------------------------------

def fake_deb(cache: Path, package: str, files: dict[str, bytes],
             links: dict[str, str] | None = None, depends: str = "") -> None:
    """A real .deb (dpkg-deb --build) named as apt-get download names it, so fetch() takes it
    from the cache and never calls apt-get."""
    tree = cache / "src" / package
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    for path, target in (links or {}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).symlink_to(target)
    (tree / "DEBIAN").mkdir(parents=True)
    control = (f"Package: {package}\nVersion: 1.0\nArchitecture: amd64\n"
               f"Maintainer: Test <t@example.org>\nDescription: test\n")
    if depends:
        control += f"Depends: {depends}\n"
    (tree / "DEBIAN/control").write_text(control)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree),
                    str(cache / f"{package}_1.0_amd64.deb")], check=True, capture_output=True)


LIB = "lib/x86_64-linux-gnu"
USRLIB = "usr/lib/x86_64-linux-gnu"


@pytest.fixture
def fake_archive(tmp_path: Path) -> Path:
    """tool -> libfoo1 (a symlinked soname, found through an alternative) -> libbar2 -> libc6,
    whose libc needs the dynamic loader; libbar2 also ships a library nobody needs."""
    cache = tmp_path / "debs"
    cache.mkdir()
    fake_deb(cache, "tool", {
        "usr/bin/tool": make_elf(("libfoo.so.1", "libc.so.6"), interp="/lib64/ld-linux.so.2"),
        "usr/share/doc/tool/README": b"docs are left out"},
        depends="libfoo1 (>= 1.0) | libfoo-compat, libc6:any (>= 2.36)")
    fake_deb(cache, "libfoo1", {
        f"{USRLIB}/libfoo.so.1.2.3": make_elf(("libbar.so.2", "libc.so.6"),
                                              soname="libfoo.so.1")},
        links={f"{USRLIB}/libfoo.so.1": "libfoo.so.1.2.3"}, depends="libbar2")
    fake_deb(cache, "libbar2", {
        f"{LIB}/libbar.so.2": make_elf(("libc.so.6",), soname="libbar.so.2"),
        f"{LIB}/libunused.so.0": make_elf((), soname="libunused.so.0")},
        depends="libc6")
    fake_deb(cache, "libc6", {
        f"{LIB}/libc.so.6": make_elf(("ld-linux.so.2",), soname="libc.so.6"),
        f"{LIB}/ld-linux.so.2": make_elf((), soname="ld-linux.so.2")},
        links={"lib64/ld-linux.so.2": f"/{LIB}/ld-linux.so.2"})
    return cache


def test_programs_bring_exactly_the_libraries_they_need(script: Any, fake_archive: Path
                                                        ) -> None:
    userland = script.resolve_programs(fake_archive, {"tool": ("usr/bin/tool",)})
    assert sorted(userland.files) == [
        f"{LIB}/ld-linux.so.2", f"{LIB}/libbar.so.2", f"{LIB}/libc.so.6", "usr/bin/tool",
        f"{USRLIB}/libfoo.so.1"]
    assert userland.files[f"{USRLIB}/libfoo.so.1"] == (
        fake_archive / "src/libfoo1" / USRLIB / "libfoo.so.1.2.3").read_bytes()
    # The program asks for its loader at /lib64/...: there it is, a link to the one copy.
    assert userland.links == {"lib64/ld-linux.so.2": f"/{LIB}/ld-linux.so.2"}
    assert sorted(userland.debs) == ["libbar2", "libc6", "libfoo1", "tool"]

    kernel = script.KernelParts(release="6.1.0-99-amd64", vmlinuz=b"k", modules={}, order=[])
    files = cpio.unpack_all(script.stock_initrd(b"BUSYBOX", kernel, userland)).by_name()
    assert stat.S_IMODE(files["usr/bin/tool"].mode) == 0o755
    assert files["lib64/ld-linux.so.2"].is_symlink
    assert files[f"{LIB}/libbar.so.2"].data == userland.files[f"{LIB}/libbar.so.2"]


def test_a_library_no_dependency_provides_is_an_error(script: Any, fake_archive: Path) -> None:
    fake_deb(fake_archive, "broken", {"usr/bin/broken": make_elf(("libmissing.so.9",))},
             depends="libc6")
    with pytest.raises(script.BuildError, match="usr/bin/broken needs libmissing.so.9"):
        script.resolve_programs(fake_archive, {"broken": ("usr/bin/broken",)})
    with pytest.raises(script.BuildError, match="has no usr/bin/nothing"):
        script.resolve_programs(fake_archive, {"tool": ("usr/bin/nothing",)})


def test_parse_depends(script: Any) -> None:
    assert script.parse_depends("libc6 (>= 2.34), libfoo1:any | libfoo-compat (<< 2), "
                                "debconf [amd64]") == [
        ["libc6"], ["libfoo1", "libfoo-compat"], ["debconf"]]
    assert script.parse_depends("") == []


def test_deployment_tools_and_filesystems_are_in_the_image(script: Any) -> None:
    """The agent's deployment actions need these beyond busybox; --no-ipmitool and
    --no-deploy-tools leave out one group each."""
    assert script.programs_for() == script.DEFAULT_PROGRAMS
    assert script.DEFAULT_PROGRAMS["gdisk"] == ("sbin/sgdisk",)
    assert set(script.DEFAULT_PROGRAMS["util-linux"]) == {"sbin/blkid", "usr/bin/partx",
                                                         "sbin/wipefs"}
    assert {"zstd", "efibootmgr", "ipmitool"} <= set(script.DEFAULT_PROGRAMS)
    assert "ipmitool" not in script.programs_for(no_ipmitool=True)
    assert "gdisk" in script.programs_for(no_ipmitool=True)
    assert script.programs_for(no_deploy_tools=True) == {"ipmitool": ("usr/bin/ipmitool",)}
    assert script.programs_for(True, True) == {}
    modules = list(script.DEFAULT_MODULES)
    for fs in ("ext4", "xfs", "btrfs"):
        assert fs in modules
    assert modules.index("crc32c_generic") < modules.index("ext4")  # no modprobe on demand
