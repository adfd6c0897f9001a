#!/usr/bin/env python3
"""N concurrent TFTP downloads of one file: Dragonfly's TFTP server vs tftpd-hpa (and tftpy).

Every server runs as its own process on 127.0.0.1 and is measured with the same client:

* ``raw`` (default): one process, one thread, an epoll loop over N UDP sockets written
  directly on the socket API (no asyncio), so the client costs as little Python as possible;
* ``busybox``: N ``busybox tftp -g`` processes (C), started together.

The time is from the first request to the last byte of the last download. Every download is
checked byte for byte (sha256) after the clock stops. Server and client CPU seconds are
printed so one can see which side was the bottleneck. Bounded: each round has a deadline.

    .venv/bin/python bench/tftp_concurrent.py                      # 200 x ipxe.efi, blksize 1456
    .venv/bin/python bench/tftp_concurrent.py --client busybox --servers dragonfly,tftpd-hpa,tftpy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILE = Path("/usr/lib/ipxe/ipxe.efi")


# --- servers (each in its own process) ------------------------------------------------------


def serve_dragonfly(port: int, path: Path, workers: int) -> None:
    sys.path.insert(0, str(REPO))
    from dragonfly.edge.tftp import TftpServer

    async def main() -> None:
        records = []
        server = TftpServer(lambda name: path if name == path.name else None,
                            host="127.0.0.1", port=port, workers=workers,
                            on_transfer=records.append)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop()
        if os.environ.get("TFTP_BENCH_STATS"):
            print(f"    dragonfly stats: {server.stats}", file=sys.stderr)
            if records:
                t0 = min(r.started_at for r in records)
                slow = sorted(records, key=lambda r: r.started_at + r.duration)[-3:]
                for r in slow:
                    print(f"    slowest: started +{r.started_at - t0:.2f} s, took "
                          f"{r.duration:.2f} s, {r.outcome}", file=sys.stderr)

    asyncio.run(main())


def serve_tftpy(port: int, path: Path) -> None:
    import logging

    import tftpy

    logging.getLogger("tftpy").setLevel(logging.CRITICAL)  # it warns per duplicate ACK
    server = tftpy.TftpServer(str(path.parent))
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.listen("127.0.0.1", port)


def free_udp_port() -> int:
    # Only for the benchmark: tftpd-hpa needs a port given on its command line.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(kind: str, root: Path, path: Path, workers: int,
                 cpus: set[int] | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_udp_port()

    def pin() -> None:  # before exec, so every thread and fork of the server inherits it
        if cpus:
            os.sched_setaffinity(0, cpus)

    if kind == "tftpd-hpa":
        cmd = ["in.tftpd", "-L", "-s", str(root), "-a", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(cmd, preexec_fn=pin)
        time.sleep(0.3)
    else:
        me = str(Path(__file__).resolve())
        proc = subprocess.Popen([sys.executable, me, f"--serve-{kind}", str(port), str(path),
                                 "--workers", str(workers)], stdout=subprocess.PIPE,
                                preexec_fn=pin)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{kind} server did not start")
        time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"{kind} server exited at once")
    return proc, port


class CpuMeter:
    """CPU seconds of a server and everything it forks (tftpd-hpa forks per transfer and does
    not wait for its children, so /proc/PID/stat misses them): a cgroup-v1 cpuacct group when
    we may make one (root), else None."""

    def __init__(self, pid: int) -> None:
        self.group: Path | None = Path(f"/sys/fs/cgroup/cpuacct/tftp-bench-{os.getpid()}-{pid}")
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(pid))
        except OSError:
            self.group = None

    def seconds(self) -> float | None:
        if self.group is None:
            return None
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):
                self.group.rmdir()


# --- clients --------------------------------------------------------------------------------


def raw_client(port: int, name: str, clients: int, blksize: int,
               deadline: float) -> tuple[float, list[bytes], int]:
    """Returns (seconds, contents, retransmissions). Unfinished downloads come back short."""
    ep = select.epoll()
    rrq = (b"\0\1" + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode()
           + b"\0tsize\0" + b"0\0")
    state: dict[int, dict[str, object]] = {}
    socks: dict[int, socket.socket] = {}
    resent = 0
    start = time.perf_counter()
    for _ in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        s.sendto(rrq, ("127.0.0.1", port))
        fd = s.fileno()
        socks[fd] = s
        state[fd] = {"peer": None, "expect": 1, "chunks": [], "last": rrq, "t": start,
                     "done": False}
        ep.register(fd, select.EPOLLIN)
    remaining = clients
    end = start
    while remaining and time.perf_counter() < deadline:
        for fd, _ in ep.poll(0.2):
            s, st = socks[fd], state[fd]
            while True:
                try:
                    data, addr = s.recvfrom(blksize + 4)
                except BlockingIOError:
                    break
                op = data[1]
                if st["peer"] is None:
                    st["peer"] = addr
                if op == 6:  # OACK
                    ack = b"\0\4\0\0"
                elif op == 3:
                    block = (data[2] << 8) | data[3]
                    expect = int(st["expect"])  # type: ignore[call-overload]
                    if block != expect & 0xFFFF:
                        s.sendto(b"\0\4" + data[2:4], addr)  # duplicate: re-ACK
                        continue
                    chunks = st["chunks"]
                    assert isinstance(chunks, list)
                    chunks.append(data[4:])
                    st["expect"] = expect + 1
                    ack = b"\0\4" + data[2:4]
                    if len(data) - 4 < blksize:
                        s.sendto(ack, addr)
                        ep.unregister(fd)
                        st["done"] = True
                        remaining -= 1
                        end = time.perf_counter()
                        break
                else:  # ERROR
                    ep.unregister(fd)
                    st["done"] = True
                    remaining -= 1
                    break
                s.sendto(ack, addr)
                st["last"], st["t"] = ack, time.perf_counter()
        now = time.perf_counter()
        for fd, st in state.items():  # client-side retransmission after 1 s of silence
            if not st["done"] and now - float(st["t"]) > 1.0:  # type: ignore[arg-type]
                peer = st["peer"] or ("127.0.0.1", port)
                socks[fd].sendto(st["last"], peer)  # type: ignore[arg-type]
                st["t"] = now
                resent += 1
    for s in socks.values():
        s.close()
    ep.close()
    contents = [b"".join(st["chunks"]) for st in state.values()]  # type: ignore[arg-type]
    return end - start, contents, resent


def busybox_client(port: int, name: str, clients: int, blksize: int, outdir: Path,
                   deadline: float) -> tuple[float, list[bytes], int]:
    start = time.perf_counter()
    procs = [subprocess.Popen(["busybox", "tftp", "-g", "-r", name, "-l", str(outdir / str(i)),
                               "-b", str(blksize), "127.0.0.1", str(port)],
                              stderr=subprocess.DEVNULL)
             for i in range(clients)]
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    elapsed = time.perf_counter() - start
    contents = []
    for i in range(clients):
        f = outdir / str(i)
        contents.append(f.read_bytes() if f.exists() else b"")
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return elapsed, contents, 0


# --- driver ---------------------------------------------------------------------------------


def idle_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs' time spent idle over the next `seconds` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(threshold: float, patience: float) -> float:
    """Wait until the machine is at least `threshold` idle (other work shares these CPUs)."""
    deadline = time.monotonic() + patience
    idle = idle_fraction()
    while idle < threshold and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


def busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_round(kind: str, args: argparse.Namespace, root: Path, path: Path,
              digest: str) -> dict[str, float]:
    proc, port = start_server(kind, root, path, args.workers, args.server_cpus)
    meter = CpuMeter(proc.pid)
    try:
        server_cpu0 = meter.seconds()
        self0 = os.times()
        busy0 = busy_seconds()
        deadline = time.perf_counter() + args.deadline
        if args.client == "raw":
            elapsed, contents, resent = raw_client(port, path.name, args.clients, args.blksize,
                                                   deadline)
        else:
            elapsed, contents, resent = busybox_client(port, path.name, args.clients,
                                                       args.blksize, root / "out", deadline)
        self1 = os.times()
        busy1 = busy_seconds()
        server_cpu1 = meter.seconds()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.1)
        meter.close()
    server_cpu = (server_cpu1 - server_cpu0
                  if server_cpu0 is not None and server_cpu1 is not None else float("nan"))
    ok = sum(1 for c in contents if hashlib.sha256(c).hexdigest() == digest)
    client_cpu = sum(self1[i] - self0[i] for i in range(4))
    # CPU that neither the server nor the client used during the round: other work on a
    # shared machine, which hurts a single-threaded server more than 200 processes.
    others = max(0.0, (busy1 - busy0) - client_cpu - (server_cpu if server_cpu == server_cpu
                                                       else 0.0))
    return {"seconds": elapsed, "ok": ok, "server_cpu": server_cpu, "client_cpu": client_cpu,
            "client_resent": resent, "others": others / max(elapsed, 1e-6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--blksize", type=int, default=1456)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client", choices=("raw", "busybox"), default="busybox")
    ap.add_argument("--servers", default="dragonfly,tftpd-hpa",
                    help="comma-separated: dragonfly, tftpd-hpa, tftpy")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds per round, at most")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="FRACTION",
                    help="before each round wait (up to 3 min) until the CPUs were at least "
                    "this idle over one second, e.g. 0.9 on a shared machine")
    ap.add_argument("--pin", choices=("none", "split"), default="none",
                    help="none (default): server and clients share every CPU; split: server "
                    "on CPU 0, clients on the others, as if the clients were other machines")
    ap.add_argument("--max-others", type=float, default=0.25, metavar="CPUS",
                    help="a round during which other processes used more than this many CPUs "
                    "is disturbed and run again (up to 4 times); 0 disables")
    ap.add_argument("--workers", type=int, default=0,
                    help="Dragonfly transfer worker threads (0: its default)")
    ap.add_argument("--serve-dragonfly", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-tftpy", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_dragonfly:
        serve_dragonfly(int(args.serve_dragonfly[0]), Path(args.serve_dragonfly[1]),
                        args.workers)
        return 0
    if args.serve_tftpy:
        serve_tftpy(int(args.serve_tftpy[0]), Path(args.serve_tftpy[1]))
        return 0

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    all_cpus = sorted(os.sched_getaffinity(0))
    args.server_cpus = None
    if args.pin == "split" and len(all_cpus) >= 2:
        args.server_cpus = {all_cpus[0]}
        os.sched_setaffinity(0, set(all_cpus[1:]))  # the client, and busybox it spawns
    if "tftpd-hpa" in servers and not shutil.which("in.tftpd"):
        print("in.tftpd not found: apt-get install tftpd-hpa", file=sys.stderr)
        return 2
    if args.client == "busybox" and not shutil.which("busybox"):
        print("busybox not found: apt-get install busybox-static", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tftp-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # tftpd-hpa drops to the tftp user
        (root / "out").mkdir()
        (root / "out").chmod(0o777)
        path = root / args.file.name
        shutil.copyfile(args.file, path)
        path.chmod(0o644)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        print(f"{args.clients} concurrent downloads of {path.name} ({len(data)} bytes), "
              f"blksize {args.blksize}, client {args.client}, {args.rounds} rounds, "
              f"{os.cpu_count()} CPUs, pin {args.pin}")
        results: dict[str, list[dict[str, float]]] = {kind: [] for kind in servers}
        for r in range(args.rounds):  # interleaved, so background load hits every server
            for kind in servers:
                for attempt in range(5):
                    if args.wait_idle:
                        wait_idle(args.wait_idle, 180)
                    res = run_round(kind, args, root, path, digest)
                    disturbed = bool(args.max_others) and res["others"] > args.max_others
                    print(f"  round {r + 1} {kind:10s} {res['seconds']:6.2f} s  "
                          f"ok {res['ok']}/{args.clients}  server cpu {res['server_cpu']:.2f} s"
                          f"  client cpu {res['client_cpu']:.2f} s  others "
                          f"{res['others']:.2f} CPUs" + ("  DISTURBED" if disturbed else ""),
                          flush=True)
                    if not disturbed or attempt == 4:
                        break
                results[kind].append(res)
        medians: dict[str, float] = {}
        for kind, rows in results.items():
            medians[kind] = statistics.median(r["seconds"] for r in rows)
            if any(r["ok"] != args.clients for r in rows):
                medians[kind] = float("inf")
                print(f"  {kind}: some downloads failed or were incomplete")
        print()
        if max(os.getloadavg()) > 1.5:
            print(f"warning: load average {os.getloadavg()[0]:.1f}: other work shares these "
                  "CPUs, and a single-threaded server suffers more from that than 200 "
                  "processes do (see --wait-idle)")
        for kind, secs in medians.items():
            print(f"{kind:10s} median {secs:6.2f} s")
        if "dragonfly" in medians and "tftpd-hpa" in medians:
            ratio = medians["dragonfly"] / medians["tftpd-hpa"]
            print(f"ratio dragonfly/tftpd-hpa = {ratio:.2f} (goal <= 1.5)")
            return 0 if ratio <= 1.5 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
