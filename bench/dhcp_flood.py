"""PXE DISCOVER flood: the installed product's proxyDHCP against dnsmasq in proxy mode.

The server under test is the whole appliance, ``python -m dragonfly serve`` with its default
settings (boot.dhcp_mode auto, boot doctor on, log level info, panel/API/event hub/fleet in
the same event loop), its store holding a fleet of ``--fleet`` machines (default 10,000) and
setup done with the CLI (an admin user). Its peer in the same run is ``dnsmasq`` in proxy
mode. Each runs alone in a network namespace joined to a client namespace by a veth pair, so
both bind the real port 67 (and Dragonfly its 4011, 69 and 3000) on their interface, exactly
as installed; nothing but the namespace, the state dir and the boot interface is set.

The client (its own namespace, 10.98.0.2, port 68) broadcasts what PXE firmware sends: a
DISCOVER with a new xid each, every one from its own MAC (``--macs N``: cycle over N MACs
instead) with that MAC's own option 97 UUID, option 93 arch 0 (BIOS), 94, 60
``PXEClient:Arch:00000:UNDI:002001``, 55 and 57, paced at a fixed rate for ``--seconds``,
then waits 1 s for stragglers. It counts the OFFERs for its xids and times each one.

Per flood: answered %, replies/s (OFFERs / time from the first DISCOVER to the last OFFER),
latency p50/p99 (DISCOVER sent to OFFER received, client clock) and the server's CPU per
answer (utime+stime of the server process from /proc, all its threads, from the start of the
flood until the server is idle again, so work it deferred counts, divided by OFFERs). First
one latency flood at ``--latency-rate`` (default 500/s). Rounds alternate the servers;
the summary is the median over rounds and each figure as a ratio Dragonfly/dnsmasq.

    sudo .venv/bin/python bench/dhcp_flood.py [--rates 5000,10000,20000,30000]
                                              [--seconds 2] [--rounds 3] [--fleet 10000]
                                              [--servers dragonfly,dnsmasq]
                                              [--target serve|component]

``--target component`` floods a bare ``DhcpService`` instead of ``dragonfly serve``: a
component figure, only to be shown beside the product figure and labelled as such.
``--profile FILE`` runs the server under cProfile (dragonfly only; slows it).

Bounded: every flood sends at most rate * seconds packets; the default run takes about 3
minutes. Needs root, iproute2 and dnsmasq. Namespaces are named dfb<pid>s/c and always
deleted, the state dir too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
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
PARAMS = bytes((1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50,
                51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135))
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; not exported by the socket module


# --- the client (runs inside the client namespace) --------------------------------------------

def discover(xid: int, mac: bytes, uuid: bytes) -> bytes:
    """A BIOS PXE ROM's DISCOVER (what iPXE's and Intel's UNDI ROMs send)."""
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 4, 0x8000, bytes(4),
                         bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"), bytes(64),
                         bytes(128))
    opts = (b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x39\x02\x05\xc0"
            + bytes((55, len(PARAMS))) + PARAMS + b"\x61\x11\x00" + uuid
            + b"\x5e\x03\x01\x02\x01" + b"\x5d\x02\x00\x00"
            + bytes((60, len(VENDOR))) + VENDOR + b"\xff")
    return (header + opts).ljust(300, b"\0")


def client(rate: int, count: int, macs: int, interface: str) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # root: beyond rmem_max
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    rng = random.Random(os.urandom(8))
    base = rng.getrandbits(32) & 0x7FF00000
    prefix = bytes((0x52, 0x54, rng.randrange(256), rng.randrange(256)))
    pool = macs or count
    idents = [(prefix + (i & 0xFFFF).to_bytes(2, "big") if pool <= 0x10000
               else prefix[:3] + i.to_bytes(3, "big"), rng.randbytes(16)) for i in range(pool)]
    packets = [discover(base + i, *idents[i % pool]) for i in range(count)]
    sent_at = [0.0] * count
    got_at = [0.0] * count
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        clock = time.perf_counter
        while not done.is_set():
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            now = clock()
            if len(data) >= 240 and data[0] == 2:
                i = int.from_bytes(data[4:8], "big") - base
                if 0 <= i < count and not got_at[i]:
                    got_at[i] = now

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0.0005:
                time.sleep(delay)
        sent_at[i] = time.perf_counter()
        try:
            sock.sendto(packet, ("255.255.255.255", 67))
        except BlockingIOError:
            pass
    sent_in = time.perf_counter() - start
    time.sleep(1.0)
    done.set()
    thread.join()
    sock.close()
    lat = sorted(g - s for s, g in zip(sent_at, got_at, strict=True) if g)
    answered = len(lat)
    span = (max(got_at) - start) if answered else 0.0

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else 0.0

    return {"sent": count, "answered": answered, "send_seconds": round(sent_in, 3),
            "send_rate": round(count / sent_in) if sent_in else 0,
            "reply_rate": round(answered / span) if span else 0,
            "answered_pct": round(100.0 * answered / count, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


# --- the component alone (--target component; runs inside the server namespace) ---------------

async def serve_component(interface: str) -> None:
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


# --- the product's state dir ------------------------------------------------------------------

def prepare_state(state: Path, fleet: int) -> None:
    """Setup done as an operator would (``dragonfly user add``) and ``fleet`` machines in the
    store (the demo fleet generator, as bench/scale.py and bench/checkins.py use)."""
    env = {**os.environ, "DRAGONFLY_CONFIG": str(state / "none.toml")}
    subprocess.run([sys.executable, "-m", "dragonfly", "user", "add", "admin", "--role",
                    "admin", "--password-stdin", "--state-dir", str(state)],
                   input="bench admin password\n", capture_output=True, text=True,
                   timeout=60, check=True, env=env, cwd=ROOT)
    if fleet:
        asyncio.run(preload(state / "dragonfly.db", fleet))


async def preload(path: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    from dragonfly.demo.fleet import START_STATES, make_machine
    from dragonfly.domain.fleet import MACHINE
    from dragonfly.store import Put, SqliteStore

    rng = random.Random(1)
    now = time.time()
    store = SqliteStore(path)
    await store.open()
    for start in range(0, count, 1000):
        machines = [make_machine(rng, i, START_STATES[i % len(START_STATES)], f"node-{i:05d}",
                                 now) for i in range(start, min(count, start + 1000))]
        await store.commit([Put(MACHINE, m.id, m.to_dict()) for m in machines])
    await store.close()


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


def start_server(kind: str, ns: Namespaces, workdir: Path, args: argparse.Namespace
                 ) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if kind == "dragonfly" and args.target == "serve":
        state = workdir / "state"
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(workdir / "template", state)
        env["DRAGONFLY_CONFIG"] = str(state / "none.toml")
        python = [sys.executable] + (["-m", "cProfile", "-o", args.profile]
                                     if args.profile else [])
        cmd = [*python, "-m", "dragonfly", "serve", "--state-dir", str(state),
               "--boot-interface", SERVER_IF]
    elif kind == "dragonfly":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-component"]
    else:
        cmd = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
               f"--interface={SERVER_IF}", "--bind-interfaces", "--user=root",
               f"--dhcp-range={SERVER_IP.rsplit('.', 1)[0]}.0,proxy",
               f"--pxe-service=x86PC,Dragonfly bench,undionly,{SERVER_IP}",
               "--quiet-dhcp", f"--log-facility={workdir / 'dnsmasq.log'}"]
    # ip netns exec execs the command: the Popen pid is the server's (for its CPU time).
    return subprocess.Popen(["ip", "netns", "exec", ns.server, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env, cwd=ROOT)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, limit: float = 30.0) -> None:
    """Until the server uses under 5% of a CPU over half a second (at most ``limit`` s)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.025:
            return
        last = now


def run_client(ns: Namespaces, rate: int, count: int, macs: int) -> dict[str, Any]:
    out = subprocess.run(["ip", "netns", "exec", ns.client, sys.executable,
                          str(Path(__file__).resolve()), "--client", "--rate", str(rate),
                          "--count", str(count), "--macs", str(macs)],
                         check=True, capture_output=True, text=True, timeout=120)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wait_answering(ns: Namespaces, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        if run_client(ns, 0, 5, 0)["answered"]:
            return
        time.sleep(0.5)
    raise RuntimeError("server never answered")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,20000,30000",
                    help="DISCOVERs per second, 0 = as fast as the client can send")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each flood")
    ap.add_argument("--max-count", type=int, default=40000, help="packets in a rate-0 flood")
    ap.add_argument("--macs", type=int, default=0,
                    help="cycle over this many MACs (0: every DISCOVER its own MAC)")
    ap.add_argument("--latency-rate", type=int, default=500, help="0: no latency flood")
    ap.add_argument("--latency-seconds", type=float, default=6.0)
    ap.add_argument("--fleet", type=int, default=10000, help="machines in Dragonfly's store")
    ap.add_argument("--servers", default="dragonfly,dnsmasq")
    ap.add_argument("--target", choices=("serve", "component"), default="serve",
                    help="serve: the whole appliance (default); component: DhcpService alone")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    ap.add_argument("--profile", help="cProfile output file for the Dragonfly server")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-component", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.rate, args.count, args.macs, CLIENT_IF)))
        return 0
    if args.serve_component:
        asyncio.run(serve_component(SERVER_IF))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces, port 67)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    floods = [(r, int(r * args.seconds) if r else args.max_count) for r in rates]
    if args.latency_rate:  # first: no deferred work of an earlier flood running beside it
        floods.insert(0, (-args.latency_rate, int(args.latency_rate * args.latency_seconds)))
    servers = args.servers.split(",")
    label = "dragonfly serve" if args.target == "serve" else "DhcpService (component)"
    print(f"# {label} vs dnsmasq; {os.cpu_count()} CPUs; loadavg "
          f"{Path('/proc/loadavg').read_text().strip()}; fleet {args.fleet}; "
          f"macs {args.macs or 'one per DISCOVER'}", flush=True)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    print(f"{'round':<5} {'server':<10} {'offered/s':>11} {'sent':>6} {'answered':>8} "
          f"{'%':>6} {'replies/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/ans':>10}")
    with tempfile.TemporaryDirectory(prefix="dhcp-flood-") as tmp, Namespaces() as ns:
        work = Path(tmp)
        work.chmod(0o755)
        if "dragonfly" in servers and args.target == "serve":
            (work / "template").mkdir()
            prepare_state(work / "template", args.fleet)
        # Rounds alternate the servers so that load from anything else on the machine
        # falls on both alike; the summary takes the median of the rounds.
        for round_no in range(1, args.rounds + 1):
            for kind in servers:
                flood_server(kind, ns, work, floods, args, round_no, results)
    print(f"# loadavg at the end: {Path('/proc/loadavg').read_text().strip()}")
    summary(servers, [r for r, _ in floods], results)
    return 0


def flood_server(kind: str, ns: Namespaces, workdir: Path, floods: list[tuple[int, int]],
                 args: argparse.Namespace, round_no: int,
                 results: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    proc = start_server(kind, ns, workdir, args)
    try:
        wait_answering(ns, proc)
        wait_quiet(proc.pid)  # start-up work and the probe's boot-log write
        for rate, count in floods:
            cpu0 = cpu_seconds(proc.pid)
            r = run_client(ns, abs(rate), count, args.macs)
            # The server's CPU for this flood includes what it deferred (Dragonfly's boot log
            # writes its timelines to the store when the flood eases): wait for it to finish.
            wait_quiet(proc.pid)
            r["cpu_us"] = round((cpu_seconds(proc.pid) - cpu0) * 1e6 / max(r["answered"], 1))
            results.setdefault((kind, rate), []).append(r)
            label = (f"{rate}" if rate > 0 else f"lat {-rate}" if rate < 0
                     else f"max({r['send_rate']})")
            print(f"{round_no:<5} {kind:<10} {label:>11} {r['sent']:>6} {r['answered']:>8} "
                  f"{r['answered_pct']:>6} {r['reply_rate']:>9} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8} {r['cpu_us']:>10}", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        if kind == "dragonfly" and args.target == "component" and out:
            print(f"      dragonfly counters: {out.strip().splitlines()[-1]}")


def summary(servers: list[str], rates: list[int],
            results: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    def med(kind: str, rate: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[(kind, rate)]))

    pair = servers == ["dragonfly", "dnsmasq"]
    print("\nmedian of rounds: answered % / replies per second / p99 ms / server CPU us per "
          "answer")
    print(f"{'offered/s':>9} " + " ".join(f"{k:>34}" for k in servers)
          + ("   ratio dragonfly/dnsmasq: answered, replies/s, p99, cpu" if pair else ""))
    for rate in rates:
        cells = [f"{med(k, rate, 'answered_pct'):>6.1f}% {med(k, rate, 'reply_rate'):>7.0f} "
                 f"{med(k, rate, 'p99_ms'):>7.2f} {med(k, rate, 'cpu_us'):>6.0f}"
                 for k in servers]
        name = f"lat {-rate}" if rate < 0 else str(rate or "max")
        line = f"{name:>9} " + " ".join(f"{c:>34}" for c in cells)
        if pair:
            ratios = [med("dragonfly", rate, key) / max(med("dnsmasq", rate, key), 1e-9)
                      for key in ("answered_pct", "reply_rate", "p99_ms", "cpu_us")]
            line += "   " + " / ".join(f"{x:.2f}" for x in ratios)
        print(line)


if __name__ == "__main__":
    sys.exit(main())
