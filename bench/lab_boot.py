#!/usr/bin/env python3
"""Lab time from VM start to its iPXE script: Dragonfly beside the site's dnsmasq, against one
dnsmasq doing DHCP + PXE + TFTP itself and chaining iPXE to an HTTP script.

Each side is its own lab (network namespaces from ``tests/lab/harness.py``: a bridge ``br0`` at
10.99.0.1 with a tap for the guest, a second namespace at 10.99.0.2). All labs are built once
and stay up side by side, idle; guests boot one at a time, the order of the sides rotating from
round to round so that drift and background load hit every side alike.

* ``dragonfly``: the site's dnsmasq (plain DHCP + IPv6 RA, exactly the e2e test's) in the
  second namespace, and ``python -m dragonfly serve --dhcp-mode auto --boot-interface br0`` on
  10.99.0.1:8080 with its defaults: proxyDHCP -> its TFTP -> its iPXE script. QEMU's BIOS NIC
  ROM is an iPXE; by default Dragonfly chainloads it once into its bundled ``undionly.kpxe``.
* ``dragonfly-direct`` (BIOS only): the same with ``boot.ipxe_chainload = false``, so QEMU's
  iPXE ROM gets the script directly: the same chain as dnsmasq's classic config below.
* ``dnsmasq``: one dnsmasq on ``br0`` (10.99.0.1, also fd99::1/64 for the same RA) with the
  same DHCP range, its own TFTP serving the same loader files (the ones Dragonfly serves,
  ``dragonfly.boot.loaders``) and the classic iPXE config: ``dhcp-userclass=set:ipxe,iPXE``; an iPXE
  gets ``http://10.99.0.1:PORT/boot/${net0/mac}.ipxe`` (from a small ``http.server`` in this
  process), PXE firmware gets ``ipxe.efi`` (arch 7/9) or ``undionly.kpxe``. UEFI (OVMF's EDK2
  PXE) therefore takes the same chain on both sides: DHCP -> TFTP ipxe.efi -> DHCP -> script.
  QEMU's BIOS ROM and the chainloaded undionly.kpxe send byte-identical DHCP requests (user
  class, vendor class, option 175), so no stateless dnsmasq config can chainload the ROM once:
  dnsmasq gives it the script directly, which is what ``dragonfly-direct`` does.
* ``dnsmasq-tuned``: the same plus iPXE's ``no-pxedhcp`` (``dhcp-option=tag:ipxe,encap:175,
  176,1``). Without it an iPXE that got a plain offer waits ~3 s for ProxyDHCP offers (which
  Dragonfly, being one, answers at once); the tuned dnsmasq is the stronger peer.

Time measured: from just before QEMU is started (``time.time()`` in this process) to the moment
the HTTP handler sees the guest's request for its iPXE script (``time.time()`` in the server
that answers it: Dragonfly's boot doctor records step ``ipxe_script`` with that timestamp,
read back from ``GET /api/boot/{mac}``; on the dnsmasq side the handler here records it). Same
host, same clock, both taken in the handler after the request line and headers are parsed.
Every guest uses a new MAC (Dragonfly remembers for 5 minutes which loader it sent a MAC), the
same QEMU flags on every side (TCG, 512 MiB, 1 vCPU, virtio-net, no disk), and is killed as
soon as its script request arrived.

    sudo .venv/bin/python bench/lab_boot.py [--runs 3] [--firmware bios,uefi]
                                            [--sides dragonfly,dragonfly-direct,dnsmasq,
                                                     dnsmasq-tuned]
                                            [--timeout 90] [--keep DIR] [--json FILE]

Bounded: each guest runs under ``timeout`` and is given up after ``--timeout`` seconds; the
default run (3 boots per firmware and side) takes about 4 minutes. Namespaces, dnsmasq,
Dragonfly and QEMU are always stopped and deleted, also on Ctrl-C, SIGTERM and errors.
Needs root, iproute2, dnsmasq, qemu-system-x86_64, OVMF and curl.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.harness import (  # noqa: E402 - needs the repository on sys.path first
    Guest,
    LabNet,
    Proc,
    QemuFactory,
    create_lab_net,
    delete_lab_net,
    run,
    socket_in_netns,
    start_process,
    start_site_dhcp,
)

DRAGONFLY_PORT = 8080  # inside a namespace this run created: nothing else listens there
LOADERS = ("undionly.kpxe", "ipxe.efi")
TOOLS = ("ip", "dnsmasq", "qemu-system-x86_64", "timeout", "curl")
SIDES = ("dragonfly", "dragonfly-direct", "dnsmasq", "dnsmasq-tuned")
BIOS_ONLY = ("dragonfly-direct",)  # for UEFI it is the same as "dragonfly"


# --- results ------------------------------------------------------------------------------------

@dataclass
class Run:
    side: str
    firmware: str
    mac: str
    seconds: float | None  # None: no script request before the deadline
    steps: dict[str, float] = field(default_factory=dict)  # Dragonfly: step -> seconds
    note: str = ""


# --- the dnsmasq side's script server -----------------------------------------------------------

class ScriptServer:
    """Answers ``GET /boot/<mac>.ipxe`` with a script that just waits, and records when each
    MAC's first request arrived. Runs in a thread on a socket made inside the lab namespace."""

    def __init__(self, ns: str, host: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.arrived = threading.Condition()
        sock = socket_in_netns(ns, host, 0)
        sock.setblocking(True)
        self.port: int = sock.getsockname()[1]
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                now = time.time()
                name = urllib.parse.unquote(self.path.rsplit("/", 1)[-1])
                mac = name.removesuffix(".ipxe").lower()
                with owner.arrived:
                    owner.arrivals.setdefault(mac, now)
                    owner.arrived.notify_all()
                body = b"#!ipxe\necho bench: script reached\nsleep 600\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, self.port), Handler,
                                                     bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="script-server",
                                       daemon=True)
        self.thread.start()

    def wait(self, mac: str, deadline: float, alive: Callable[[], bool]) -> float | None:
        with self.arrived:
            while mac not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return None
                self.arrived.wait(min(left, 0.5))
            return self.arrivals[mac]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the two sides -------------------------------------------------------------------------------

def loader_files() -> dict[str, Path]:
    """The loader files Dragonfly serves (bundled copies, else Debian's /usr/lib/ipxe)."""
    from dragonfly.boot.loaders import Loaders

    loaders = Loaders(None)
    found: dict[str, Path] = {}
    for name in LOADERS:
        located = loaders.locate(name)
        path = located if isinstance(located, Path) else Path("/usr/lib/ipxe") / name
        if not path.is_file():
            raise SystemExit(f"loader {name} not found (run scripts/fetch_loaders.py)")
        found[name] = path
    return found


def dragonfly_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "dragonfly", *args], input=stdin,
                            capture_output=True, text=True, timeout=60, check=True,
                            env={**os.environ, **env}, cwd=REPO)
    return result.stdout.strip()


class Side:
    name: str
    net: LabNet
    qemu: QemuFactory

    def script_time(self, guest: Guest, deadline: float) -> tuple[float | None,
                                                                  dict[str, float]]:
        raise NotImplementedError

    def diagnostics(self) -> str:
        raise NotImplementedError


class DragonflySide(Side):
    def __init__(self, work: Path, direct: bool, cleanup: contextlib.ExitStack) -> None:
        self.name = "dragonfly-direct" if direct else "dragonfly"
        self.net = create_lab_net(taps=1)
        cleanup.callback(delete_lab_net, self.net)
        self.qemu = QemuFactory(self.net, work / "guests")
        cleanup.callback(self.qemu.stop_all)
        site = start_site_dhcp(self.net, work / "site-dnsmasq")
        cleanup.callback(site.stop)
        state = work / "state"
        env = {"DRAGONFLY_CONFIG": str(work / "none.toml"),
               "DRAGONFLY_BOOT_IPXE_CHAINLOAD": "false" if direct else "true"}
        # Agent and boot routes are refused until setup is complete: finish it from the shell.
        dragonfly_cli("user", "add", "admin", "--role", "admin", "--password-stdin",
                      "--state-dir", str(state), stdin="bench admin password\n", env=env)
        self.token = dragonfly_cli("token", "create", "--user", "admin", "--name", "bench",
                                   "--state-dir", str(state), env=env)
        args = self.net.exec_args(
            "env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "dragonfly",
            "serve", "--state-dir", str(state), "--bind", self.net.server_ip, "--port",
            str(DRAGONFLY_PORT), "--boot-interface", "br0", "--dhcp-mode", "auto")
        self.proc: Proc = start_process("dragonfly", args, work / "dragonfly.log")
        cleanup.callback(self.proc.stop)
        deadline = time.monotonic() + 30
        while self.api("/api/version") is None:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise SystemExit(f"dragonfly serve did not come up:\n{self.proc.tail()}")
            time.sleep(0.2)

    def api(self, path: str) -> Any:
        result = subprocess.run(
            self.net.exec_args("curl", "-sf", "--max-time", "5", "-H",
                               f"Authorization: Bearer {self.token}",
                               f"http://{self.net.server_ip}:{DRAGONFLY_PORT}{path}"),
            capture_output=True, text=True, timeout=15, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def script_time(self, guest: Guest, deadline: float) -> tuple[float | None,
                                                                  dict[str, float]]:
        # Polling only decides when to stop the guest; the time itself is the server's
        # timestamp of the request, so the polling interval does not blur it.
        while time.monotonic() < deadline and guest.exited() is None:
            timeline = self.api(f"/api/boot/{guest.mac}") or {"steps": []}
            firsts: dict[str, float] = {}
            for step in timeline["steps"]:
                firsts.setdefault(step["step"], step["at"])
            if "ipxe_script" in firsts:
                return firsts["ipxe_script"], firsts
            time.sleep(0.25)
        return None, {}

    def diagnostics(self) -> str:
        return f"dragonfly log:\n{self.proc.tail(30)}"


class DnsmasqSide(Side):
    def __init__(self, work: Path, tuned: bool, cleanup: contextlib.ExitStack) -> None:
        self.name = "dnsmasq-tuned" if tuned else "dnsmasq"
        self.net = create_lab_net(taps=1)
        cleanup.callback(delete_lab_net, self.net)
        # The site dnsmasq sends RAs from fd99::2 on its veth; this one from br0 (see README).
        run("ip", "-n", self.net.ns, "addr", "add", "fd99::1/64", "dev", "br0")
        self.qemu = QemuFactory(self.net, work / "guests")
        cleanup.callback(self.qemu.stop_all)
        self.scripts = ScriptServer(self.net.ns, self.net.server_ip)
        cleanup.callback(self.scripts.close)
        root = work / "tftp"
        root.mkdir(parents=True)
        for name, path in loader_files().items():
            shutil.copyfile(path, root / name)
        net = self.net
        script_url = f"http://{net.server_ip}:{self.scripts.port}/boot/${{net0/mac}}.ipxe"
        args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--interface=br0", "--bind-interfaces",
                f"--dhcp-range={net.dhcp_range[0]},{net.dhcp_range[1]},255.255.255.0,1h",
                f"--dhcp-leasefile={work / 'leases'}", "--dhcp-option=3", "--dhcp-option=6",
                "--log-dhcp", "--dhcp-authoritative", "--user=root", "--enable-ra",
                "--dhcp-range=fd99::,ra-only,64", f"--pid-file={work / 'dnsmasq.pid'}",
                "--enable-tftp", f"--tftp-root={root}",
                "--dhcp-match=set:efi64,option:client-arch,7",
                "--dhcp-match=set:efi64,option:client-arch,9",
                "--dhcp-userclass=set:ipxe,iPXE",
                f"--dhcp-boot=tag:ipxe,{script_url}",
                f"--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{net.server_ip}",
                f"--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,{net.server_ip}"]
        if tuned:
            # iPXE's no-pxedhcp (175.176): do not wait for ProxyDHCP offers that never come.
            args.append("--dhcp-option=tag:ipxe,encap:175,176,1")
        self.dnsmasq = start_process("dnsmasq", net.exec_args(*args), work / "dnsmasq.log")
        cleanup.callback(self.dnsmasq.stop)
        deadline = time.monotonic() + 10
        while "DHCP, IP range" not in self.dnsmasq.text():
            if not self.dnsmasq.alive() or time.monotonic() > deadline:
                raise SystemExit(f"dnsmasq did not start:\n{self.dnsmasq.tail()}")
            time.sleep(0.05)

    def script_time(self, guest: Guest, deadline: float) -> tuple[float | None,
                                                                  dict[str, float]]:
        return self.scripts.wait(guest.mac, deadline, lambda: guest.exited() is None), {}

    def diagnostics(self) -> str:
        return f"dnsmasq log:\n{self.dnsmasq.tail(30)}"


# --- running ------------------------------------------------------------------------------------

def boot_once(side: Side, firmware: str, mac: str, timeout: float) -> Run:
    started = time.time()
    guest = side.qemu.start(f"{side.name}-{firmware}-{mac[-2:]}", mac, firmware=firmware,
                            seconds=int(timeout) + 10, tap="tap0")
    try:
        arrived, steps = side.script_time(guest, time.monotonic() + timeout)
    finally:
        guest.proc.stop()
    if arrived is None:
        print(f"  {side.name} {firmware} {mac}: no script request within {timeout:.0f} s\n"
              f"{guest.diagnostics(20)}\n{side.diagnostics()}", file=sys.stderr)
        return Run(side.name, firmware, mac, None, note="timeout")
    return Run(side.name, firmware, mac, arrived - started,
               {k: v - started for k, v in steps.items()})


def schedule(runs: int, firmwares: list[str], sides: list[str]) -> Iterator[tuple[str, str]]:
    """Every round boots each firmware on each side once, the side order rotated by one from
    round to round, so that drift and background load hit every side alike."""
    for i in range(runs):
        for k, firmware in enumerate(firmwares):
            these = [s for s in sides if firmware == "bios" or s not in BIOS_ONLY]
            shift = (i + k) % len(these)
            yield from ((side, firmware) for side in these[shift:] + these[:shift])


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# Ratios worth printing: (firmware, side, against, what the two chains have in common).
# The goal applies where both sides take the same chain; the last row shows what Dragonfly's
# default chainload of the ROM into its own undionly.kpxe costs.
RATIOS = (
    ("uefi", "dragonfly", "dnsmasq-tuned",
     "same chain: EDK2 -> TFTP ipxe.efi -> iPXE -> script"),
    ("uefi", "dragonfly", "dnsmasq", "same chain; iPXE waits for ProxyDHCP under dnsmasq"),
    ("bios", "dragonfly-direct", "dnsmasq-tuned", "same chain: iPXE ROM -> script"),
    ("bios", "dragonfly-direct", "dnsmasq", "same chain: iPXE ROM -> script"),
    ("bios", "dragonfly", "dnsmasq-tuned",
     "not the same: Dragonfly's default also chainloads undionly.kpxe (no goal)"),
)
STEPS = ("dhcp_discover", "dhcp_offer", "tftp", "ipxe_script")


def report(results: list[Run], firmwares: list[str], sides: list[str]) -> str:
    lines = ["", "| firmware | side | runs | median | min | max |",
             "| --- | --- | --- | --- | --- | --- |"]
    medians: dict[tuple[str, str], float | None] = {}
    for firmware in firmwares:
        for side in sides:
            got = [r for r in results if r.firmware == firmware and r.side == side]
            if not got:
                continue
            ok = [r.seconds for r in got if r.seconds is not None]
            medians[firmware, side] = median(ok)
            failed = len(got) - len(ok)
            cells = ([f"{min(ok):.2f} s", f"{max(ok):.2f} s"] if ok else ["-", "-"])
            shown = f"**{median(ok):.2f} s**" if ok else "-"
            lines.append(f"| {firmware} | {side} | {len(ok)}"
                         f"{f' ({failed} failed)' if failed else ''} | {shown} | "
                         + " | ".join(cells) + " |")
    ratios = [r for r in RATIOS if (r[0], r[1]) in medians and (r[0], r[2]) in medians]
    if ratios:
        lines += ["", "| firmware | ratio of medians | value | goal < 1.10 | chains |",
                  "| --- | --- | --- | --- | --- |"]
    for firmware, side, against, note in ratios:
        a, b = medians[firmware, side], medians[firmware, against]
        if a is None or b is None:
            lines.append(f"| {firmware} | {side} / {against} | - | - | {note} |")
            continue
        verdict = ("-" if "no goal" in note else "met" if a / b < 1.10 else "NOT met")
        lines.append(f"| {firmware} | {side} / {against} | **{a / b:.3f}** ({a - b:+.2f} s) "
                     f"| {verdict} | {note} |")
    chains = [r for r in results if r.side.startswith("dragonfly") and r.steps]
    if chains:
        lines += ["", "Dragonfly's boot doctor: first time of each step after QEMU start "
                  "(medians)", "", "| firmware | side | " + " | ".join(STEPS) + " |",
                  "| --- | --- |" + " --- |" * len(STEPS)]
        for firmware in firmwares:
            for side in sides:
                rows = [r.steps for r in chains if r.firmware == firmware and r.side == side]
                if not rows:
                    continue
                cells = []
                for step in STEPS:
                    m = median([s[step] for s in rows if step in s])
                    cells.append(f"{m:.2f} s" if m is not None else "-")
                lines.append(f"| {firmware} | {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="boots per firmware and side")
    parser.add_argument("--firmware", default="bios,uefi", help="bios, uefi or both")
    parser.add_argument("--sides", default=",".join(SIDES), help=", ".join(SIDES))
    parser.add_argument("--timeout", type=float, default=90, help="seconds per boot")
    parser.add_argument("--keep", type=Path, help="keep logs in this directory")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    firmwares = [f for f in args.firmware.split(",") if f]
    sides = [s for s in args.sides.split(",") if s]
    if not set(firmwares) <= {"bios", "uefi"} or not set(sides) <= set(SIDES) or not sides:
        parser.error(f"--firmware takes bios,uefi; --sides takes {','.join(SIDES)}")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20 (each boot uses a DHCP lease)")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, tap devices, ports 67/69)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        parser.error(f"missing tools: {', '.join(missing)}")

    # SIGTERM unwinds like Ctrl-C, through the cleanup below.
    signal.signal(signal.SIGTERM, interrupt)
    work = Path(tempfile.mkdtemp(prefix="dragonfly-labboot-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    results: list[Run] = []
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            cleanup.callback(shutil.rmtree, work, True)
        started = time.monotonic()
        built: dict[str, Side] = {}
        for name in sides:
            if name.startswith("dnsmasq"):
                built[name] = DnsmasqSide(work / name, name == "dnsmasq-tuned", cleanup)
            elif name != "dragonfly-direct" or "bios" in firmwares:
                built[name] = DragonflySide(work / name, name == "dragonfly-direct", cleanup)
        print(f"labs up in {time.monotonic() - started:.1f} s; {args.runs} boot(s) per "
              f"firmware and side; load average {os.getloadavg()[0]:.2f}", flush=True)
        for n, (side, firmware) in enumerate(schedule(args.runs, firmwares, sides)):
            mac = f"52:54:00:b0:{SIDES.index(side):02x}:{n:02x}"
            one = boot_once(built[side], firmware, mac, args.timeout)
            results.append(one)
            shown = f"{one.seconds:6.2f} s" if one.seconds is not None else "  failed"
            detail = ", ".join(f"{k} {v:.2f}" for k, v in one.steps.items()
                               if k != "ipxe_script")
            print(f"  {side:16} {firmware:4} {mac}: {shown}"
                  f"{f'  ({detail})' if detail else ''}", flush=True)
        print(report(results, firmwares, sides))
        print(f"\ntotal {time.monotonic() - started:.0f} s, load average "
              f"{os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0 if all(r.seconds is not None for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
