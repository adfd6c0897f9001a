"""A believable deployment history for the demo, made up when the demo's history loads, just
after its start (in memory only, like the rest of the demo): about 300 deployments over the
last 30 days, on the demo fleet's own machines and the catalog's templates, so the
dashboard's Deployed card and charts and the machine page's learned ETAs have something to
show from the first page.

The durations follow the demo's pace (a demo deployment takes about a minute, see
``DEMO_SPEED_BYTES`` in the simulator), so that the ETAs learned from this history fit the
deployments the simulator runs live. Within that pace they depend on what a real deployment
depends on: the target disk (NVMe fastest, spinning disks slowest), the CPU generation, the
vendor's firmware (the time to boot the deployment environment) and the template (bigger
images take longer). About 8 % fail, in the stage the reason names; most deployments happen
in working hours on weekdays. The same fleet and seed give the same history.

The simulator's own deployments are recorded by the history as they finish, like any other.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable

from dragonfly.demo import tinkerbell
from dragonfly.demo.fleet import STAGE_FAILURES
from dragonfly.domain import catalog
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State
from dragonfly.timer.history import DeploymentHistory, DeploymentRecord, HardwareClass, Stage

log = logging.getLogger(__name__)

COUNT = 300
DAYS = 30
FAIL_CHANCE = 0.08
TINKERBELL_SHARE = 0.4  # as the simulator's operator
BASE_SECONDS = 55.0  # a deployment of a mid-sized image on an average machine, at demo pace

# What makes a deployment slower or faster, as factors of BASE_SECONDS.
DISK_FACTOR = {"nvme": 0.78, "ssd": 1.0, "hdd": 1.45, "": 1.1}
NEW_CPUS = ("Gold 6430", "EPYC 9354")  # Sapphire Rapids, Genoa
OLD_CPUS = ("Silver 4314",)
VENDOR_FACTOR = {"Dell Inc.": 1.08, "HPE": 1.12, "Lenovo": 1.05, "Supermicro": 0.92,
                 "GIGABYTE": 0.95}  # firmware POST times: how long until the agent runs
# Deployments per hour of the day (local time), and the weekend's share of a weekday's.
HOUR_WEIGHTS = (0.15, 0.1, 0.1, 0.1, 0.1, 0.15, 0.3, 0.8, 2.2, 3.0, 3.0, 2.6,
                1.4, 2.4, 3.0, 2.8, 2.4, 1.6, 0.8, 0.5, 0.4, 0.3, 0.25, 0.2)
WEEKEND = 0.25
# Machines the operator never deployed: they only just turned up.
NEVER_DEPLOYED = (State.DISCOVERED,)
# The simulator's stages (native) and actions (Tinkerbell), with their shares of the time.
STAGES: dict[str, list[tuple[str, float]]] = {
    "native": list(catalog.NATIVE_STAGES),
    "tinkerbell": tinkerbell.STEPS,
}
STREAMS = ("stream image", "stream-image")  # the stages that write the image's bytes
REBOOTS = ("boot deployment environment", "reboot into OS", "boot-os")


def template_factor(image_bytes: int) -> float:
    """Bigger images stream longer: 2 GiB x0.85, 3.5 GiB x1.0, 10 GiB x1.3."""
    gib = image_bytes / (1 << 30)
    return 0.7 + 0.22 * math.log2(max(gib, 1.0))


def hardware_factor(machine: Machine, hardware: HardwareClass) -> float:
    cpu = hardware.cpu_model
    factor = DISK_FACTOR.get(hardware.disk_kind, 1.0)
    factor *= 0.88 if any(c in cpu for c in NEW_CPUS) else 1.12 if any(
        c in cpu for c in OLD_CPUS) else 1.0
    return factor * VENDOR_FACTOR.get(machine.vendor, 1.0)


class DemoHistory:
    """A demo service: backfills the deployment history once, when the demo starts (after the
    simulator has seeded the fleet)."""

    name = "demo deployment history"

    def __init__(self, fleet: Fleet, history: DeploymentHistory | None, seed: int = 7,
                 clock: Callable[[], float] = time.time, count: int = COUNT) -> None:
        self.fleet = fleet
        self.history = history
        self.seed = seed
        self.clock = clock
        self.count = count
        self._hardware: dict[str, HardwareClass] = {}

    async def start(self) -> None:
        if self.history is not None:
            # Made where the history loads, after the start (the demo answers meanwhile and
            # the history's readers wait), in memory only like the rest of the demo.
            self.history.backfill(self._made)

    def _made(self) -> list[DeploymentRecord]:
        records = self.records(self.clock())
        log.info("demo: backfilled %d deployments", len(records))
        return records

    async def stop(self) -> None:
        return None

    # --- the made-up history ------------------------------------------------------------------

    def records(self, now: float) -> list[DeploymentRecord]:
        """``count`` deployments over the last ``DAYS`` days, oldest first. Each installed
        machine's latest one installed its OS; each failed machine's latest one failed with
        the reason the machine shows."""
        rng = random.Random(f"demo-history-{self.seed}")
        machines = sorted((m for m in self.fleet.list_machines(limit=10_000).items
                           if m.state not in NEVER_DEPLOYED), key=lambda m: m.name)
        if not machines:
            return []
        offset = time.localtime(now).tm_gmtoff
        # Everything ends at least a few minutes ago: the deployments running now come after.
        ends = sorted(self._moment(rng, now - 300, offset) for _ in range(self.count))
        picks = [rng.choice(machines) for _ in ends]
        # The latest deployment of each installed or failed machine is the one that put it in
        # that state: give each such machine one of the last slots of its own.
        uses = Counter(m.id for m in picks)
        for machine in machines:
            if machine.state in (State.INSTALLED, State.FAILED) and not uses[machine.id]:
                spare = [i for i in range(len(picks) * 3 // 4, len(picks))
                         if uses[picks[i].id] > 1]
                if spare:
                    index = rng.choice(spare)
                    uses[picks[index].id] -= 1
                    picks[index] = machine
                    uses[machine.id] += 1
        last = {m.id: i for i, m in enumerate(picks)}
        out = []
        for index, (finished, machine) in enumerate(zip(ends, picks, strict=True)):
            final = last.get(machine.id) == index
            out.append(self._record(rng, index, machine, finished, final))
        return out

    @staticmethod
    def _moment(rng: random.Random, latest: float, offset: int) -> float:
        """When a deployment finished: a working hour of a weekday, mostly."""
        while True:
            at = latest - rng.uniform(0, DAYS * 86400)
            local = time.gmtime(at + offset)
            weight = HOUR_WEIGHTS[local.tm_hour] * (WEEKEND if local.tm_wday >= 5 else 1.0)
            if rng.random() * max(HOUR_WEIGHTS) < weight:
                return at

    def _record(self, rng: random.Random, index: int, machine: Machine, finished: float,
                final: bool) -> DeploymentRecord:
        if final and machine.state is State.INSTALLED and machine.os in catalog.TEMPLATES_BY_SLUG:
            template = catalog.TEMPLATES_BY_SLUG[machine.os]
        else:
            template = rng.choice(catalog.TEMPLATES)
        engine = "tinkerbell" if rng.random() < TINKERBELL_SHARE else "native"
        if engine == "tinkerbell" and template.slug not in tinkerbell.TEMPLATES:
            engine = "native"  # as the backend: Tinkerbell cannot run that template
        fails = rng.random() < FAIL_CHANCE
        reason = ""
        if final and machine.state is State.INSTALLED:
            fails = False
        elif final and machine.state is State.FAILED:
            # The deployment that failed the machine, in the stage its reason names.
            fails, reason = True, machine.state_reason
            engine = next((e for e in ("native", "tinkerbell")
                           if any(reason.startswith(n) for n, _ in STAGES[e])), engine)
        stages = STAGES[engine]
        failed_at = -1
        if fails:
            failed_at = next((i for i, (n, _) in enumerate(stages) if reason.startswith(n)), -1)
            if failed_at < 0:
                failed_at = rng.choice([i for i, (n, _) in enumerate(stages)
                                        if n in STAGE_FAILURES])
            reason = reason or rng.choice(STAGE_FAILURES[stages[failed_at][0]])

        hardware = self._hardware.get(machine.id) or self._hardware.setdefault(
            machine.id, HardwareClass.of(machine))  # one per machine: 300 records, ~40 machines
        total = (BASE_SECONDS * template_factor(template.image_bytes)
                 * hardware_factor(machine, hardware) * rng.lognormvariate(0.0, 0.1))
        # Stage by stage; a failed deployment stops partway through the stage that failed.
        timed: list[tuple[str, float, float]] = []  # name, seconds, fraction done
        for number, (name, share) in enumerate(stages):
            part = total * share * rng.lognormvariate(0.0, 0.08)
            if name in REBOOTS:
                part *= VENDOR_FACTOR.get(machine.vendor, 1.0)  # the firmware's POST again
            done = rng.uniform(0.2, 0.9) if number == failed_at else 1.0
            timed.append((name, part * done, done))
            if number == failed_at:
                break
        start = finished - sum(seconds for _, seconds, _ in timed)
        at, recorded = start, []
        for name, seconds, done in timed:
            recorded.append(Stage(name, "", "succeeded" if done == 1.0 else "failed",
                                  round(at, 3), round(seconds, 3),
                                  int(template.image_bytes * done) if name in STREAMS else 0))
            at += seconds
        return DeploymentRecord(
            id=f"demo-{self.seed}-{index:04d}", machine_id=machine.id,
            machine_name=machine.name, template=template.slug, engine=engine,
            hardware=hardware, result="failed" if fails else "succeeded", reason=reason,
            started_at=round(start, 3), finished_at=round(finished, 3), stages=recorded)
