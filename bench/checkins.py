#!/usr/bin/env python3
"""1,000 agent check-ins absorbed: the real server, 1,000 distinct discovery reports posted over
50 concurrent connections, then 1,000 heartbeats.

Each round starts ``python -m dragonfly serve --dhcp-mode off`` (the installed appliance's code
path: ``dragonfly.compose.server_context``, sqlite on disk in a fresh temporary state dir,
every middleware) on 127.0.0.1, after finishing setup with the CLI as an operator would
(``dragonfly user add`` + ``dragonfly token create``: agent routes are refused until setup is
complete). The client then:

1. posts 1,000 distinct, realistic check-in reports (what ``dragonfly/agent/agent.sh
   inventory`` prints on real servers: CPU, memory, 2-8 disks with serials and WWNs, 2-4 NICs,
   DMI with a unique SMBIOS UUID, a BMC address) to ``POST /api/agent/checkin`` from
   ``--concurrency`` workers;
2. reads ``GET /api/machines`` (API token) until all 1,000 machines are there, each in state
   ``discovered`` with the id its check-in answer named: the clock stops then;
3. posts one heartbeat per machine (``POST /api/agent/heartbeat``), same concurrency.

Two ways to send them:

* default (no root): server and client on the host's 127.0.0.1; aiohttp with ``--concurrency``
  keep-alive connections. Every agent then comes from 127.0.0.1, whose PTR name is
  ``localhost`` (from /etc/hosts, no DNS query), so every machine is named ``localhost-XXXX``.
* ``--netns`` (root): the server runs in a network namespace this run creates, and every
  agent connects from its own address (127.20.x.y, the namespace's loopback) with a new
  connection per request, as busybox wget in the discovery image does. The namespace's
  resolv.conf points at 127.0.0.53 inside it: ``--dns refused`` (nothing listens: every PTR
  lookup fails at once, as on a network whose DNS has no PTR records; machines get their
  memorable names) or ``--dns silent`` (a socket there swallows queries: an isolated
  provisioning network whose configured DNS server is unreachable).

Printed per round: wall time, requests/s, latency p50/p99, and CPU seconds of the server and of
this client (server and client share the machine's 2 cores, so the client's CPU is taken from
the server). ``--preload N`` puts N machines in the database first (a fleet that already
exists). ``--profile FILE`` runs the server under cProfile and prints its top functions.

    .venv/bin/python bench/checkins.py [--machines 1000] [--concurrency 50] [--rounds 3]
                                       [--preload 10000] [--profile /tmp/checkins.prof]
    sudo .venv/bin/python bench/checkins.py --netns [--dns refused|silent]

Bounded: every request has a 30 s timeout, every round a 120 s deadline; the server is
stopped (SIGTERM, then SIGKILL), its state dir and the namespace deleted, also on Ctrl-C and
errors. Traffic only on loopback (the host's, or the namespace's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import pstats
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
ROUND_SECONDS = 120

CPUS = (("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 32, 2000),
        ("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", 16, 2400),
        ("AMD EPYC 7543 32-Core Processor", 32, 2800),
        ("AMD EPYC 9354 32-Core Processor", 32, 3250))
SYSTEMS = (("Dell Inc.", "PowerEdge R650"), ("Dell Inc.", "PowerEdge R750xs"),
           ("HPE", "ProLiant DL380 Gen10 Plus"), ("Supermicro", "SYS-1029U-TRT"),
           ("Lenovo", "ThinkSystem SR650 V2"))
DISKS = (("SAMSUNG MZQL23T8HCLS-00A07", 3_840_755_982_336, False, "nvme"),
         ("INTEL SSDPE2KX040T8", 4_000_787_030_016, False, "nvme"),
         ("MZ7LH960HAJR0D3", 960_197_124_096, False, "sd"),
         ("ST4000NM000A-2HZ100", 4_000_787_030_016, True, "sd"))
NICS = (("ixgbe", 10_000), ("i40e", 25_000), ("mlx5_core", 100_000), ("bnxt_en", 25_000),
        ("tg3", 1_000))


# --- what the agents send -----------------------------------------------------------------------

def mac(rng: random.Random, used: set[str]) -> str:
    while True:
        value = f"{rng.choice((0x00, 0x0c, 0x3c, 0xa0, 0xb8)):02x}:" + ":".join(
            f"{rng.randrange(256):02x}" for _ in range(5))
        if value not in used:
            used.add(value)
            return value


def report(i: int, rng: random.Random, used: set[str]) -> dict[str, Any]:
    """One machine's check-in, shaped like ``agent.sh inventory`` prints it."""
    cpu_model, cores, mhz = rng.choice(CPUS)
    sockets = rng.choice((1, 2))
    vendor, product = rng.choice(SYSTEMS)
    disks = []
    nvme = sd = 0
    for _ in range(rng.randrange(2, 9)):
        model, size, rotational, kind = rng.choice(DISKS)
        name = f"nvme{nvme}n1" if kind == "nvme" else f"sd{chr(ord('a') + sd)}"
        nvme, sd = nvme + (kind == "nvme"), sd + (kind != "nvme")
        disks.append({"name": name, "size_bytes": size, "model": model,
                      "vendor": "ATA" if kind == "sd" else "",
                      "serial": f"S{rng.randrange(16**10):010X}",
                      "wwn": f"eui.{rng.randrange(16**16):016x}", "rotational": rotational,
                      "removable": False})
    nics = []
    for n in range(rng.randrange(2, 5)):
        driver, speed = rng.choice(NICS)
        nics.append({"name": f"eno{n + 1}", "mac": mac(rng, used), "speed_mbps": speed,
                     "link": n < 2, "driver": driver,
                     "ip": f"10.20.{i // 250}.{i % 250 + 2}" if n == 0 else ""})
    return {
        "agent_version": "1", "boot_mac": nics[0]["mac"], "ip": nics[0]["ip"],
        "cpu": {"model": cpu_model, "arch": "x86_64", "sockets": sockets,
                "cores": cores * sockets, "threads": 2 * cores * sockets, "mhz": mhz},
        "memory_bytes": rng.choice((64, 128, 256, 512, 1024)) * 2**30 - 3 * 2**28,
        "disks": disks, "nics": nics,
        "dmi": {"vendor": vendor, "product": product,
                "serial": f"{rng.randrange(36**7):07X}", "uuid": str(uuid.UUID(int=rng.getrandbits(
                    128), version=4))},
        "bmc": {"present": True, "interface": "ipmi0",
                "ip": f"10.30.{i // 250}.{i % 250 + 2}"},
        "virtualization": "none",
    }


# --- the server ---------------------------------------------------------------------------------

@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (fields 14 and 15 of /proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "dragonfly", *args], input=stdin,
                            capture_output=True, text=True, timeout=60, check=True, env=env,
                            cwd=REPO)
    return result.stdout.strip()


def preload_machines(count: int) -> list[Any]:
    """``count`` demo-fleet machines (as bench/scale.py makes them), generated once."""
    if not count:
        return []
    sys.path.insert(0, str(REPO))
    from dragonfly.demo.fleet import START_STATES, make_machine

    rng = random.Random(1)
    now = time.time()
    return [make_machine(rng, i, START_STATES[i % len(START_STATES)], f"node-{i:05d}", now)
            for i in range(count)]


_PRELOAD: list[Any] = []


def preloaded_macs(count: int) -> set[str]:
    """Generate the preloaded fleet; its MACs must not be reused by the check-ins."""
    _PRELOAD[:] = preload_machines(count)
    return {m for machine in _PRELOAD for m in (machine.mac, *machine.macs)}


async def preload(path: Path) -> None:
    from dragonfly.domain.fleet import MACHINE
    from dragonfly.store import Put, SqliteStore

    store = SqliteStore(path)
    await store.open()
    for start in range(0, len(_PRELOAD), 1000):
        await store.commit([Put(MACHINE, m.id, m.to_dict())
                            for m in _PRELOAD[start:start + 1000]])
    await store.close()


def start_server(state: Path, profile: Path | None, netns: str | None) -> Server:
    env = {**os.environ, "DRAGONFLY_CONFIG": str(state / "none.toml"),
           "DRAGONFLY_SERVER_LOG_LEVEL": "warning"}
    cli("user", "add", "admin", "--role", "admin", "--password-stdin", "--state-dir",
        str(state), stdin="bench admin password\n", env=env)
    token = cli("token", "create", "--user", "admin", "--name", "bench", "--state-dir",
                str(state), env=env)
    if _PRELOAD:
        asyncio.run(preload(state / "dragonfly.db"))
    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    if netns:
        python = ["ip", "netns", "exec", netns, *python]  # ip execs: the pid stays python's
    log = state / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*python, "-m", "dragonfly", "serve", "--state-dir", str(state), "--bind",
             "127.0.0.1", "--port", "0", "--dhcp-mode", "off"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    server = Server(proc, "", token, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            server.url = found.group(1)
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise SystemExit(f"dragonfly serve did not start:\n{log.read_text()[-3000:]}")


# --- the client ---------------------------------------------------------------------------------

@dataclass
class Phase:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self, name: str, count: int) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (f"{name:10} {count} in {self.seconds:.2f} s = {count / self.seconds:,.0f}/s, "
                f"latency p50 {statistics.median(lat) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
                + (f", {len(self.errors)} ERRORS (first: {self.errors[0]})"
                   if self.errors else ""))


Send = Callable[[int, str, bytes], Awaitable[tuple[int, bytes]]]


def source_ip(i: int) -> str:
    """Machine ``i``'s own address in ``--netns`` mode (the namespace's 127.0.0.0/8)."""
    return f"127.20.{i // 250}.{i % 250 + 1}"


def keepalive_sender(session: aiohttp.ClientSession, base: str) -> Send:
    async def send(i: int, path: str, body: bytes) -> tuple[int, bytes]:
        async with session.post(base + path, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.read()
    return send


def fresh_connection_sender(base: str) -> Send:
    """One new connection per request from the machine's own address, closed after the answer:
    what busybox wget (``--post-file``) does in the discovery image."""
    host, port = base.removeprefix("http://").rsplit(":", 1)

    async def send(i: int, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, int(port),
                                                       local_addr=(source_ip(i), 0))
        try:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "User-Agent: Wget\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return status, payload
    return send


async def post_all(send: Send, path: str, bodies: list[tuple[int, bytes]], concurrency: int,
                   phase: Phase) -> dict[int, dict[str, Any]]:
    """POST each (machine index, body) once, ``concurrency`` at a time; answers by index."""
    answers: dict[int, dict[str, Any]] = {}
    queue = iter(bodies)

    async def worker() -> None:
        for i, body in queue:  # one shared iterator: each item is taken by exactly one worker
            t0 = time.perf_counter()
            try:
                status, raw = await asyncio.wait_for(send(i, path, body), 30)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                phase.errors.append(repr(exc))
                continue
            phase.latencies.append(time.perf_counter() - t0)
            if status != 200:
                phase.errors.append(f"{status} {raw[:200]!r}")
                continue
            answers[i] = json.loads(raw)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return answers


async def probe_boot_file(session: aiohttp.ClientSession, base: str, phase: Phase) -> None:
    """A booting machine asking for the discovery kernel every 100 ms meanwhile. The state dir
    has none, so the answer is a 404; the handler's file check runs in the default thread
    pool, like TFTP's file lookups and the initrd's reads (and the PTR lookups)."""
    while True:
        t0 = time.perf_counter()
        async with session.get(f"{base}/boot/discovery/vmlinuz") as response:
            await response.read()
            if response.status != 404:
                phase.errors.append(f"kernel probe: {response.status}")
        phase.latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(0.1)


async def machines_in_api(session: aiohttp.ClientSession, server: Server,
                          ids: set[str]) -> list[dict[str, Any]]:
    """The machines of ``ids`` that the machine list shows in state ``discovered``."""
    headers = {"Authorization": f"Bearer {server.token}"}
    async with session.get(f"{server.url}/api/machines?state=discovered&limit=10000",
                           headers=headers) as response:
        response.raise_for_status()
        items = (await response.json())["items"]
    return [m for m in items if m["id"] in ids]


async def one_round(server: Server, reports: list[dict[str, Any]], concurrency: int,
                    fresh: bool) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # One request first so the server's lazy imports and caches do not count.
        async with session.get(f"{server.url}/api/version") as response:
            response.raise_for_status()
        send = fresh_connection_sender(server.url) if fresh else keepalive_sender(
            session, server.url)
        bodies = [(i, json.dumps(r).encode()) for i, r in enumerate(reports)]
        cpu0, client0 = server.cpu_seconds(), time.process_time()
        checkins = Phase()
        t0 = time.perf_counter()
        probe = Phase()
        prober = asyncio.create_task(probe_boot_file(session, server.url, probe))
        try:
            answers = await post_all(send, "/api/agent/checkin", bodies, concurrency,
                                     checkins)
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        answered = time.perf_counter() - t0
        ids = {a["machine_id"] for a in answers.values()}
        present = await machines_in_api(session, server, ids)
        while len(present) < len(reports) and time.perf_counter() - t0 < ROUND_SECONDS:
            await asyncio.sleep(0.05)
            present = await machines_in_api(session, server, ids)
        checkins.seconds = time.perf_counter() - t0
        cpu1, client1 = server.cpu_seconds(), time.process_time()
        beats = [(i, json.dumps({"machine_id": a["machine_id"], "mac": reports[i]["boot_mac"],
                                 "uptime_seconds": 42, "status": "waiting"}).encode())
                 for i, a in sorted(answers.items())]
        heartbeats = Phase()
        t1 = time.perf_counter()
        beat_answers = await post_all(send, "/api/agent/heartbeat", beats, concurrency,
                                      heartbeats)
        heartbeats.seconds = time.perf_counter() - t1
        cpu2, client2 = server.cpu_seconds(), time.process_time()
    return {"checkins": checkins, "answered": answered, "present": len(present),
            "probe": probe,
            "names": sorted({m["name"] for m in present}), "distinct": len(ids),
            "heartbeats": heartbeats,
            "waiting": sum(1 for a in beat_answers.values() if a.get("action") == "wait"),
            "cpu": (cpu1 - cpu0, cpu2 - cpu1),
            "client_cpu": (client1 - client0, client2 - client1)}


# --- a network namespace (--netns) --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def create_netns(dns: str, cleanup: contextlib.ExitStack) -> str:
    """A namespace with only loopback up; its resolv.conf names 127.0.0.53 inside it. With
    ``dns="silent"`` a socket there takes queries and never answers."""
    name = f"dflck{os.getpid():x}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    cleanup.callback(subprocess.run, ["ip", "netns", "del", name], capture_output=True)
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True, exist_ok=True)
    cleanup.callback(shutil.rmtree, etc, True)
    # glibc's defaults (5 s timeout, 2 attempts), as an operator's resolv.conf would have.
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                   capture_output=True)
    enter_netns(name)  # this thread (the client's event loop) from now on
    if dns == "silent":
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.53", 53))
        cleanup.callback(sink.close)
    return name


def enter_netns(name: str) -> None:
    with open(f"/run/netns/{name}", "rb") as fh:
        if _libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")


# --- main ---------------------------------------------------------------------------------------

def print_profile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="each with a fresh server")
    parser.add_argument("--preload", type=int, default=0,
                        help="machines already in the database")
    parser.add_argument("--netns", action="store_true",
                        help="own namespace, an address per agent, a connection per request")
    parser.add_argument("--dns", choices=("refused", "silent"), default="refused",
                        help="with --netns: how the namespace's DNS server behaves")
    parser.add_argument("--profile", type=Path,
                        help="run the server under cProfile (one round), write stats here")
    parser.add_argument("--top", type=int, default=25, help="profile lines to print")
    args = parser.parse_args(argv)
    if not 1 <= args.machines <= 10_000 or not 1 <= args.concurrency <= 500:
        parser.error("--machines 1..10000, --concurrency 1..500")
    if not 0 <= args.preload <= 100_000:
        parser.error("--preload 0..100000")
    if args.netns and os.geteuid() != 0:
        parser.error("--netns needs root (ip netns)")
    rounds = 1 if args.profile else args.rounds
    signal.signal(signal.SIGTERM, interrupt)

    used = preloaded_macs(args.preload)
    rng = random.Random(20261125)
    reports = [report(i, rng, used) for i in range(args.machines)]
    how = (f"--netns: an address and a new connection per agent, DNS {args.dns}"
           if args.netns else f"{args.concurrency} keep-alive connections from 127.0.0.1")
    print(f"{args.machines} check-ins, {args.concurrency} at a time, {how}; "
          f"{args.preload} machines preloaded; {rounds} round(s); {os.cpu_count()} CPUs "
          f"shared by server and client; load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    with contextlib.ExitStack() as outer:
        netns = create_netns(args.dns, outer) if args.netns else None
        for n in range(rounds):
            with contextlib.ExitStack() as cleanup:
                state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(
                    prefix="dragonfly-checkins-")))
                server = start_server(state, args.profile, netns)
                cleanup.callback(server.stop)
                result = asyncio.run(asyncio.wait_for(
                    one_round(server, reports, args.concurrency, args.netns), ROUND_SECONDS))
                results.append(result)
                cpu, client = result["cpu"], result["client_cpu"]
                print(f"round {n + 1}: {result['checkins'].line('check-ins', args.machines)}; "
                      f"{result['present']}/{args.machines} in the API "
                      f"({result['distinct']} distinct ids; all answered after "
                      f"{result['answered']:.2f} s); CPU server {cpu[0]:.2f} s, "
                      f"client {client[0]:.2f} s", flush=True)
                print(f"         {result['heartbeats'].line('heartbeats', len(reports))}; "
                      f"{result['waiting']} told to wait; CPU server {cpu[1]:.2f} s, "
                      f"client {client[1]:.2f} s", flush=True)
                probe = result["probe"].latencies or [0.0]
                print(f"         a kernel request meanwhile (x{len(probe)}): p50 "
                      f"{statistics.median(probe) * 1000:.0f} ms, max {max(probe) * 1000:.0f} ms",
                      flush=True)
                names = result["names"]
                print(f"         {len(names)} distinct names, e.g. {', '.join(names[:3])}",
                      flush=True)
                server.stop()
                if "Traceback" in server.log.read_text():
                    print(server.log.read_text()[-3000:], file=sys.stderr)
    ok = all(r["present"] == args.machines and not r["checkins"].errors
             and not r["heartbeats"].errors and r["waiting"] == args.machines for r in results)
    check = statistics.median(r["checkins"].seconds for r in results)
    beat = statistics.median(r["heartbeats"].seconds for r in results)
    print(f"\nmedian of {rounds}: {args.machines} check-ins absorbed in {check:.2f} s "
          f"({args.machines / check:,.0f}/s; goal: 1,000 in under 2 s: "
          f"{'met' if check * 1000 / args.machines < 2 else 'NOT met'}), "
          f"{len(reports)} heartbeats in {beat:.2f} s ({len(reports) / beat:,.0f}/s)"
          f"{'' if ok else '; SOME REQUESTS FAILED'}")
    if args.profile:
        print_profile(args.profile, args.top)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
