#!/usr/bin/env python3
"""Image serving to agents, as a user runs it: ``dragonfly serve`` vs nginx, same file.

Dragonfly is the real server with default settings: ``dist/dragonfly`` (the zipapp) when it
is current with the source tree, else ``.venv``'s ``python -m dragonfly`` (``--server``
chooses), started with only ``--state-dir``, ``--bind 127.0.0.1``, ``--port`` and
``--dhcp-mode off`` (so no root network setup is needed). Its state dir is prepared as on an
installed server: ``dragonfly user add admin --role admin --password-stdin`` (first-run
setup, which the boot and agent routes require) and ``dragonfly image import FILE --template
bench`` (a raw file of random bytes). Agents download ``GET /images/<digest>``.

The peer is nginx (Debian's package) as its own process on 127.0.0.1 with a minimal config
written to the temp dir (``sendfile on``, ``worker_processes 1`` by default, access log off)
serving the very file of Dragonfly's image store at the same path.

Clients are ``curl -o /dev/null`` processes started together; the time is from starting the
first to the exit of the last (first request to last byte); throughput is total bytes over
that time. Every download's size is checked; one download from each server is hashed (sha256)
against the file before the timed rounds. Rounds alternate between the servers (ABBA order).
Server CPU seconds (the process tree's utime+stime from /proc/PID/stat), the clients' CPU and
the CPU other work on the machine took during the round ("others", with its softirq and
steal parts) are printed, and the time the server was runnable but waiting for a CPU
(/proc/PID/task/*/schedstat), so the bottleneck shows. Besides the ratio of medians, the
median of each round pair's own ratio (the two servers' rounds run back to back) is printed:
on a shared machine it is less sensitive to load that comes and goes.

    .venv/bin/python bench/image_serving.py                    # 1 GiB, 8 clients and 1, 5 rounds
    .venv/bin/python bench/image_serving.py --size-mib 256 --rounds 3 --clients 4
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ZIPAPP = REPO / "dist" / "dragonfly"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PASSWORD = "bench-image-serving-1"
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
{user}pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        location /images/ {{ alias {store}/; }}
    }}
}}
"""


# --- processes and CPU ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of `pid` and its live descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += int(stats[p][11]) + int(stats[p][12])  # utime, stime
        todo.extend(children.get(p, []))
    return total / TICK


def tree_runq_wait(pid: int) -> float:
    """Seconds the threads of `pid` and its children spent runnable but waiting for a CPU
    (/proc/PID/task/TID/schedstat, second field)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = task / "children"
            if children.exists():
                pids += [int(c) for c in children.read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, IndexError):
                    total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def cpu_times() -> tuple[float, float, float]:
    """CPU seconds all CPUs spent since boot (/proc/stat): busy (not idle or iowait), of
    which in softirq (loopback TCP delivery runs there) and stolen by the hypervisor."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal; guest is inside user
    return busy / TICK, fields[6] / TICK, fields[7] / TICK


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# --- Dragonfly ------------------------------------------------------------------------------


def zipapp_staleness() -> str | None:
    """None when every file of the source tree's package is in dist/dragonfly, byte for byte;
    else why not."""
    if not ZIPAPP.exists():
        return "dist/dragonfly does not exist"
    prefix = "site-packages/"
    with zipfile.ZipFile(ZIPAPP) as z:
        inside = {n[len(prefix):]: n for n in z.namelist() if n.startswith(prefix + "dragonfly/")}
        differ = []
        for path in sorted((REPO / "dragonfly").rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            rel = path.relative_to(REPO).as_posix()
            if rel not in inside or z.read(inside[rel]) != path.read_bytes():
                differ.append(rel)
    if differ:
        return f"{len(differ)} source files differ from it, e.g. {', '.join(differ[:3])}"
    return None


def dragonfly_cmd(kind: str) -> list[str]:
    return [str(ZIPAPP)] if kind == "zipapp" else [str(VENV_PYTHON), "-m", "dragonfly"]


def prepare_state(cmd: list[str], env: dict[str, str], state: Path, image: Path) -> str:
    subprocess.run([*cmd, "user", "add", "admin", "--role", "admin", "--password-stdin",
                    "--state-dir", str(state)], input=f"{PASSWORD}\n".encode(), env=env,
                   check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    out = subprocess.run([*cmd, "image", "import", str(image), "--template", "bench",
                          "--format", "raw", "--state-dir", str(state)], env=env, check=True,
                         capture_output=True, text=True, cwd=REPO).stdout
    print(f"  {out.strip()}")
    listed = subprocess.run([*cmd, "image", "list", "--json", "--state-dir", str(state)],
                            env=env, check=True, capture_output=True, text=True,
                            cwd=REPO).stdout
    rows = [json.loads(line) for line in listed.splitlines() if line.strip()]
    if len(rows) != 1:
        raise RuntimeError(f"expected one image in the store, got {listed!r}")
    return str(rows[0]["digest"])


# --- clients --------------------------------------------------------------------------------


def hash_download(url: str) -> tuple[str, int]:
    proc = subprocess.Popen(["curl", "-sf", url], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    h, n = hashlib.sha256(), 0
    while chunk := proc.stdout.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError(f"curl {url} failed with {proc.returncode}")
    return h.hexdigest(), n


def run_round(url: str, clients: int, server_pid: int, size: int,
              deadline: float) -> dict[str, float]:
    wait0 = tree_runq_wait(server_pid)
    cpu0, (busy0, softirq0, steal0), self0 = tree_cpu(server_pid), cpu_times(), os.times()
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w",
                               "%{http_code} %{size_download} %{time_total}", url],
                              stdout=subprocess.PIPE) for _ in range(clients)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(0.1, start + deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        outs.append(out.decode().split())
    elapsed = time.perf_counter() - start
    cpu1, (busy1, softirq1, steal1), self1 = tree_cpu(server_pid), cpu_times(), os.times()
    wait1 = tree_runq_wait(server_pid)
    ok = sum(1 for o in outs if len(o) == 3 and o[0] == "200" and int(o[1]) == size)
    got = sum(int(o[1]) for o in outs if len(o) == 3)
    server_cpu = cpu1 - cpu0
    client_cpu = (self1.children_user - self0.children_user
                  + self1.children_system - self0.children_system)
    others = max(0.0, (busy1 - busy0) - server_cpu - client_cpu
                 - (self1.user - self0.user + self1.system - self0.system))
    times = sorted(float(o[2]) for o in outs if len(o) == 3)
    return {"seconds": elapsed, "ok": ok, "first_done": times[0] if times else float("nan"),
            "bytes": got, "mbps": got / elapsed / 1e6,
            "server_cpu": server_cpu, "server_wait": wait1 - wait0, "client_cpu": client_cpu,
            "others": others / max(elapsed, 1e-6),
            "softirq": (softirq1 - softirq0) / max(elapsed, 1e-6),
            "steal": (steal1 - steal0) / max(elapsed, 1e-6)}


# --- driver ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="image size (random bytes)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent downloads (default 8)")
    ap.add_argument("--no-single", action="store_true", help="skip the 1-client rounds")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per server and case")
    ap.add_argument("--server", choices=("auto", "zipapp", "venv"), default="auto",
                    help="auto (default): dist/dragonfly when current with the tree, else .venv")
    ap.add_argument("--nginx-workers", default="1",
                    help="nginx worker_processes (default 1: one process, like Dragonfly)")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds per round, at most")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up when stopped too

    for tool in ("nginx", "curl"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install {tool}", file=sys.stderr)
            return 2
    stale = zipapp_staleness()
    kind = args.server
    if kind == "auto":
        kind = "zipapp" if stale is None else "venv"
    if kind == "zipapp" and stale is not None and args.server == "zipapp":
        print(f"warning: using dist/dragonfly although {stale}")
    how = {"zipapp": "dist/dragonfly (zipapp, current with the tree)" if stale is None
           else "dist/dragonfly (zipapp, NOT current with the tree)",
           "venv": f".venv/bin/python -m dragonfly (zipapp not used: {stale})"}[kind]

    load_before = loadavg()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="image-bench-"))
    try:
        env = {**os.environ, "SHIV_ROOT": str(tmp / "shiv"),
               "DRAGONFLY_CONFIG": str(tmp / "none.toml")}
        env.pop("AIOHTTP_NOSENDFILE", None)
        size = args.size_mib << 20
        image = tmp / "bench.raw"
        t = time.perf_counter()
        h = hashlib.sha256()
        with image.open("wb") as f:
            for _ in range(0, size, 16 << 20):
                block = os.urandom(min(16 << 20, size - f.tell()))
                h.update(block)
                f.write(block)
        digest = h.hexdigest()
        print(f"setup: {args.size_mib} MiB of random bytes ({time.perf_counter() - t:.1f} s); "
              f"Dragonfly: {how}")
        cmd = dragonfly_cmd(kind)
        state = tmp / "state"
        if prepare_state(cmd, env, state, image) != digest:
            raise RuntimeError("the image store's digest is not the file's sha256")
        image.unlink()  # both servers serve the store's copy
        stored = state / "images" / "sha256" / digest
        if stored.stat().st_size != size:
            raise RuntimeError(f"{stored} is not {size} bytes")

        # Dragonfly, default settings
        df_port = free_port()
        df_log = tmp / "dragonfly.log"
        with df_log.open("wb") as log:
            df = subprocess.Popen([*cmd, "serve", "--state-dir", str(state), "--bind",
                                   "127.0.0.1", "--port", str(df_port), "--dhcp-mode", "off"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        procs.append(df)
        # nginx, minimal config, the same file at the same path
        ng_port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            workers=args.nginx_workers, tmp=tmp, port=ng_port, store=stored.parent,
            user="user root;\n" if os.geteuid() == 0 else ""))  # the temp dir is 0700
        ng_log = tmp / "nginx-error.log"
        ng_log.touch()
        ng = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp), "-e", str(ng_log)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ng)
        urls = {"dragonfly": f"http://127.0.0.1:{df_port}/images/{digest}",
                "nginx": f"http://127.0.0.1:{ng_port}/images/{digest}"}
        pids = {"dragonfly": df.pid, "nginx": ng.pid}
        wait_http(urls["dragonfly"], df, 90, df_log)
        wait_http(urls["nginx"], ng, 15, ng_log)
        for name, url in urls.items():  # outside the timed part; also warms the page cache
            got, n = hash_download(url)
            if got != digest or n != size:
                raise RuntimeError(f"{name} served {n} bytes with sha256 {got}, not the file")
        print(f"  sha256 of one download from each server matches the file ({size} bytes)")
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        print(f"  nginx {version.strip().split('/')[-1]}, worker_processes {args.nginx_workers}, "
              "sendfile on; "
              f"{os.cpu_count()} CPUs shared by servers and clients; load {load_before}")

        cases = [args.clients] + ([] if args.no_single or args.clients == 1 else [1])
        summary: list[tuple[int, float, float]] = []
        for clients in cases:
            print(f"\n{clients} concurrent download(s) of {args.size_mib} MiB, "
                  f"{args.rounds} rounds per server:")
            results: dict[str, list[dict[str, float]]] = {"dragonfly": [], "nginx": []}
            order = ["dragonfly", "nginx"]
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    res = run_round(urls[name], clients, pids[name], size, args.deadline)
                    results[name].append(res)
                    print(f"  round {r + 1} {name:9s} {res['seconds']:6.2f} s "
                          f"{res['mbps']:5.0f} MB/s  ok {res['ok']}/{clients}  first done "
                          f"{res['first_done']:5.2f} s  "
                          f"server cpu {res['server_cpu']:5.2f} s (waited "
                          f"{res['server_wait']:4.2f} s for a CPU)  clients cpu "
                          f"{res['client_cpu']:5.2f} s  others {res['others']:.2f} CPUs (softirq "
                          f"{res['softirq']:.2f}, steal {res['steal']:.2f})",
                          flush=True)
            med: dict[str, float] = {}
            per_gb: dict[str, float] = {}
            for name, rows in results.items():
                med[name] = statistics.median(r["mbps"] for r in rows)
                busy = statistics.median(r["server_cpu"] / r["seconds"] for r in rows)
                per_gb[name] = statistics.median([r["server_cpu"] / (r["bytes"] / 1e9)
                                                  for r in rows if r["bytes"]] or [float("nan")])
                others = statistics.median(r["others"] for r in rows)
                bad = sum(1 for r in rows if r["ok"] != clients)
                print(f"  {name:9s} median {med[name]:6.0f} MB/s   server {busy:.2f} CPUs busy, "
                      f"{per_gb[name]:.3f} CPU s per GB   others {others:.2f} CPUs"
                      + (f"  {bad} round(s) incomplete!" if bad else ""))
                if bad:
                    med[name] = 0.0
            ratio = med["dragonfly"] / med["nginx"] if med["nginx"] else float("nan")
            paired = statistics.median([d["mbps"] / n["mbps"] for d, n in
                                        zip(results["dragonfly"], results["nginx"], strict=True)
                                        if n["mbps"]] or [float("nan")])
            print(f"  ratio dragonfly/nginx: throughput {ratio:.3f} (goal >= 0.95; median of "
                  f"the rounds' own ratios {paired:.3f}), server CPU per GB "
                  f"{per_gb['dragonfly'] / per_gb['nginx']:.2f}")
            summary.append((clients, ratio, med["dragonfly"]))
        print(f"\nload average before {load_before}, after {loadavg()}")
        return 0 if all(r >= 0.95 for _, r, _ in summary) else 1
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
