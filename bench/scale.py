"""Scale: 10,000 machines and 10,000 finished deployments in a real sqlite file; server time
of the machine list API and page, search, the deployment timer's history and figures, and the
process's memory.

    .venv/bin/python bench/scale.py [--machines 10000] [--deployments 10000] [--runs 20]

Server time is read from the ``Server-Timing`` header each response carries (handler time,
excluding the client). Goal (DESIGN.md §8): list API and page each under 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from dragonfly.app import create_app
from dragonfly.compose import server_context
from dragonfly.config import Config
from dragonfly.demo.fleet import START_STATES, make_machine
from dragonfly.domain.fleet import MACHINE
from dragonfly.domain.model import Machine
from dragonfly.store import Put, SqliteStore
from dragonfly.timer.history import DEPLOYMENT, DeploymentRecord, HardwareClass, Stage


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STAGES = (("prepare-image", 20), ("select-disk", 1), ("wipe", 2), ("stream-image", 240),
          ("verify", 60), ("fix-gpt", 3), ("write-seed", 2), ("boot-entry", 1), ("reboot", 5),
          ("first-boot", 90))
TEMPLATES = ("debian-12", "debian-13", "ubuntu-24.04", "ubuntu-22.04", "rocky-9", "alma-9")


def deployment(rng: random.Random, i: int, machine: Machine, end: float) -> DeploymentRecord:
    """A finished deployment as the history stores it: every stage timed, some failed."""
    speed = rng.uniform(0.5, 2.0)
    failed_at = rng.randrange(len(STAGES)) if rng.random() < 0.08 else -1
    stages: list[dict[str, Any]] = []
    t = end
    for n, (name, seconds) in enumerate(reversed(STAGES)):
        took = seconds * speed * rng.uniform(0.9, 1.1)
        stages.insert(0, {"name": name, "label": name, "state": "failed"
                          if len(STAGES) - 1 - n == failed_at else "succeeded",
                          "started_at": t - took, "finished_at": t, "seconds": round(took, 3),
                          "bytes": 2_400_000_000 if name == "stream-image" else 0})
        t -= took
    if failed_at >= 0:
        stages = stages[:failed_at + 1]
    return DeploymentRecord(f"wf-{i:06d}", machine.id, machine.name, rng.choice(TEMPLATES),
                            "native", HardwareClass.of(machine),
                            "failed" if failed_at >= 0 else "succeeded",
                            "checksum mismatch after write" if failed_at >= 0 else "", t,
                            stages[-1]["finished_at"], [Stage.from_dict(d) for d in stages])


async def populate(path: Path, count: int, deployments: int = 0) -> None:
    store = SqliteStore(path)
    await store.open()
    rng = random.Random(1)
    now = time.time()
    batch = []
    machines = []
    for i in range(count):
        machine = make_machine(rng, i, START_STATES[i % len(START_STATES)], f"node-{i:05d}", now)
        machines.append(machine)
        batch.append(Put(MACHINE, machine.id, machine.to_dict()))
        if len(batch) == 1000:
            await store.commit(batch)
            batch = []
    for i in range(deployments):  # over the last 90 days
        record = deployment(rng, i, rng.choice(machines), now - rng.uniform(0, 90 * 86400))
        batch.append(Put(DEPLOYMENT, record.id, record.to_dict()))
        if len(batch) == 1000:
            await store.commit(batch)
            batch = []
    if batch:
        await store.commit(batch)
    await store.close()


def admin_token(state: Path) -> str:
    """An admin account and API token made with the real CLI, as an operator would."""
    dragonfly = [sys.executable, "-m", "dragonfly"]
    subprocess.run([*dragonfly, "user", "add", "bench", "--role", "admin", "--password-stdin",
                    "--state-dir", str(state)], input="bench password 123\n", text=True,
                   check=True, capture_output=True)
    result = subprocess.run([*dragonfly, "token", "create", "--user", "bench", "--name",
                             "bench", "--state-dir", str(state)], text=True, check=True,
                            capture_output=True)
    return result.stdout.strip()


async def timed(client: TestClient, url: str, runs: int, token: str
                ) -> tuple[float, float, int]:
    durations = []
    size = 0
    for _ in range(runs):
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        body = await response.read()
        assert response.status == 200, (url, response.status, body[:200])
        size = len(body)
        durations.append(float(response.headers["Server-Timing"].split("dur=")[1]))
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1], size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="df-scale-") as tmp:
        state = Path(tmp)
        t0 = time.perf_counter()
        await populate(state / "dragonfly.db", args.machines, args.deployments)
        token = admin_token(state)
        print(f"populated {args.machines} machines and {args.deployments} deployments in "
              f"{time.perf_counter() - t0:.1f} s; "
              f"db {(state / 'dragonfly.db').stat().st_size / 1e6:.1f} MB")
        base_rss = rss_mb()
        config = Config.load(None, env={}, overrides={"server.state_dir": str(state),
                                                      "boot.dhcp_mode": "off"})
        ctx = server_context(config)
        t0 = time.perf_counter()
        async with TestClient(TestServer(create_app(ctx))) as client:
            print(f"app start (load into memory) {time.perf_counter() - t0:.2f} s; "
                  f"RSS {rss_mb():.0f} MB (+{rss_mb() - base_rss:.0f} MB for the fleet)")
            cases = [
                ("list API, first 100", "/api/machines"),
                ("list API, search 'dell'", "/api/machines?q=dell"),
                ("list API, state+sort", "/api/machines?state=installed&sort=memory&order=desc"),
                ("list API, 1000 rows", "/api/machines?limit=1000"),
                ("machine-list page", "/machines"),
                ("dashboard page", "/"),
                ("stats API", "/api/stats"),
                ("deployment figures (dashboard)", "/api/deployments/stats"),
                ("deployments, newest 100", "/api/deployments"),
                ("deployments of a template, 1000", "/api/deployments?template=rocky-9&limit=1000"),
            ]
            print(f"{'case':32} {'median':>9} {'p95':>9} {'bytes':>9}")
            for name, url in cases:
                median, p95, size = await timed(client, url, args.runs, token)
                print(f"{name:32} {median:7.1f}ms {p95:7.1f}ms {size:9d}")
            print(f"RSS after the queries (history loaded): {rss_mb():.0f} MB")
        print("goal: list API and page each < 150 ms server time; deployment queries too")


if __name__ == "__main__":
    asyncio.run(main())
