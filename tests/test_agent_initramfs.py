"""The agent's initramfs overlay and its shell files."""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess

import pytest

from dragonfly.agent import cpio, initramfs

SHELL_FILES = ("agent.sh", "init.sh", "udhcpc.script")


def test_overlay_is_deterministic_with_a_stable_etag() -> None:
    a = initramfs.build_overlay()
    b = initramfs.build_overlay()
    assert a.data == b.data and a.etag == b.etag
    assert a.etag.startswith('"') and a.etag.endswith('"')
    other = initramfs.build_overlay(initramfs.AgentSettings(poll_max=60))
    assert other.etag != a.etag
    assert initramfs.cached_overlay() == a
    gz = initramfs.build_overlay(compress=True)
    assert gz.data == initramfs.build_overlay(compress=True).data
    assert gzip.decompress(gz.data) == a.data


def test_overlay_contents() -> None:
    result = cpio.unpack(initramfs.build_overlay().data)
    assert result.ok, result.invalid_reason
    files = result.by_name()
    init = files["init"]
    assert init.is_file and stat.S_IMODE(init.mode) == 0o755
    assert init.data.startswith(b"#!/bin/sh\n")
    assert stat.S_IMODE(files["dragonfly/agent.sh"].mode) == 0o755
    assert files["dragonfly"].is_dir and files["dev"].is_dir
    console = files["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdevmajor, console.rdevminor) == (5, 1)
    config = files["dragonfly/config"].data.decode()
    assert "POLL_MAX=300\n" in config and "BACKOFF_MAX=60\n" in config
    assert all(e.mtime == 0 for e in result.entries)
    # Parents come before their children (the kernel creates nothing by itself).
    names = [e.name for e in result.entries]
    assert names.index("dragonfly") < names.index("dragonfly/agent.sh")


@pytest.mark.parametrize("stock_len", [0, 1, 2, 3, 4, 5])
def test_append_pads_to_four_bytes(stock_len: int) -> None:
    overlay = initramfs.build_overlay()
    combined = initramfs.append_overlay(b"\x01" * stock_len, overlay)
    offset = len(combined) - len(overlay)
    assert offset % 4 == 0 and combined[offset:] == overlay.data
    assert initramfs.appended_size(stock_len, overlay) == len(combined)


def test_appended_overlay_replaces_stock_init(tmp_path: object) -> None:
    stock = gzip.compress(cpio.pack([cpio.regular("init", b"#!/bin/sh\nstock\n", 0o755),
                                     cpio.regular("etc/keep", b"k")]))
    combined = initramfs.append_overlay(stock, initramfs.build_overlay())
    files = cpio.unpack_all(combined).by_name()
    assert files["init"].data == initramfs.agent_file("init.sh")
    assert files["etc/keep"].data == b"k"


@pytest.mark.parametrize("name", SHELL_FILES)
def test_shell_files_parse_in_busybox_and_dash(name: str) -> None:
    path = initramfs.agent_file(name)
    for shell in (["busybox", "sh"], ["dash"]):
        if shutil.which(shell[0]) is None:
            pytest.fail(f"{shell[0]} is required (Debian busybox-static, dash)")
        done = subprocess.run([*shell, "-n"], input=path, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
