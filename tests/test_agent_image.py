"""scripts/build_discovery_image.py: module dependencies and the stock initrd's layout.
(The real build from Debian packages runs in the lab tests, which boot its output.)"""

from __future__ import annotations

import stat
from typing import Any

import pytest

from dragonfly.agent import cpio
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
