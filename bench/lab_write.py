#!/usr/bin/env python3
"""Image write inside the lab VM: Dragonfly's agent against ``wget -O- URL | dd`` of the same
file in the same VM (issue 14: goal peer_time / dragonfly_time >= 0.9).

One lab (network namespaces from ``tests/lab/harness.py``: bridge ``br0`` at 10.99.0.1, a tap
for the guest, the site's plain-DHCP dnsmasq at 10.99.0.2) and one real
``python -m dragonfly serve --dhcp-mode auto --boot-interface br0`` in it, set up as the lab
deploy test does (admin user and token from the shell, agents heartbeat every 5 s), with two
file templates for the cached Debian 12 lab image (``tests/lab/os_image.py``): ``raw`` (the
agent's raw path: wget | dd conv=fsync) and ``raw.xz`` (the agent decompresses). Both
files are imported into the store before the server starts (``dragonfly image import``), so
either side can go first.

Every guest has the lab deploy test's QEMU flags (``QemuFactory.start``: TCG, 1 vCPU, 1 GiB,
virtio-net, SeaBIOS, -no-reboot, a fresh sparse 3 GiB raw virtio disk), but boots the discovery
kernel directly (-kernel/-initrd) with the initrd exactly as the server serves it
(``GET /boot/discovery/initrd.img``: stock initrd + the agent overlay) and the command line
iPXE would give it (``dragonfly.boot.scripts.discovery_script``): PXE itself is not measured.

* ``dragonfly``: the guest checks in, is adopted and deployed with the template. The write
  time is the ``stream-image`` action's duration as the server records it (``started_at``:
  the agent fetched the action; ``finished_at``: it reported success, after dd's fsync).
  The deployment is aborted right after that; the disk is then compared with the image.
* ``wget|dd``: the same kernel and initrd plus a small newc cpio appended (the kernel unpacks
  concatenated archives) carrying ``/bench.sh``, booted with ``rdinit=/bench.sh``. The script
  loads the same modules as the agent's init (``/etc/dragonfly/modules``), runs busybox
  udhcpc with the agent's hook, then times with ``/proc/uptime`` each command of its list,
  after ``sync`` and dropping the page cache: busybox ``wget -q -O- URL | dd of=/dev/vda
  bs=1M`` (``dd`` as the image's PATH has it: coreutils; for xz busybox ``| xzcat |`` in
  between) of the URL the agent used (``/images/<digest>``),
  then ``sync``; it prints both times to the serial console and powers off. The peer's
  comparable figure is pipeline + sync (the agent's dd ends with fsync); the pipeline alone is
  also reported. Optional variants (``--variant-rounds N``) rebuild the agent's pipeline step
  by step to find where its time goes; busybox's dd is one of them.

Sides and formats alternate from round to round; medians are reported. Needs root and the lab
tools; the first run builds the discovery and OS images (cached afterwards).

    .venv/bin/python bench/lab_write.py [--runs 2] [--formats raw,raw.xz]
                                        [--variant-rounds N] [--keep DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dragonfly.agent import cpio, initramfs  # noqa: E402 - needs the repository on sys.path
from dragonfly.boot.scripts import KERNEL_ARGS  # noqa: E402
from tests.lab.harness import (  # noqa: E402
    Guest,
    LabNet,
    QemuFactory,
    build_discovery_image,
    create_lab_net,
    delete_lab_net,
    socket_in_netns,
    start_process,
    start_site_dhcp,
)
from tests.lab.os_image import OsImage, build_os_image  # noqa: E402
from tests.lab.test_lab_deploy import Server, wait_for_machine  # noqa: E402

GiB = 1 << 30
PORT = 8080  # inside a namespace this run created: nothing else listens there
MEMORY_MIB = 1024
DISK_BYTES = 3 * GiB
GUEST_SECONDS = 1800
TEMPLATES = {"raw": "lab-raw", "raw.xz": "lab-xz"}
CLI_FORMAT = {"raw": "raw", "raw.xz": "xz"}

# The peer's init: what dragonfly/agent/init.sh does before it runs the agent (kernel
# filesystems, the modules listed in the image, DHCP with the agent's udhcpc hook), then the
# timed commands. Times are /proc/uptime (10 ms); output goes to the serial console.
BENCH_SH = r"""#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox --install -s >/dev/null 2>&1
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "bench: $*"; }
up() { cut -d ' ' -f 1 /proc/uptime; }
while read -r p args; do
    [ -f "$p" ] && insmod "$p" $args 2>/dev/null
done </etc/dragonfly/modules
i=0
ifc=""
while [ -z "$ifc" ] && [ "$i" -lt 20 ]; do
    for n in /sys/class/net/*; do
        [ "$(cat "$n/type" 2>/dev/null)" = 1 ] && ifc=${n##*/} && break
    done
    [ -n "$ifc" ] || sleep 0.5
    i=$((i + 1))
done
ip link set dev lo up
ip link set dev "$ifc" up
udhcpc -i "$ifc" -f -q -n -t 10 -T 2 -s /dragonfly/udhcpc.script >/dev/null 2>&1
say "network: $(cat /run/dragonfly-net 2>/dev/null)"
say "disk: $(cat /sys/block/vda/size 2>/dev/null) sectors, memory: $(grep MemTotal /proc/meminfo)"
while IFS='<TAB>' read -r label cmd; do
    [ -n "$label" ] || continue
    sync
    echo 3 >/proc/sys/vm/drop_caches
    rm -f /tmp/bench.fifo
    say "start $label: $cmd"
    t0=$(up)
    sh -c "$cmd" </dev/null 2>/tmp/bench.err
    rc=$?
    t1=$(up)
    sync
    t2=$(up)
    say "stderr $label: $(tr '\n' ' ' </tmp/bench.err | cut -c1-300)"
    say "result $label rc=$rc t0=$t0 t1=$t1 t2=$t2"
done </bench/commands
say "all done"
sync
sleep 1  # the host sees the last lines before the guest is gone
poweroff -f
""".replace("<TAB>", "\t")

# The agent's own functions, its top level without the final dispatch (the `case` that runs
# it), sourced by the two scripts below. They report to the stub server that answers every
# report {"ok": true} at once (STUB), not to Dragonfly. Arguments: image URL, format, size, raw
# size, the stub's URL and the progress loop's period in seconds (the agent's: 1).
AGENT_LIB = r"""sed -e '/^case "${1:-run}" in/,$d' \
    -e "/^progress_loop()/,/^}/s/sleep 1\$/sleep ${6:-1}/" /dragonfly/agent.sh >/tmp/agent-lib.sh
. /tmp/agent-lib.sh
IMAGE=$1 FMT=$2 SIZE=$3 RAW=$4
URL=$5 WF=bench WF_INDEX=3
mkdir -p "$WORK"
ALOG=$WORK/action.log STEP=$WORK/step.json
printf '{"url":"%s","format":"%s","size":%s,"raw_size":%s,"disk":"/dev/vda"}\n' \
    "$IMAGE" "$FMT" "$SIZE" "$RAW" >"$STEP"
"""

# act_stream_image itself, exactly as the agent runs it (coreutils dd conv=fsync counting
# what it writes, tee + wc on the compressed side only, the progress loop reporting every
# second).
AGENT_STUB_SH = "#!/bin/sh\n" + AGENT_LIB + r"""act_stream_image
rc=$?
echo "agent: rc=$rc $MSG" >&2
exit $rc
"""

# --- results ------------------------------------------------------------------------------------

@dataclass
class Run:
    side: str  # "dragonfly" or a peer variant's label
    fmt: str
    round: int
    seconds: float | None  # the comparable time (Dragonfly: stream-image; peer: pipe + sync)
    pipe_seconds: float | None = None  # peer: the pipeline alone, before sync
    host_seconds: float | None = None  # host clock between the guest's start/end serial lines
    cpu_seconds: float | None = None  # QEMU's CPU time (user + system) between those lines
    bytes: int = 0
    disk_matches: bool | None = None  # the image's bytes are at the start of the disk
    load: str = ""  # /proc/loadavg when the run started
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the lab and the server ---------------------------------------------------------------------

def dragonfly_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "dragonfly", *args], input=stdin,
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, **env}, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"dragonfly {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip()


def write_templates(state: Path, image: OsImage) -> None:
    """``tests/lab/test_lab_deploy.write_template``'s file, for ``raw`` and ``raw.xz``."""
    directory = state / "templates"
    directory.mkdir(parents=True, exist_ok=True)
    for fmt, slug in TEMPLATES.items():
        path, digest = (image.raw, image.raw_sha256) if fmt == "raw" else \
            (image.raw_xz, image.raw_xz_sha256)
        (directory / f"{slug}.toml").write_text(
            f'name = "Lab Debian 12 ({slug})"\n'
            'family = "debian"\n'
            f'local_path = "{path}"\n'
            f'format = "{fmt}"\n'
            f'checksum = "sha256:{digest}"\n'
            f'root_label = "{image.root_part_label}"\n'
            f'root_parttype = "{image.root_part_type}"\n'
            'root_fstype = "ext4"\n'
            'uefi_loader = "\\\\EFI\\\\BOOT\\\\BOOTX64.EFI"\n'
            "phone_home_timeout = 900\n"
            f"image_bytes = {image.raw_bytes}\n")


def start_server(net: LabNet, work: Path, image: OsImage, cleanup: contextlib.ExitStack
                 ) -> Server:
    state = work / "state"
    discovery = build_discovery_image()
    discovery.install(state)
    env = {"DRAGONFLY_CONFIG": str(work / "none.toml"), "DRAGONFLY_AGENT_POLL_SECONDS": "5"}
    dragonfly_cli("user", "add", "admin", "--role", "admin", "--password-stdin",
                  "--state-dir", str(state), stdin="bench admin password\n", env=env)
    token = dragonfly_cli("token", "create", "--user", "admin", "--name", "bench",
                          "--state-dir", str(state), env=env)
    write_templates(state, image)
    for fmt, slug in TEMPLATES.items():
        path, digest = (image.raw, image.raw_sha256) if fmt == "raw" else \
            (image.raw_xz, image.raw_xz_sha256)
        print(dragonfly_cli("image", "import", str(path), "--template", slug, "--checksum",
                            f"sha256:{digest}", "--format", CLI_FORMAT[fmt],
                            "--state-dir", str(state), env=env), flush=True)
    args = net.exec_args(
        "env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "dragonfly",
        "serve", "--state-dir", str(state), "--bind", net.server_ip, "--port", str(PORT),
        "--boot-interface", "br0", "--dhcp-mode", "auto")
    proc = start_process("dragonfly", args, work / "dragonfly.log")
    cleanup.callback(proc.stop)
    server = Server(net, PORT, token, proc, state)
    deadline = time.monotonic() + 30
    while True:
        if not proc.alive():
            raise SystemExit(f"dragonfly serve exited:\n{proc.tail()}")
        try:
            server.api("/api/version")
            return server
        except (AssertionError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise SystemExit(f"dragonfly serve did not answer:\n{proc.tail()}") from None
            time.sleep(0.3)


def fetch_served_initrd(server: Server, out: Path) -> None:
    """The initrd exactly as a booting machine gets it (stock + agent overlay)."""
    subprocess.run(server.net.exec_args(
        "curl", "-sf", "--max-time", "60", "-o", str(out),
        server.url("/boot/discovery/initrd.img?mac=52:54:00:00:00:01")),
        check=True, timeout=90)


def command_line(server: Server, mac: str) -> str:
    """What iPXE passes (``dragonfly.boot.scripts.discovery_script``)."""
    base = f"http://{server.net.server_ip}:{PORT}"
    return f"initrd=initrd.img dragonfly.url={base} dragonfly.mac={mac} {KERNEL_ARGS}"


# --- the peer's initrd --------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    label: str  # no spaces: the serial lines are split on them
    command: str  # {url} {size} {raw} {stub} {agent_fmt} are filled in
    prealloc: bool = False  # the disk file allocated on the host before the guest starts
    what: str = ""


PEER = "wget|dd"  # the row the ratio uses


def variants_of(fmt: str) -> list[Variant]:
    """The peer first, then the steps from it to the agent's pipeline."""
    out = "of=/dev/vda bs=1M"
    dec = " | xzcat" if fmt == "raw.xz" else ""
    peer = Variant(PEER, f"wget -q -O- {{url}}{dec} | dd {out}",
                   what="busybox wget | " + ("busybox xzcat | " if dec else "")
                   + "dd (the image's: coreutils)")
    agent = "/bench/agent-stub.sh {url} {agent_fmt} {size} {raw} {stub}"
    loop5 = [Variant("agent-stub-5s", agent + " 5", what="the same, its progress loop "
                     "reporting every 5 s instead of every second")]
    count = "mkfifo /tmp/bench.fifo; /usr/bin/wc -c </tmp/bench.fifo >/tmp/bench.got & c1=$!; "
    fsync = f"dd {out} conv=notrunc,fsync"
    if fmt == "raw":
        return [
            peer,
            Variant("wget>null", "wget -q -O /dev/null {url}",
                    what="the download alone, nothing written (busybox wget)"),
            Variant("wget|dd@prealloc", peer.command, prealloc=True,
                    what="the same, on a disk file allocated beforehand on the host"),
            Variant("wget|dd-fsync", f"wget -q -O- {{url}} | {fsync}",
                    what="dd conv=notrunc,fsync"),
            Variant("wget|busybox-dd", f"wget -q -O- {{url}} | busybox dd {out}",
                    what="busybox's dd"),
            Variant("tee+wc-no-loop", count + f"wget -q -O- {{url}} | /usr/bin/tee "
                    f"/tmp/bench.fifo | {fsync}; wait $c1",
                    what="the agent's raw pipeline before 2026-12-03 (coreutils tee into a "
                         "FIFO counted by coreutils wc, dd conv=fsync), no progress loop"),
            Variant("agent-stub", agent, what="act_stream_image from agent.sh, reports to "
                    "a stub server"),
            *loop5,
        ]
    return [
        peer,
        Variant("wget|zstd-dc|dd", f"wget -q -O- {{url}} | zstd -dc | dd {out}",
                what="the agent's decoder (zstd -dc reads xz with liblzma)"),
        Variant("tee+wc-no-loop", count + "wget -q -O- {url} | /usr/bin/tee "
                f"/tmp/bench.fifo | zstd -dc | {fsync}; wait $c1",
                what="the agent's xz pipeline (tee+wc on the compressed side, zstd -dc, dd "
                     "conv=fsync), no progress loop"),
        Variant("agent-stub", agent, what="act_stream_image from agent.sh, reports to a "
                "stub server"),
        *loop5,
    ]


def peer_initrd(served: Path, out: Path, label: str, command: str) -> None:
    """The served initrd with a newc archive appended: /bench.sh, its command list and the
    agent-based script."""
    entries = [cpio.regular("bench.sh", BENCH_SH.encode(), 0o755),
               cpio.regular("bench/commands", f"{label}\t{command}\n".encode(), 0o644),
               cpio.regular("bench/agent-stub.sh", AGENT_STUB_SH.encode(), 0o755)]
    stock = served.read_bytes()
    out.write_bytes(stock + initramfs.padding_after(len(stock))
                    + cpio.pack(cpio.with_parents(entries)))


class StubReports:
    """Answers every request ``{"ok": true}`` at once: where the agent-based scripts report
    their progress (the agent's own report() and fetch(), without Dragonfly behind them)."""

    def __init__(self, ns: str, host: str) -> None:
        sock = socket_in_netns(ns, host, 0)
        sock.setblocking(True)
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                owner.requests += 1
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer  # noqa: N815 - http.server's naming

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler,
                                                     bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="stub-reports")
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- one guest ----------------------------------------------------------------------------------

def qemu_pid(guest: Guest) -> int | None:
    """The guest's QEMU process (under ``ip netns exec`` and ``timeout``)."""
    marker = str(guest.serial_log).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"qemu-system") and marker in cmdline:
            return int(entry.name)
    return None


def cpu_of(pid: int | None) -> float | None:
    """User + system CPU seconds of a process, all its threads."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SerialWatch:
    """Notes when this process first sees the guest's serial lines starting with ``start`` and
    ``end`` (host clock, and QEMU's CPU time then). Emulation under TCG makes the guest's own
    clock follow the host's, but its speed follows the CPU the host gives QEMU: the CPU time
    is the part of the figure that other load on the host does not change."""

    def __init__(self, guest: Guest, start: str, end: str) -> None:
        self.guest = guest
        self.prefixes = (start, end)
        self.pid: int | None = None
        self.seen: dict[str, tuple[float, float | None]] = {}

    def poll(self) -> None:
        if self.pid is None:
            self.pid = qemu_pid(self.guest)
        lines = [line for line in self.guest.serial.splitlines()
                 if line.startswith(self.prefixes)]
        if not lines:
            return
        now, cpu = time.time(), cpu_of(self.pid)
        for line in lines:
            for prefix in self.prefixes:
                if line.startswith(prefix) and prefix not in self.seen:
                    self.seen[prefix] = (now, cpu)

    def spans(self) -> tuple[float | None, float | None]:
        """(host seconds, QEMU CPU seconds) from the start line to the end line."""
        if not all(p in self.seen for p in self.prefixes):
            return None, None
        (t0, c0), (t1, c1) = (self.seen[p] for p in self.prefixes)
        return t1 - t0, (c1 - c0) if c0 is not None and c1 is not None else None


class Lab:
    def __init__(self, work: Path, image: OsImage, cleanup: contextlib.ExitStack) -> None:
        self.work = work
        self.image = image
        self.net = create_lab_net(taps=1)
        cleanup.callback(delete_lab_net, self.net)
        self.qemu = QemuFactory(self.net, work / "guests")
        cleanup.callback(self.qemu.stop_all)
        site = start_site_dhcp(self.net, work / "site-dnsmasq")
        cleanup.callback(site.stop)
        self.server = start_server(self.net, work, image, cleanup)
        self.stub = StubReports(self.net.ns, self.net.server_ip)
        cleanup.callback(self.stub.close)
        self.kernel = build_discovery_image().vmlinuz
        self.initrd = work / "initrd-served.img"
        fetch_served_initrd(self.server, self.initrd)
        self.images: dict[str, dict[str, Any]] = {}
        for item in self.server.api("/api/images")["images"]:
            for fmt, slug in TEMPLATES.items():
                if slug in item["templates"]:
                    self.images[fmt] = {**item, "full_url": self.server.url(item["url"])}
        self.count = 0

    def mac(self) -> str:
        self.count += 1
        return f"52:54:00:14:{self.count // 256:02x}:{self.count % 256:02x}"

    def disk(self, name: str, prealloc: bool = False) -> Path:
        """A fresh 3 GiB raw file, sparse as the lab deploy test's (or allocated)."""
        disk = self.work / f"{name}.disk"
        disk.unlink(missing_ok=True)
        with open(disk, "wb") as fh:
            if prealloc:
                os.posix_fallocate(fh.fileno(), 0, DISK_BYTES)
            else:
                fh.truncate(DISK_BYTES)
        return disk

    def start(self, name: str, mac: str, disk: Path, initrd: Path, extra_append: str = ""
              ) -> Guest:
        # The lab deploy test's guest (BIOS, its disk, 1 GiB, one vCPU), booted directly.
        return self.qemu.start(name, mac, firmware="bios", disk=disk, memory_mib=MEMORY_MIB,
                               seconds=GUEST_SECONDS, tap=self.net.taps[0], kernel=self.kernel,
                               initrd=initrd,
                               append=command_line(self.server, mac) + extra_append)

    def disk_matches(self, disk: Path) -> bool:
        """The raw image is at the start of the disk (cmp on the host)."""
        result = subprocess.run(["cmp", "-n", str(self.image.raw_bytes), str(self.image.raw),
                                 str(disk)], capture_output=True, timeout=300)
        return result.returncode == 0

    def finish(self, guest: Guest, disk: Path) -> None:
        guest.proc.stop()
        disk.unlink(missing_ok=True)

    # --- Dragonfly --------------------------------------------------------------------------

    def dragonfly(self, fmt: str, rnd: int) -> Run:
        load = loadavg()
        mac = self.mac()
        name = f"dragonfly-{fmt}-{rnd}"
        disk = self.disk(name)
        guest = self.start(name, mac, disk, self.initrd)
        try:
            machine = wait_for_machine(self.server, guest, seconds=600)
            self.server.post(f"/api/machines/{machine['id']}/actions/adopt", {})
            answer = self.server.post(f"/api/machines/{machine['id']}/actions/deploy",
                                      {"template": TEMPLATES[fmt]})
            if answer.get("state") != "deploying":
                raise RuntimeError(f"deploy refused: {answer}")
            deadline = time.monotonic() + GUEST_SECONDS
            action: dict[str, Any] = {}
            workflow: dict[str, Any] = {}
            # The agent's console lines at the start and the end of act_stream_image.
            watch = SerialWatch(guest, "dragonfly-agent: streaming ",
                                "dragonfly-agent: stream-image: ")
            asked = 0.0
            while time.monotonic() < deadline:
                watch.poll()
                if time.monotonic() - asked >= 1:
                    asked = time.monotonic()
                    items = self.server.api(f"/api/machines/{machine['id']}/workflows")
                    workflow = items[0] if items else {}
                    action = next((a for a in workflow.get("actions", [])
                                   if a["name"] == "stream-image"), {})
                    if action.get("state") in ("succeeded", "failed") or \
                            workflow.get("state") == "failed" or guest.exited() is not None:
                        break
                time.sleep(0.2)
            watch.poll()
            host, cpu = watch.spans()
            # The later actions (verify, fix-gpt, ...) are not measured.
            with contextlib.suppress(AssertionError):
                if workflow.get("state") == "running":
                    self.server.post(f"/api/workflows/{workflow['id']}/abort", {})
            guest.proc.stop()
            (self.work / f"{name}.serial.log").write_text(guest.serial)
            (self.work / f"{name}.workflow.json").write_text(json.dumps(workflow, indent=1))
            if action.get("state") != "succeeded":
                return Run("dragonfly", fmt, rnd, None, load=load,
                           note=f"stream-image {action.get('state')}: "
                                f"{action.get('message')} / {workflow.get('error')}\n"
                                f"{guest.diagnostics(30)}")
            seconds = float(action["finished_at"]) - float(action["started_at"])
            return Run("dragonfly", fmt, rnd, seconds, bytes=int(action.get("bytes_done", 0)),
                       host_seconds=host, cpu_seconds=cpu,
                       disk_matches=self.disk_matches(disk), load=load,
                       detail={"message": action.get("message"), "rate": action.get("rate"),
                               "image": workflow.get("image")})
        finally:
            self.finish(guest, disk)

    # --- the peer and the variants ----------------------------------------------------------

    def peer(self, fmt: str, rnd: int, variant: Variant) -> Run:
        load = loadavg()
        mac = self.mac()
        name = f"peer-{fmt}-{rnd}-{variant.label.replace('|', '_').replace('@', '_')}"
        image = self.images[fmt]
        command = variant.command.format(url=image["full_url"], size=image["size"],
                                         raw=image["raw_size"], stub=self.stub.url,
                                         agent_fmt=image["format"])
        initrd = self.work / f"{name}.initrd"
        peer_initrd(self.initrd, initrd, variant.label, command)
        disk = self.disk(name, variant.prealloc)
        guest = self.start(name, mac, disk, initrd, " rdinit=/bench.sh")
        watch = SerialWatch(guest, f"bench: start {variant.label}:",
                            f"bench: result {variant.label} ")
        try:
            deadline = time.monotonic() + GUEST_SECONDS
            while guest.exited() is None and time.monotonic() < deadline:
                watch.poll()
                time.sleep(0.2)
            serial = guest.serial
            (self.work / f"{name}.serial.log").write_text(serial)
            lines = serial.splitlines()

            def first(prefix: str) -> str | None:
                return next((line for line in lines if line.startswith(prefix)), None)

            result = first(f"bench: result {variant.label} ")
            if result is None:
                return Run(variant.label, fmt, rnd, None, load=load,
                           note=f"no result\n{guest.diagnostics(30)}")
            fields = dict(word.split("=", 1) for word in result.split()[3:])
            t0, t1, t2 = (float(fields[k]) for k in ("t0", "t1", "t2"))
            host, cpu = watch.spans()
            stderr = first(f"bench: stderr {variant.label}:") or ""
            return Run(variant.label, fmt, rnd, t2 - t0, pipe_seconds=t1 - t0,
                       host_seconds=host, cpu_seconds=cpu,
                       bytes=self.image.raw_bytes, disk_matches=self.disk_matches(disk),
                       load=load, detail={"rc": fields["rc"], "stderr": stderr,
                                          "command": command},
                       note="" if fields["rc"] == "0" else f"rc {fields['rc']}: {stderr}")
        finally:
            self.finish(guest, disk)


# --- the report ---------------------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rate(seconds: float | None, nbytes: int) -> str:
    return f"{nbytes / seconds / 1e6:.1f}" if seconds else "-"


def fmt_s(seconds: float | None) -> str:
    return f"{seconds:.1f}" if seconds is not None else "-"


def report(runs: list[Run], raw_bytes: int) -> str:
    lines = ["MB/s: 10^6 bytes of the raw image (1 GiB) written per second. Ratio: wget|dd's "
             "time / Dragonfly's (medians); per round: the two guests booted one after the "
             "other; CPU: QEMU's CPU seconds during the write.", "",
             "| format | Dragonfly s | MB/s | wget\\|dd s | MB/s | ratio | per round | "
             "CPU ratio | runs |", "|---|---|---|---|---|---|---|---|---|"]
    for fmt in TEMPLATES:
        ours = [r for r in runs if r.side == "dragonfly" and r.fmt == fmt and r.seconds]
        peer = [r for r in runs if r.side == PEER and r.fmt == fmt and r.seconds]
        if not ours and not peer:
            continue
        d = median([r.seconds for r in ours if r.seconds])
        p = median([r.seconds for r in peer if r.seconds])
        dc = median([r.cpu_seconds for r in ours if r.cpu_seconds])
        pc = median([r.cpu_seconds for r in peer if r.cpu_seconds])
        pairs = []
        for rnd in sorted({r.round for r in ours} & {r.round for r in peer}):
            a = next(r.seconds for r in ours if r.round == rnd)
            b = next(r.seconds for r in peer if r.round == rnd)
            if a and b:
                pairs.append(f"{b / a:.2f}")
        lines.append(f"| {fmt} | {fmt_s(d)} | {rate(d, raw_bytes)} | {fmt_s(p)} | "
                     f"{rate(p, raw_bytes)} | {f'{p / d:.2f}' if p and d else '-'} | "
                     f"{', '.join(pairs) or '-'} | {f'{pc / dc:.2f}' if pc and dc else '-'} | "
                     f"{len(ours)}, {len(peer)} |")
    lines += ["", "Each run: one fresh guest and disk. s: Dragonfly's stream-image action "
              "(server clock), or the command then sync (guest clock); pipe: the command "
              "alone; host: the host's clock between the guest's serial lines at start and "
              "end; CPU: QEMU's CPU time between them.", "",
              "| format | side / variant | s (median) | MB/s | pipe s | host s | QEMU CPU s | "
              "all runs s (load 1 min) |", "|---|---|---|---|---|---|---|---|"]
    for fmt in TEMPLATES:
        order = ["dragonfly"] + [v.label for v in variants_of(fmt)]
        for side in order:
            found = [r for r in runs if r.fmt == fmt and r.side == side]
            if not found:
                continue
            s = median([r.seconds for r in found if r.seconds is not None])
            pipe = median([r.pipe_seconds for r in found if r.pipe_seconds is not None])
            host = median([r.host_seconds for r in found if r.host_seconds is not None])
            cpu = median([r.cpu_seconds for r in found if r.cpu_seconds is not None])
            every = ", ".join(f"{fmt_s(r.seconds)} ({r.load.split()[0] if r.load else '?'})"
                              for r in found)
            lines.append(f"| {fmt} | {side.replace('|', chr(92) + '|')} | {fmt_s(s)} | "
                         f"{rate(s, raw_bytes)} | {fmt_s(pipe)} | {fmt_s(host)} | "
                         f"{fmt_s(cpu)} | {every} |")
    return "\n".join(lines)


@contextlib.contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="dragonfly-lab-write-") as d:
            yield Path(d)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2,
                        help="rounds; each runs Dragonfly and wget|dd once per format")
    parser.add_argument("--formats", default="raw,raw.xz")
    parser.add_argument("--variant-rounds", type=int, default=1, metavar="N",
                        help="in the first N rounds also boot one guest per variant (the "
                             "steps from wget|dd to the agent's pipeline; 0: none)")
    parser.add_argument("--only", default="", metavar="LABELS",
                        help="comma-separated sides to run (dragonfly, wget|dd, variants)")
    parser.add_argument("--keep", metavar="DIR",
                        help="work here and keep the logs (guest disks are always deleted)")
    parser.add_argument("--json", metavar="FILE", help="write every run here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, taps)")
    formats = [f for f in args.formats.split(",") if f]
    for fmt in formats:
        if fmt not in TEMPLATES:
            raise SystemExit(f"unknown format {fmt}: raw or raw.xz")
    only = {s for s in args.only.split(",") if s}
    signal.signal(signal.SIGTERM, interrupt)
    image = build_os_image()
    runs: list[Run] = []
    print(f"load average at start: {loadavg()} ({os.cpu_count()} CPUs)", flush=True)
    started = time.monotonic()
    with workdir(args.keep) as work, contextlib.ExitStack() as cleanup:
        lab = Lab(work, image, cleanup)
        print(f"images: { {f: i['full_url'] for f, i in lab.images.items()} }", flush=True)

        def one(fmt: str, rnd: int, side: str) -> None:
            if only and side not in only:
                return
            t = time.monotonic()
            if side == "dragonfly":
                r = lab.dragonfly(fmt, rnd)
            else:
                r = lab.peer(fmt, rnd, next(v for v in variants_of(fmt) if v.label == side))
            runs.append(r)
            print(f"round {rnd} {fmt:6} {r.side:18} {fmt_s(r.seconds):>7} s (pipe "
                  f"{fmt_s(r.pipe_seconds)}, host {fmt_s(r.host_seconds)}, CPU "
                  f"{fmt_s(r.cpu_seconds)}) disk ok "
                  f"{r.disk_matches}, load {r.load}, guest {time.monotonic() - t:.0f} s "
                  f"{r.note[:800]}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps([asdict(x) for x in runs], indent=1))

        slot = 0
        for rnd in range(args.runs):
            for fmt in formats:
                pair = ["dragonfly", PEER] if slot % 2 == 0 else [PEER, "dragonfly"]
                slot += 1
                for side in pair:
                    one(fmt, rnd, side)
                if rnd < args.variant_rounds:
                    for variant in variants_of(fmt)[1:]:
                        one(fmt, rnd, variant.label)
        print(f"stub server: {lab.stub.requests} requests")
    print(f"\nload average at end: {loadavg()}; {time.monotonic() - started:.0f} s in all")
    print(report(runs, image.raw_bytes))
    print("\ncommand: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
