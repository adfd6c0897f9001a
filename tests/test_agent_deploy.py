"""agent.sh executing deployments (docs/deployment-protocol.md), run by busybox ash on this host
against a real disk: a loop device over a sparse file, written with a real GPT image (an
xz-compressed disk with an ESP and an ext4 root filesystem built with sgdisk and mkfs.ext4 -d).

The server here is a stand-in for the workflow engine (dragonfly/workflow, written by the lead):
a small aiohttp app that hands out the actions and records the reports, following the protocol
document, which is the contract between the two. The agent runs with busybox applets and the
tools the discovery image adds (sgdisk, partx, blkid, wipefs, zstd) on its PATH, and a fake
efibootmgr (this host's NVRAM is not the test's)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dragonfly.agent.initramfs import agent_file

MIB = 1024 * 1024
GIB = 1024 * MIB
IMAGE_BYTES = 24 * MIB  # the image's raw size
DISK_BYTES = 64 * MIB  # the loop device: larger, so that fix-gpt has something to do
ROOT_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"  # Linux x86-64 root (/)
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_GUID = "6a1f0c2e-5b3d-4e8f-9a7c-0d1e2f3a4b5c"
LOADER = "\\EFI\\debian\\shimx64.efi"
# The tools the discovery image carries besides busybox (dragonfly/boot/discovery_image.py).
HOST_TOOLS = ("sgdisk", "partx", "blkid", "wipefs", "zstd")
SEED = {"meta-data": "instance-id: wf1\nlocal-hostname: node1\n",
        "user-data": "#cloud-config\nphone_home: {url: 'http://x/', post: all}\n",
        "network-config": "version: 2\nethernets: {id0: {match: {name: 'e*'}, dhcp4: true}}\n"}


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def tools_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox applets and the image's extra tools, as in the discovery initramfs."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is required: apt-get install busybox-static")
    d = tmp_path_factory.mktemp("deploy-bin")
    subprocess.run([busybox, "--install", "-s", str(d)], check=True)
    for tool in HOST_TOOLS:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            pytest.fail(f"{tool} is required: apt-get install gdisk zstd util-linux")
        (d / tool).symlink_to(found)
    return str(d)


GRUB_DEFAULT = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
GRUB_CFG = """menuentry 'Debian GNU/Linux' {
\tinsmod ext2
\tlinux\t/boot/vmlinuz-6.1.0-1-cloud-amd64 root=UUID=abcd ro console=ttyS0
\tinitrd\t/boot/initrd.img-6.1.0-1-cloud-amd64
}
menuentry 'Debian GNU/Linux (recovery mode)' {
\tlinux /boot/vmlinuz-6.1.0-1-cloud-amd64 root=UUID=abcd ro single
\tinitrd /boot/initrd.img-6.1.0-1-cloud-amd64
}
"""
BLS_ENTRY = "title Rocky Linux\nlinux /vmlinuz-5.14\noptions root=UUID=abcd ro\n"
KERNEL_ARGS = "net.ifnames=0 dragonfly.test=yes"


@dataclass
class Image:
    raw: bytes
    xz: bytes
    esp: tuple[int, int]  # byte range of the ESP's contents
    root_first_sector: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A 24 MiB GPT disk: an ESP (sectors 2048-10239, random bytes) and an ext4 root partition
    named "root" (filesystem label cloudimg-rootfs) up to the backup GPT."""
    for tool in ("sgdisk", "mkfs.ext4", "debugfs"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.fail(f"{tool} is required: apt-get install gdisk e2fsprogs")
    d = tmp_path_factory.mktemp("image")
    disk = d / "disk.img"
    with open(disk, "wb") as fh:
        fh.truncate(IMAGE_BYTES)
    run("sgdisk", "-n", "1:2048:10239", "-t", f"1:{ESP_TYPE}", "-c", "1:EFI System",
        "-n", "2:10240:0", "-t", f"2:{ROOT_TYPE}", "-u", f"2:{ROOT_GUID}", "-c", "2:root",
        str(disk))
    info = run("sgdisk", "-i", "2", str(disk)).stdout
    first = int(re.search(r"First sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    last = int(re.search(r"Last sector: (\d+)", info).group(1))  # type: ignore[union-attr]
    tree = d / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("image\n")
    # What a Debian image's boot loader carries, for the template's kernel arguments.
    (tree / "etc/default").mkdir()
    (tree / "etc/default/grub").write_text(GRUB_DEFAULT)
    (tree / "boot/grub").mkdir(parents=True)
    (tree / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    (tree / "boot/loader/entries").mkdir(parents=True)  # a Fedora-style (BLS) entry too
    (tree / "boot/loader/entries/abc-6.1.conf").write_text(BLS_ENTRY)
    (tree / "var/lib/cloud").mkdir(parents=True)
    rootfs = d / "root.ext4"
    with open(rootfs, "wb") as fh:
        fh.truncate((last - first + 1) * 512)
    run("mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs", "-d", str(tree), str(rootfs))
    raw = bytearray(disk.read_bytes())
    esp = (2048 * 512, 10240 * 512)
    raw[esp[0]:esp[1]] = os.urandom(esp[1] - esp[0])
    fs = rootfs.read_bytes()
    raw[first * 512:first * 512 + len(fs)] = fs
    data = bytes(raw)
    return Image(data, lzma.compress(data, preset=1), esp, first)


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    """A 64 MiB loop device full of 0xee bytes (what an old installation left)."""
    if os.geteuid() != 0:
        pytest.fail("the deployment tests write to a loop device: run them as root")
    backing = tmp_path / "disk.raw"
    with open(backing, "wb") as fh:
        fh.write(b"\xee" * DISK_BYTES)
    done = subprocess.run(["losetup", "-f", "--show", "-P", str(backing)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot set up a loop device (losetup -f --show): {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


# --- the stand-in server -------------------------------------------------------------------------

@dataclass
class StandIn:
    """Plays the workflow engine for one deployment "wf1" of machine "m1"."""

    actions: list[dict[str, Any]]
    image: bytes = b""
    chunk_delay: float = 0.0  # seconds between 1/10ths of the image
    truncate: bool = False  # close the connection after half of the image
    truncations: int = 0  # ... only for this many first requests
    served: int = 0
    index: int = 0
    reports: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    nexts: list[tuple[float, int]] = field(default_factory=list)
    heartbeats: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/agent/checkin", self.checkin)
        app.router.add_post("/api/agent/heartbeat", self.heartbeat)
        app.router.add_get("/api/agent/workflows/{id}/next", self.next)
        app.router.add_post("/api/agent/workflows/{id}/actions/{index}", self.report)
        app.router.add_get("/images/disk.img.xz", self.serve_image)
        app.router.add_get("/seed/{name}", self.seed)
        return app

    async def checkin(self, request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"action": "deploy", "workflow_id": "wf1",
                                  "machine_id": "m1", "name": "node1", "state": "discovered",
                                  "poll_seconds": 1})

    async def heartbeat(self, request: web.Request) -> web.Response:
        self.heartbeats += 1  # back to waiting after the deployment: the test ends here
        return web.json_response({"action": "poweroff"})

    async def next(self, request: web.Request) -> web.Response:
        assert request.match_info["id"] == "wf1"
        assert request.query["mac"] == "aa:bb:cc:00:00:01"
        self.nexts.append((time.monotonic(), self.index))
        if self.index >= len(self.actions):
            return web.json_response({"workflow_id": "wf1", "index": self.index,
                                      "name": "done", "poll_seconds": 2})
        return web.json_response({"workflow_id": "wf1", "index": self.index,
                                  **self.actions[self.index], "poll_seconds": 2})

    async def report(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        body = json.loads(await request.read())  # valid JSON, whatever the log holds
        self.reports.append((time.monotonic(), index, body))
        if body["state"] == "succeeded" and index == self.index:
            self.index += 1
        return web.json_response({"ok": True})

    async def serve_image(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(self.image)
        await resp.prepare(request)
        step = max(1, len(self.image) // 10)
        cut = self.truncate or self.served < self.truncations
        self.served += 1
        for offset in range(0, len(self.image), step):
            if cut and offset >= len(self.image) // 2:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(self.image[offset:offset + step])
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await resp.write_eof()
        return resp

    async def seed(self, request: web.Request) -> web.Response:
        return web.Response(text=SEED[request.match_info["name"]])

    def finals(self) -> list[tuple[int, str, str]]:
        return [(i, b["state"], b.get("message", "")) for _, i, b in self.reports
                if b["state"] != "running"]

    def result(self, index: int) -> dict[str, Any]:
        return next(b for _, i, b in self.reports if i == index and b["state"] == "succeeded")


def fake_root(root: Path, disks: dict[str, str | int], efi: bool = False) -> Path:
    """/proc/cmdline with the boot MAC, and /sys/block: real devices (a path, linked to their
    real sysfs directory) or fake ones (a size in bytes)."""
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("dragonfly.mac=aa:bb:cc:00:00:01\n")
    block = root / "sys/block"
    block.mkdir(parents=True)
    for name, what in disks.items():
        if isinstance(what, str):
            (block / name).symlink_to(Path("/sys/block") / Path(what).name)
        else:
            (block / name).mkdir()
            (block / name / "size").write_text(f"{what // 512}\n")
            (block / name / "removable").write_text("1\n" if name.startswith("usb") else "0\n")
            (block / name / "device").mkdir()
            (block / name / "device/serial").write_text(f"  SER-{name.upper()}  \n")
    if efi:
        (root / "sys/firmware/efi").mkdir(parents=True)
    return root


EFIBOOTMGR = """#!/bin/sh
echo "$*" >>"{calls}"
case "$1" in
    -c) printf 'BootCurrent: 0001\\nBootOrder: 0007,0001,0000\\nBoot0000* UiApp\\n'
        printf 'Boot0001* UEFI PXEv4 (MAC:AABBCC000001)\\nBoot0007* Dragonfly\\n' ;;
    -q) ;;
    *) printf 'BootCurrent: 0001\\nBootOrder: 0001,0003,0000\\nBoot0000* UiApp\\n'
       printf 'Boot0001* UEFI PXEv4 (MAC:AABBCC000001)\\nBoot0003* Dragonfly\\n' ;;
esac
"""


async def run_agent(tmp_path: Path, tools: str, server: TestServer, root: Path,
                    limit: float = 90, fast_dirs: str | None = None) -> str:
    work = tmp_path / "work"
    work.mkdir()
    config = work / "config"
    config.write_text("POLL_MIN=1\nPOLL_MAX=5\nBACKOFF_MAX=2\nHTTP_TIMEOUT=5\nSTALL_SECONDS=10\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    efibootmgr = bindir / "efibootmgr"
    efibootmgr.write_text(EFIBOOTMGR.replace("{calls}", str(tmp_path / "efibootmgr.calls")))
    efibootmgr.chmod(0o755)
    script = tmp_path / "agent.sh"
    script.write_bytes(agent_file("agent.sh"))
    env = {"PATH": f"{bindir}:{tools}", "DRAGONFLY_SYSROOT": str(root),
           "DRAGONFLY_WORKDIR": str(work), "DRAGONFLY_CONFIG": str(config),
           "HOME": str(work), "DRAGONFLY_URL": f"http://127.0.0.1:{server.port}",
           "DRAGONFLY_REBOOT_CMD": "echo AGENT-REBOOT; exit 0",
           "DRAGONFLY_POWEROFF_CMD": "echo AGENT-POWEROFF; exit 0"}
    if fast_dirs is not None:
        env["DRAGONFLY_FAST_DIRS"] = fast_dirs
    proc = await asyncio.create_subprocess_exec(
        "busybox", "sh", str(script), "run", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    return out.decode()


ServerFactory = Callable[..., Awaitable[TestServer]]


def image_actions(disk: str, image: Image, **override: Any) -> list[dict[str, Any]]:
    locate = {"root_label": "root", "root_parttype": ROOT_TYPE, "root_fstype": "ext4"}
    stream = {"name": "stream-image", "disk": disk, "url": "/images/disk.img.xz",
              "format": "xz", "size": len(image.xz), "raw_size": len(image.raw)}
    stream.update(override)
    return [
        {"name": "select-disk", "disk": disk, "min_bytes": len(image.raw)},
        {"name": "wipe", "disk": disk},
        stream,
        {"name": "verify", "disk": disk, "raw_size": len(image.raw), "sha256": image.sha256},
        {"name": "fix-gpt", "disk": disk, **locate},
        {"name": "write-seed", "disk": disk, **locate, "seed_url": "/seed",
         "kernel_args": KERNEL_ARGS},
        {"name": "boot-entry", "disk": disk, "uefi": True, "loader": LOADER},
        {"name": "reboot"},
    ]


def absolute(standin: StandIn, server: TestServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    for action in standin.actions:
        for key in ("url", "seed_url"):
            if key in action:
                action[key] = base + action[key]


def debugfs_cat(partition: bytes, path: str, tmp_path: Path) -> str:
    fs = tmp_path / "root.fs"
    fs.write_bytes(partition)
    done = run("debugfs", "-R", f"cat {path}", str(fs))
    return done.stdout


async def test_full_deployment_on_a_loop_device(tmp_path: Path, tools_path: str, image: Image,
                                                loop_disk: str,
                                                aiohttp_server: ServerFactory) -> None:
    # Leftovers of an old installation: a GPT and an ext4 signature where the new image's
    # root partition will not be.
    run("sgdisk", "-n", "1:2048:+40M", "-t", "1:8300", loop_disk)
    run("partx", "-u", loop_disk)
    standin = StandIn(image_actions(loop_disk, image), image.xz, chunk_delay=0.5)
    server = await aiohttp_server(standin.app())
    absolute(standin, server)
    root = fake_root(tmp_path / "root", {Path(loop_disk).name: loop_disk}, efi=True)
    log = await run_agent(tmp_path, tools_path, server, root)

    assert "AGENT-REBOOT" in log and "AGENT-POWEROFF" not in log
    names = [a["name"] for a in standin.actions]
    assert standin.finals() == [(i, "succeeded", standin.finals()[i][2])
                                for i in range(len(names))], log
    assert [i for _, i in standin.nexts] == list(range(len(names)))  # one GET next each
    assert standin.result(0)["disk"] == loop_disk
    assert standin.result(0)["disk_bytes"] == DISK_BYTES
    assert standin.result(2)["bytes_done"] == len(image.raw)
    assert standin.result(3)["sha256"] == image.sha256
    assert "stream-image" in standin.result(2)["log"]

    # Progress: `running` reports at least every 2 s while the throttled stream ran (5 s).
    started = next(t for t, i in standin.nexts if i == 2)
    times = [started] + [t for t, i, b in standin.reports if i == 2]
    running = [b for _, i, b in standin.reports if i == 2 and b["state"] == "running"]
    assert len(running) >= 3, standin.reports
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 2.0, times
    assert all(r["bytes_total"] == len(image.raw) and isinstance(r["rate"], int)
               for r in running)
    done = [r["bytes_done"] for r in running]
    assert done == sorted(done) and 0 < done[-1] <= len(image.raw)

    # The disk: the image's bytes (its ESP untouched), a valid GPT with the backup header at
    # the end, the root partition grown to the end with its GUID, type and name kept.
    disk = await asyncio.to_thread(Path(loop_disk).read_bytes)
    assert len(disk) == DISK_BYTES
    assert disk[image.esp[0]:image.esp[1]] == image.raw[image.esp[0]:image.esp[1]]
    assert disk[DISK_BYTES - 512:DISK_BYTES - 504] == b"EFI PART"  # the backup header
    verify = run("sgdisk", "-v", loop_disk).stdout
    assert "No problems found" in verify, verify
    info = run("sgdisk", "-i", "2", loop_disk).stdout
    assert f"Partition unique GUID: {ROOT_GUID.upper()}" in info
    assert f"Partition GUID code: {ROOT_TYPE.upper()}" in info
    assert "Partition name: 'root'" in info
    assert f"First sector: {image.root_first_sector} " in info
    table = run("sgdisk", "-p", loop_disk).stdout
    last_usable = int(re.search(r"last usable sector is (\d+)", table).group(1))  # type: ignore[union-attr]
    assert f"Last sector: {last_usable} " in info
    assert last_usable == DISK_BYTES // 512 - 34
    assert standin.result(4)["root_partition"] in (f"{loop_disk}p2",
                                                   f"{tmp_path}/work/dev/{Path(loop_disk).name}p2")

    # The seed, read from the root filesystem without mounting it.
    part = disk[image.root_first_sector * 512:(last_usable + 1) * 512]
    for name, text in SEED.items():
        assert debugfs_cat(part, f"/var/lib/cloud/seed/nocloud/{name}", tmp_path) == text
    assert debugfs_cat(part, "/etc/hostname", tmp_path) == "image\n"
    # The template's kernel arguments: on both of GRUB's kernel lines for the first boot, and
    # in GRUB_CMDLINE_LINUX for update-grub later; nothing else touched.
    grub_cfg = debugfs_cat(part, "/boot/grub/grub.cfg", tmp_path)
    assert grub_cfg == GRUB_CFG.replace("console=ttyS0\n", f"console=ttyS0 {KERNEL_ARGS}\n"
                                        ).replace("single\n", f"single {KERNEL_ARGS}\n")
    assert debugfs_cat(part, "/etc/default/grub", tmp_path) == GRUB_DEFAULT + (
        "# Added by Dragonfly: the template's kernel arguments.\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {KERNEL_ARGS}"\n')
    assert debugfs_cat(part, "/boot/loader/entries/abc-6.1.conf", tmp_path) == \
        BLS_ENTRY.replace("ro\n", f"ro {KERNEL_ARGS}\n")
    seeded = standin.result(5)
    assert seeded["kernel_args"] == KERNEL_ARGS
    assert "/boot/grub/grub.cfg, /boot/loader/entries/abc-6.1.conf, /etc/default/grub" in next(
        b["message"] for _, i, b in standin.reports if i == 5 and b["state"] == "succeeded")

    # The UEFI entry: the old Dragonfly entry replaced, network boot kept first, and the
    # reboot that follows straight into the new entry (BootNext).
    calls = (tmp_path / "efibootmgr.calls").read_text().splitlines()
    assert calls == ["", "-q -b 0003 -B",
                     f"-c -d {loop_disk} -p 1 -L Dragonfly -l {LOADER}",
                     "-q -o 0001,0000,0007", "-q -n 0007"]
    assert standin.result(6)["entry"] == "Boot0007"


async def test_checksum_mismatch_stops_the_deployment(tmp_path: Path, tools_path: str,
                                                      image: Image, loop_disk: str,
                                                      aiohttp_server: ServerFactory) -> None:
    actions = image_actions(loop_disk, image)
    actions[3]["sha256"] = "0" * 64
    standin = StandIn(actions, image.xz)
    server = await aiohttp_server(standin.app())
    absolute(standin, server)
    root = fake_root(tmp_path / "root", {Path(loop_disk).name: loop_disk})
    log = await run_agent(tmp_path, tools_path, server, root)
    assert standin.finals()[3:] == [(3, "failed", "checksum mismatch after write")], log
    assert [i for _, i in standin.nexts] == [0, 1, 2, 3]  # nothing asked after the failure
    assert "expected sha256 0000" in standin.reports[-1][2]["log"]
    assert standin.heartbeats >= 1 and "AGENT-POWEROFF" in log  # back to waiting
    assert "AGENT-REBOOT" not in log
    info = run("sgdisk", "-p", loop_disk).stdout  # fix-gpt did not run: backup still mid-disk
    assert f"last usable sector is {IMAGE_BYTES // 512 - 34}" in info


@pytest.mark.parametrize("case, expected", [
    ("404", "HTTP 404 fetching the image"),
    ("short", "short download: {half} of {size} bytes"),
    ("small", "disk {disk} (64 MiB) is smaller than the image (10 GiB)"),
])
async def test_stream_failures(tmp_path: Path, tools_path: str, image: Image, loop_disk: str,
                               aiohttp_server: ServerFactory, case: str, expected: str) -> None:
    stream = image_actions(loop_disk, image)[2]
    if case == "404":
        stream["url"] = "/images/missing.img.xz"
    elif case == "small":
        stream["raw_size"] = 10 * GIB
    standin = StandIn([stream, {"name": "reboot"}], image.xz, truncate=case == "short")
    server = await aiohttp_server(standin.app())
    absolute(standin, server)
    root = fake_root(tmp_path / "root", {Path(loop_disk).name: loop_disk})
    log = await run_agent(tmp_path, tools_path, server, root)
    step = max(1, len(image.xz) // 10)
    half = -(-(len(image.xz) // 2) // step) * step
    message = expected.format(half=half, size=len(image.xz), disk=loop_disk)
    assert standin.finals() == [(0, "failed", message)], log
    assert "AGENT-POWEROFF" in log and "AGENT-REBOOT" not in log


# coreutils dd (as the discovery image carries it) counts what it writes; with busybox's alone
# (DRAGONFLY_FAST_DIRS pointing nowhere) the agent counts the stream on the way instead.
@pytest.mark.parametrize("fast_dirs, counter", [(None, "counted by /usr/bin/dd"),
                                                ("/nonexistent", "counted on the way")])
@pytest.mark.parametrize("fmt", ["raw", "xz"])
async def test_an_image_streams_to_the_disk_counted(tmp_path: Path, tools_path: str,
                                                    image: Image, loop_disk: str,
                                                    aiohttp_server: ServerFactory, fmt: str,
                                                    fast_dirs: str | None, counter: str) -> None:
    body = image.raw if fmt == "raw" else image.xz
    actions = image_actions(loop_disk, image, format=fmt, size=len(body))
    standin = StandIn([actions[2], actions[3], {"name": "reboot"}], body)
    server = await aiohttp_server(standin.app())
    absolute(standin, server)
    root = fake_root(tmp_path / "root", {Path(loop_disk).name: loop_disk})
    log = await run_agent(tmp_path, tools_path, server, root, fast_dirs=fast_dirs)
    assert [f[:2] for f in standin.finals()] == [(0, "succeeded"), (1, "succeeded"),
                                                 (2, "succeeded")], log
    assert counter in standin.result(0)["log"]
    assert standin.result(0)["bytes_done"] == len(image.raw)
    assert standin.result(1)["sha256"] == image.sha256


async def test_a_broken_download_is_tried_again(tmp_path: Path, tools_path: str, image: Image,
                                                loop_disk: str,
                                                aiohttp_server: ServerFactory) -> None:
    """The connection drops halfway once (the server restarted): the agent streams the image
    again from the start and the deployment goes on; a download that keeps breaking fails
    after STREAM_ATTEMPTS (test_stream_failures)."""
    actions = image_actions(loop_disk, image)
    standin = StandIn([actions[2], actions[3], {"name": "reboot"}], image.xz, truncations=1)
    server = await aiohttp_server(standin.app())
    absolute(standin, server)
    root = fake_root(tmp_path / "root", {Path(loop_disk).name: loop_disk})
    log = await run_agent(tmp_path, tools_path, server, root)
    assert standin.served == 2
    assert [f[:2] for f in standin.finals()] == [(0, "succeeded"), (1, "succeeded"),
                                                 (2, "succeeded")], log
    stream_log = standin.result(0).get("log", "")
    assert "short download" in stream_log and "trying again (2 of 3)" in stream_log


@pytest.mark.parametrize("spec, min_bytes, expected", [
    ("", 100 * GIB, ("succeeded", "/dev/nvme0n1")),  # the smallest that fits, not removable
    ("", 4 * GIB, ("succeeded", "/dev/sda")),
    ("serial:SER-SDB", 0, ("succeeded", "/dev/sdb")),
    ("/dev/sda", 10 * GIB, ("failed", "disk /dev/sda (8 GiB) is smaller than the image (10 GiB)")),
    ("", 4 * 1024 * GIB, ("failed", "no disk of at least 4096 GiB (found: nvme0n1 (476.9 GiB), "
                                    "sda (8 GiB), sdb (2048 GiB), usb0 (16 GiB, removable))")),
])
async def test_select_disk(tmp_path: Path, tools_path: str, aiohttp_server: ServerFactory,
                           spec: str, min_bytes: int, expected: tuple[str, str]) -> None:
    disks: dict[str, str | int] = {"sda": 8 * GIB, "sdb": 2048 * GIB, "nvme0n1": 512110190592,
                                   "usb0": 16 * GIB, "loop0": 1024 * GIB}
    standin = StandIn([{"name": "select-disk", "disk": spec, "min_bytes": min_bytes}])
    server = await aiohttp_server(standin.app())
    await run_agent(tmp_path, tools_path, server, fake_root(tmp_path / "root", disks))
    (_, index, body), = standin.reports
    assert (body["state"], body.get("disk", body["message"])) == expected
