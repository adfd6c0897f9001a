"""Startup: launch ``dist/dragonfly --demo`` to its first HTTP 200, against a bare aiohttp
hello-world zipapp built the same way, as ratios in the same run.

    .venv/bin/python bench/startup.py [--runs 9] [--cold-runs 5] [--rebuild] [--zipapp PATH]

Both zipapps come out of the same recipe, ``build_zipapp.pack`` (modules compiled at build
time, shiv ``--reproducible --compressed``, ``/usr/bin/env python3``, the build venv's shiv),
and carry the same aiohttp version. Rounds alternate the two programs (and which one goes
first), so drift in the machine's speed hits both; the figures are medians.

- warm: shiv's unpack cache already holds each zipapp (one discarded start unpacks it), the
  start a user sees every time after the first;
- cold: a fresh, empty unpack cache for every start (``SHIV_ROOT``), the very first start;
- RSS: the process's resident memory when its first 200 arrives (``/proc/<pid>/status``);
- CPU: the process's user+system CPU time when its first 200 arrives (``/proc/<pid>/stat``,
  10 ms ticks): what the start costs, much less moved than wall time by a busy machine;
- first page: for Dragonfly, the time until the panel's dashboard (``/``) has answered too,
  measured from the same start (the hello app has no second page);
- the number of files each zipapp's first start unpacks, and (``--unpack N``, a component
  figure) the CPU time of shiv's unpacking alone: its ``extract_site_packages`` run in a
  child interpreter into a fresh directory, N times each, alternated.

The recipe's zips (build_zipapp.ZIPPED_PACKAGES, START_ZIPPED, LAZY_PACKAGES) apply to
whichever of those packages a site holds: the peer's aiohttp and its dependencies are in none
of them, as they are not for Dragonfly either.

Dragonfly's first 200 is ``/api/version``: the server answers it only once the whole demo
(store, simulated fleet, services) has started, as for any page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_zipapp import ensure_build_venv, pack  # noqa: E402  (the product's own recipe)

WARM_GOAL, COLD_GOAL, RSS_GOAL_MB = 1.3, 1.5, 80.0
HELLO = '''
import sys
from aiohttp import web

async def hello(request):
    return web.Response(text="hello")

def main():
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[-1]), print=None)
'''


@dataclass
class Start:
    seconds: float  # launch to first 200
    rss_mb: float  # resident memory at that moment
    cpu_seconds: float  # user + system CPU time by then
    page_seconds: float | None = None  # launch to the first page's 200 (Dragonfly only)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aiohttp_version() -> str:
    """The aiohttp the Dragonfly zipapp carries (its build site), else this venv's."""
    for meta in (ROOT / ".build" / "site").glob("aiohttp-*.dist-info"):
        return meta.name.removeprefix("aiohttp-").removesuffix(".dist-info")
    from importlib.metadata import version

    return version("aiohttp")


def build_hello(work: Path) -> Path:
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-compile", "--target", str(site), f"aiohttp=={aiohttp_version()}"],
                   check=True)
    (site / "hello.py").write_text(HELLO)
    out = work / "hello"
    pack(site, "hello:main", out, ensure_build_venv())
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_once(cmd: list[str], url: str, env: dict[str, str], page: str | None = None) -> Start:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not get_200(url):
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
            time.sleep(0.005)
        result = Start(time.perf_counter() - start, rss_mb(proc.pid), cpu_seconds(proc.pid))
        if page is not None:
            if not get_200(page):
                raise RuntimeError(f"{page} did not answer 200")
            result.page_seconds = time.perf_counter() - start
        return result
    finally:
        proc.terminate()
        proc.wait()


def unpacked(zipapp: Path) -> int:
    """How many files shiv unpacks at the first start (its site-packages/ entries)."""
    with zipfile.ZipFile(zipapp) as archive:
        return sum(1 for n in archive.namelist() if n.startswith("site-packages/"))


UNPACK = """
import resource, sys, tempfile, zipfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])  # the zipapp's own bootstrap: the code its first start runs
from _bootstrap import extract_site_packages
with tempfile.TemporaryDirectory(dir=sys.argv[2]) as target:
    before = resource.getrusage(resource.RUSAGE_SELF)
    with zipfile.ZipFile(sys.argv[1]) as archive:
        extract_site_packages(archive, Path(target) / "unpacked")
    after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
"""


def unpack_cpu(zipapp: Path, work: Path) -> tuple[float, float]:
    """User and system CPU seconds of shiv's unpacking of ``zipapp`` alone."""
    done = subprocess.run([sys.executable, "-c", UNPACK, str(zipapp), str(work)], check=True,
                          capture_output=True, text=True)
    user, system = done.stdout.split()
    return float(user), float(system)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="warm starts of each (default 9)")
    parser.add_argument("--cold-runs", type=int, default=5,
                        help="starts of each with an empty unpack cache (default 5)")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild dist/dragonfly first (build_zipapp.py)")
    parser.add_argument("--zipapp", type=Path, default=ROOT / "dist" / "dragonfly",
                        help="the Dragonfly zipapp to start (default dist/dragonfly)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier Dragonfly zipapp, started in the same rounds too")
    parser.add_argument("--unpack", type=int, default=0, metavar="N",
                        help="also time shiv's unpacking alone, N times each (component)")
    args = parser.parse_args()
    dragonfly = args.zipapp.resolve()
    if args.rebuild or not dragonfly.exists():
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py")], check=True)
    work = Path(tempfile.mkdtemp(prefix="df-bench-"))
    try:
        programs = {"dragonfly": dragonfly, "hello": build_hello(work)}
        if args.baseline is not None:
            programs["baseline"] = args.baseline.resolve()
        base = {**os.environ, "DRAGONFLY_CONFIG": str(work / "none.toml")}

        def one(name: str, shiv_root: Path) -> Start:
            env = {**base, "SHIV_ROOT": str(shiv_root)}
            port = free_port()
            if name == "hello":
                return start_once([str(programs[name]), str(port)],
                                  f"http://127.0.0.1:{port}/", env)
            return start_once([str(programs[name]), "--demo", "--port", str(port)],
                              f"http://127.0.0.1:{port}/api/version", env,
                              page=f"http://127.0.0.1:{port}/")

        print(f"load average before: {load()}")
        warm: dict[str, list[Start]] = {name: [] for name in programs}
        cold: dict[str, list[Start]] = {name: [] for name in programs}
        for name in programs:
            one(name, work / "shiv")  # unpacks into the warm cache: discarded
        names = list(programs)
        for run in range(max(args.runs, args.cold_runs)):
            shift = run % len(names)  # each program goes first in turn
            for name in names[shift:] + names[:shift]:
                if run < args.runs:
                    warm[name].append(one(name, work / "shiv"))
                if run < args.cold_runs:
                    fresh = work / f"cold-{name}-{run}"
                    cold[name].append(one(name, fresh))
                    shutil.rmtree(fresh, ignore_errors=True)
        print(f"load average after:  {load()}")
        print("\n".join(report_lines(warm, cold, args.runs, args.cold_runs)))
        print("files the first start unpacks: " + ", ".join(
            f"{name} {unpacked(path)}" for name, path in programs.items()))
        if args.unpack:
            cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in programs}
            for _ in range(args.unpack):
                for name, path in programs.items():
                    cpu[name].append(unpack_cpu(path, work))
            print("component: shiv's unpacking alone, CPU (user+system, median): " + ", ".join(
                f"{name} {statistics.median(u + s for u, s in runs) * 1000:.0f} ms "
                f"(system {statistics.median(s for _, s in runs) * 1000:.0f})"
                for name, runs in cpu.items()))
        raw = {kind: {name: [s.__dict__ for s in starts] for name, starts in runs.items()}
               for kind, runs in (("warm", warm), ("cold", cold))}
        (work.parent / "df-bench-startup.json").write_text(json.dumps(raw, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report_lines(warm: dict[str, list[Start]], cold: dict[str, list[Start]], runs: int,
                 cold_runs: int) -> list[str]:
    def med(starts: list[Start]) -> float:
        return statistics.median(s.seconds for s in starts) * 1000

    def spread(starts: list[Start]) -> str:
        values = sorted(s.seconds * 1000 for s in starts)
        return f"({values[0]:.0f}-{values[-1]:.0f})"

    labels = {"dragonfly": "dragonfly --demo", "hello": "aiohttp hello",
              "baseline": "baseline --demo"}
    lines = []
    for kind, runs_of, n, goal in (("warm", warm, runs, WARM_GOAL),
                                   ("cold", cold, cold_runs, COLD_GOAL)):
        if not n:
            continue
        h = med(runs_of["hello"])
        lines.append(f"first HTTP 200, {kind} (median of {n}, min-max in ms):")
        for name, starts in runs_of.items():
            lines.append(f"  {labels[name]:17} {med(starts):7.0f} ms {spread(starts)}"
                         + ("" if name == "hello" else f"  {med(starts) / h:5.2f}x hello"))
        d = med(runs_of["dragonfly"])
        lines.append(f"  ratio             {d / h:7.2f}x  (goal <= {goal}x: "
                     f"{'met' if d / h <= goal else 'NOT met'})")
    for kind, runs_of in (("warm", warm), ("cold", cold)):
        if runs_of["hello"]:
            cpu_h = statistics.median(s.cpu_seconds for s in runs_of["hello"]) * 1000
            cpus = ", ".join(
                f"{name} {statistics.median(s.cpu_seconds for s in starts) * 1000:.0f} ms "
                f"(min {min(s.cpu_seconds for s in starts) * 1000:.0f})"
                for name, starts in runs_of.items())
            cpu_d = statistics.median(s.cpu_seconds for s in runs_of["dragonfly"]) * 1000
            lines.append(f"CPU time to first 200, {kind}: {cpus}; dragonfly/hello "
                         f"{cpu_d / cpu_h:.2f}x")
    for name in warm:
        pages = [s.page_seconds * 1000 for s in warm[name] if s.page_seconds is not None]
        if pages:
            lines.append(f"{name} first page (/, dashboard) answered, warm: "
                         f"{statistics.median(pages):.0f} ms after launch")
    rss = {name: statistics.median(s.rss_mb for s in starts) for name, starts in warm.items()}
    lines.append("RSS at first 200, warm: " + ", ".join(f"{n} {v:.1f} MB" for n, v in rss.items())
                 + f" (goal < {RSS_GOAL_MB:.0f} MB: "
                 + f"{'met' if rss['dragonfly'] < RSS_GOAL_MB else 'NOT met'})")
    return lines


if __name__ == "__main__":
    main()
