"""PXE DISCOVER flood: Dragonfly's proxyDHCP against dnsmasq in proxy mode, side by side.

Two network namespaces joined by a veth pair: the server under test listens on the server
side (10.98.0.1, real port 67, bound to its interface), a client process on the other side
(10.98.0.2, port 68) broadcasts PXE DISCOVERs (BIOS firmware, arch 0, no user class, a new
xid each, MACs cycling over 4096) at a fixed rate, or as fast as it can (rate 0), and counts
the OFFERs for its xids. Both servers run with logging off; each gets the same floods.

    sudo .venv/bin/python bench/dhcp_flood.py [--rates 5000,10000,20000,30000,40000]
                                              [--seconds 2] [--rounds 3]
                                              [--servers dragonfly,dnsmasq]

Bounded: every flood sends at most rate * seconds packets (rate 0: --max-count) and waits
1 s for stragglers; the default run takes about 2 minutes. Prints one line per flood, then
the median over the rounds and the Dragonfly/dnsmasq ratios.
Needs root, iproute2 and dnsmasq. Namespaces are named dfb<pid>s/c and always deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVER_IP, CLIENT_IP = "10.98.0.1", "10.98.0.2"
SERVER_IF, CLIENT_IF = "dfb-s", "dfb-c"
VENDOR = b"PXEClient:Arch:00000:UNDI:002001"
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; not exported by the socket module


# --- the client (runs inside the client namespace) --------------------------------------------

def discover(xid: int, mac: bytes) -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                         bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"), bytes(64),
                         bytes(128))
    opts = (b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x5d\x02\x00\x00" + b"\x5e\x03\x01\x02\x01"
            + bytes((60, len(VENDOR))) + VENDOR + b"\x61\x11\x00" + mac.ljust(16, b"\0")
            + b"\xff")
    return (header + opts).ljust(300, b"\0")


def client(rate: int, count: int, interface: str) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # root: beyond rmem_max
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    base = int.from_bytes(os.urandom(4), "big") & 0x7FFF0000
    packets = [discover(base + i, b"\x52\x54\x00\xfe" + (i % 4096).to_bytes(2, "big"))
               for i in range(count)]
    seen: set[int] = set()
    last_reply = [0.0]
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            if len(data) >= 240 and data[0] == 2:
                xid = int.from_bytes(data[4:8], "big")
                if base <= xid < base + count:
                    seen.add(xid)
                    last_reply[0] = time.perf_counter()

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0.0005:
                time.sleep(delay)
        try:
            sock.sendto(packet, ("255.255.255.255", 67))
        except BlockingIOError:
            pass
    sent_in = time.perf_counter() - start
    time.sleep(1.0)
    done.set()
    thread.join()
    sock.close()
    answered = len(seen)
    span = (last_reply[0] - start) if answered else 0.0
    return {"sent": count, "answered": answered, "send_seconds": round(sent_in, 3),
            "send_rate": round(count / sent_in) if sent_in else 0,
            "reply_rate": round(answered / span) if span else 0,
            "answered_pct": round(100.0 * answered / count, 1)}


# --- Dragonfly's server (runs inside the server namespace) ------------------------------------

async def serve_dragonfly(interface: str) -> None:
    sys.path.insert(0, str(ROOT))
    from dragonfly.edge.dhcp import DhcpService

    logging.basicConfig(level=logging.WARNING)
    service = DhcpService(interface=interface, server_ip=SERVER_IP, http_port=3000,
                          mode="auto")
    await service.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()
    print(json.dumps(service.counters.as_dict()), flush=True)


# --- orchestration ----------------------------------------------------------------------------

def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Namespaces:
    def __init__(self) -> None:
        self.server = f"dfb{os.getpid():x}s"
        self.client = f"dfb{os.getpid():x}c"

    def __enter__(self) -> Namespaces:
        try:
            sh("ip", "netns", "add", self.server)
            sh("ip", "netns", "add", self.client)
            sh("ip", "link", "add", SERVER_IF, "netns", self.server, "type", "veth", "peer",
               "name", CLIENT_IF, "netns", self.client)
            for ns, dev, ip in ((self.server, SERVER_IF, SERVER_IP),
                                (self.client, CLIENT_IF, CLIENT_IP)):
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_server(kind: str, ns: Namespaces, workdir: Path) -> subprocess.Popen[str]:
    if kind == "dragonfly":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-dragonfly"]
    else:
        cmd = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
               f"--interface={SERVER_IF}", "--bind-interfaces", "--user=root",
               f"--dhcp-range={SERVER_IP.rsplit('.', 1)[0]}.0,proxy",
               f"--pxe-service=x86PC,Dragonfly bench,undionly,{SERVER_IP}",
               "--quiet-dhcp", f"--log-facility={workdir / 'dnsmasq.log'}"]
    proc = subprocess.Popen(["ip", "netns", "exec", ns.server, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc


def run_client(ns: Namespaces, rate: int, count: int) -> dict[str, Any]:
    out = subprocess.run(["ip", "netns", "exec", ns.client, sys.executable,
                          str(Path(__file__).resolve()), "--client", "--rate", str(rate),
                          "--count", str(count)],
                         check=True, capture_output=True, text=True, timeout=120)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wait_answering(ns: Namespaces, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        if run_client(ns, 0, 5)["answered"]:
            return
    raise RuntimeError("server never answered")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,20000,30000,40000",
                    help="DISCOVERs per second, 0 = as fast as the client can send")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each flood")
    ap.add_argument("--max-count", type=int, default=40000, help="packets in a rate-0 flood")
    ap.add_argument("--servers", default="dragonfly,dnsmasq")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-dragonfly", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.rate, args.count, CLIENT_IF)))
        return 0
    if args.serve_dragonfly:
        asyncio.run(serve_dragonfly(SERVER_IF))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces, port 67)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    servers = args.servers.split(",")
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    print(f"{'round':<5} {'server':<10} {'offered/s':>11} {'sent':>6} {'answered':>8} "
          f"{'%':>6} {'replies/s':>9}")
    with tempfile.TemporaryDirectory(prefix="dhcp-flood-") as tmp, Namespaces() as ns:
        # Rounds alternate the servers so that load from anything else on the machine
        # falls on both alike; the summary takes the median of the rounds.
        for round_no in range(1, args.rounds + 1):
            for kind in servers:
                flood_server(kind, ns, Path(tmp), rates, args, round_no, results)
    summary(servers, rates, results)
    return 0


def flood_server(kind: str, ns: Namespaces, workdir: Path, rates: list[int],
                 args: argparse.Namespace, round_no: int,
                 results: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    proc = start_server(kind, ns, workdir)
    try:
        wait_answering(ns, proc)
        for rate in rates:
            count = int(rate * args.seconds) if rate else args.max_count
            r = run_client(ns, rate, count)
            results.setdefault((kind, rate), []).append(r)
            label = str(rate) if rate else f"max({r['send_rate']})"
            print(f"{round_no:<5} {kind:<10} {label:>11} {r['sent']:>6} {r['answered']:>8} "
                  f"{r['answered_pct']:>6} {r['reply_rate']:>9}", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        if kind == "dragonfly" and out:
            print(f"      dragonfly counters: {out.strip().splitlines()[-1]}")


def summary(servers: list[str], rates: list[int],
            results: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    def med(kind: str, rate: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[(kind, rate)]))

    print("\nmedian of rounds: answered % / replies per second")
    print(f"{'offered/s':>9} " + " ".join(f"{k:>20}" for k in servers)
          + ("   ratio dragonfly/dnsmasq" if len(servers) == 2 else ""))
    for rate in rates:
        cells = [f"{med(k, rate, 'answered_pct'):>9.1f}% {med(k, rate, 'reply_rate'):>9.0f}"
                 for k in servers]
        line = f"{rate or 'max':>9} " + " ".join(f"{c:>20}" for c in cells)
        if servers == ["dragonfly", "dnsmasq"]:
            pct = med("dragonfly", rate, "answered_pct") / max(
                med("dnsmasq", rate, "answered_pct"), 1e-9)
            rps = med("dragonfly", rate, "reply_rate") / max(
                med("dnsmasq", rate, "reply_rate"), 1e-9)
            line += f"   {pct:.2f} / {rps:.2f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
