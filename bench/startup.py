"""Startup: launch ``dist/dragonfly`` (demo) to its first HTTP 200, against a bare aiohttp
hello-world zipapp built the same way (shiv --compile-pyc --reproducible --compressed), as a
ratio.

    .venv/bin/python bench/startup.py [--runs 7]

Both zipapps are unpacked once first (shiv's one-time cache), so the numbers are warm starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_hello(work: Path) -> Path:
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-compile", "--target", str(site), "aiohttp"], check=True)
    (site / "hello.py").write_text(HELLO)
    out = work / "hello"
    subprocess.run([sys.executable, "-m", "shiv", "--site-packages", str(site), "-e",
                    "hello:main", "-o", str(out), "--compile-pyc", "--reproducible",
                    "--compressed"],
                   check=True)
    return out


def time_to_200(cmd: list[str], url: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}") from None
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    dragonfly = ROOT / "dist" / "dragonfly"
    if not dragonfly.exists():
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py")], check=True)
    work = Path(tempfile.mkdtemp(prefix="df-bench-"))
    try:
        hello = build_hello(work)
        env = {**os.environ, "SHIV_ROOT": str(work / "shiv"),
               "DRAGONFLY_CONFIG": str(work / "none.toml")}
        results: dict[str, list[float]] = {"dragonfly": [], "hello": []}
        for run in range(args.runs + 1):  # the first run of each unpacks: discarded
            port = free_port()
            d = time_to_200([str(dragonfly), "--port", str(port)],
                            f"http://127.0.0.1:{port}/api/version", env)
            port = free_port()
            h = time_to_200([str(hello), str(port)], f"http://127.0.0.1:{port}/", env)
            if run:
                results["dragonfly"].append(d)
                results["hello"].append(h)
        med_d = statistics.median(results["dragonfly"])
        med_h = statistics.median(results["hello"])
        print(f"first HTTP 200, median of {args.runs} warm starts:")
        print(f"  dragonfly demo   {med_d * 1000:7.0f} ms")
        print(f"  aiohttp hello    {med_h * 1000:7.0f} ms")
        print(f"  ratio            {med_d / med_h:7.2f}x  (goal: dragonfly < 1 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
