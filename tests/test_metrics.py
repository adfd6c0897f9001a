"""Prometheus metrics at /metrics: the real output of the demo and of a server context passes
`promtool check metrics` (Debian's prometheus package); the figures equal what the history,
the fleet, the boot edge and power control hold; no label value is a machine's id, name or
MAC; the aggregation is incremental; a restarted server reports the same deployment figures;
the metrics.token setting (401 without it, 200 with it; never shown by the settings API or
the logs); the Grafana dashboard's queries name only metrics /metrics exposes and parse as
PromQL (`promtool check rules`)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import DummyCookieJar
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dragonfly import __version__
from dragonfly.app import create_app
from dragonfly.auth.settings import RuntimeSettings
from dragonfly.compose import demo_context, server_context
from dragonfly.config import SECRET_MASK, SETTINGS_BY_KEY, Config
from dragonfly.context import CTX, AppContext
from dragonfly.demo.simulator import Simulator
from dragonfly.domain.model import State
from dragonfly.edge.dhcp.codec import BOOTREQUEST, Packet, encode
from dragonfly.edge.service import BootEdge
from dragonfly.store import SqliteStore
from dragonfly.timer import metrics
from dragonfly.timer.history import (
    DeploymentHistory,
    DeploymentRecord,
    HardwareClass,
    Stage,
)
from tests.test_auth_fixtures import (
    ANON,
    Client,
    installed_client,
    make_token,
    setup_admin,
)
from tests.test_boot_status import PAYLOAD, loopback_builder
from tests.test_tftp import download

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "dragonfly.json"
TOKEN = "metrics-secret-7f3a9c1e5b"
MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.I)
R650 = HardwareClass("Dell Inc.", "PowerEdge R650", "Xeon Gold 6338", 64, 256, "nvme", 960)
DL360 = HardwareClass("HPE", "ProLiant DL360 Gen10", "Xeon Silver 4214", 24, 128, "ssd", 480)


# --- helpers ---------------------------------------------------------------------------------

def promtool_check(text: str) -> None:
    """`promtool check metrics`: the exposition parses and follows Prometheus' naming rules
    (it prints one line per problem and exits non-zero)."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is required: apt-get install prometheus")
    result = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    problems = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not problems, problems


class Scrape:
    """A parsed exposition: its families and samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, f"no sample {name} {labels}"
        return float(sum(found))

    def values(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in self.samples
                if s.name == name}

    def exposed_names(self) -> set[str]:
        """Every name a query may use: the families' sample names (histograms' _bucket, _sum
        and _count, counters' _total), declared whether or not they have samples yet."""
        names = {s.name for s in self.samples}
        for family in self.families.values():
            if family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            elif family.type == "counter":
                names.add(family.name + "_total")
            else:
                names.add(family.name)
        return names


async def scrape(client: Client, headers: dict[str, str] | None = None) -> Scrape:
    response = await client.get("/metrics", headers=headers or {})
    text = await response.text()
    assert response.status == 200, text
    assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
    return Scrape(text)


def record(n: int, template: str, hw: HardwareClass, seconds: float, *, ok: bool = True,
           end: float = 1_800_000_000.0) -> DeploymentRecord:
    """A finished deployment of ``seconds`` in three stages (a quarter, a half, a quarter)."""
    start = end - seconds
    stages, t = [], start
    for name, share in (("partition disk", 0.25), ("stream image", 0.5), ("reboot into OS",
                                                                          0.25)):
        stages.append(Stage(name, name, "succeeded", t, seconds * share, 0))
        t += seconds * share
    return DeploymentRecord(f"metrics-wf-{n}", f"metrics-m-{n}", f"metrics-node-{n}",
                            template, "native", hw, "succeeded" if ok else "failed",
                            "" if ok else "checksum mismatch", start, end, stages)


# (template, hardware, seconds, succeeded): deliberately on and around bucket bounds.
KNOWN = [("metrics-os", R650, 45.0, True), ("metrics-os", R650, 60.0, True),
         ("metrics-os", R650, 700.0, True), ("metrics-os", DL360, 5000.0, True),
         ("metrics-os", DL360, 20000.0, False), ("metrics-os", R650, 90.0, False),
         ("metrics-other", DL360, 300.0, True)]


async def add_known(history: DeploymentHistory) -> None:
    for n, (template, hw, seconds, ok) in enumerate(KNOWN):
        await history.add(record(n, template, hw, seconds, ok=ok, end=1_800_000_000.0 + n))


def identities(ctx: AppContext) -> set[str]:
    """Every machine id, name and MAC the fleet and the history know."""
    out: set[str] = set()
    for m in ctx.fleet.list_machines(limit=1_000_000).items:
        out |= {m.id, m.name, m.mac, *m.macs}
    assert ctx.timer is not None
    for r in ctx.timer.records:
        out |= {r.machine_id, r.machine_name}
    out.discard("")
    return out


def label_problems(s: Scrape, ctx: AppContext) -> list[str]:
    """Label values that name one machine (an id, a name, a MAC), or look like a MAC."""
    known = identities(ctx)
    assert len(known) > 20  # the check means something only over a real fleet
    problems = []
    for sample in s.samples:
        for label, value in sample.labels.items():
            if value in known or MAC.match(value):
                problems.append(f"{sample.name}{{{label}={value!r}}}")
    return problems


def check_deployments(s: Scrape, history: DeploymentHistory) -> None:
    """The deployment families against the history's records, independently recounted."""
    records = history.records
    assert records

    def template(r: DeploymentRecord) -> str:
        return r.template or "none"

    def result(r: DeploymentRecord) -> str:
        return r.result if r.result in ("succeeded", "failed") else "other"
    totals = Counter((template(r), result(r)) for r in records)
    assert s.values("dragonfly_deployments_total") == {
        (("result", result), ("template", template)): float(n)
        for (template, result), n in totals.items()}
    groups = Counter((template(r), r.hardware.model, result(r)) for r in records)
    counts = s.values("dragonfly_deployment_duration_seconds_count")
    assert counts == {(("hardware", model), ("result", result), ("template", template)):
                      float(n) for (template, model, result), n in groups.items()}
    assert sum(counts.values()) == len(records)
    inf = s.values("dragonfly_deployment_duration_seconds_bucket")
    assert sum(v for k, v in inf.items() if ("le", "+Inf") in k) == len(records)
    assert s.value("dragonfly_deployment_duration_seconds_sum") == pytest.approx(
        sum(r.seconds for r in records))
    stages = Counter((str(st["name"]) or "unnamed", template(r)) for r in records
                     for st in r.stages)
    assert s.values("dragonfly_deployment_stage_duration_seconds_count") == {
        (("stage", stage), ("template", template)): float(n)
        for (stage, template), n in stages.items()}


def check_known(s: Scrape) -> None:
    """The figures of KNOWN, worked out by hand."""
    assert s.value("dragonfly_deployments_total", template="metrics-os",
                   result="succeeded") == 4
    assert s.value("dragonfly_deployments_total", template="metrics-os", result="failed") == 2
    assert s.value("dragonfly_deployments_total", template="metrics-other",
                   result="succeeded") == 1
    ok_r650 = {"template": "metrics-os", "hardware": "Dell PowerEdge R650",
               "result": "succeeded"}
    bucket = "dragonfly_deployment_duration_seconds_bucket"
    # 45 s and 60 s (le is "less or equal") in the 60 s bucket, 700 s only from 900 s on.
    assert s.value(bucket, le="30", **ok_r650) == 0
    assert s.value(bucket, le="60", **ok_r650) == 2
    assert s.value(bucket, le="600", **ok_r650) == 2
    assert s.value(bucket, le="900", **ok_r650) == 3
    assert s.value(bucket, le="+Inf", **ok_r650) == 3
    assert s.value("dragonfly_deployment_duration_seconds_sum", **ok_r650) == 805
    failed_dl360 = {"template": "metrics-os", "hardware": "HPE ProLiant DL360 Gen10",
                    "result": "failed"}
    # Beyond the last bound (4 h): only in +Inf.
    assert s.value(bucket, le="14400", **failed_dl360) == 0
    assert s.value(bucket, le="+Inf", **failed_dl360) == 1
    # Stages: "stream image" took half of each deployment.
    stream = {"stage": "stream image", "template": "metrics-os"}
    assert s.value("dragonfly_deployment_stage_duration_seconds_count", **stream) == 6
    assert s.value("dragonfly_deployment_stage_duration_seconds_sum", **stream) == \
        pytest.approx((45 + 60 + 700 + 5000 + 20000 + 90) / 2)
    assert s.value("dragonfly_deployment_stage_duration_seconds_bucket", le="30",
                   **stream) == 2  # 22.5 s and 30 s


def check_machines(s: Scrape, ctx: AppContext) -> None:
    by_state = s.values("dragonfly_machines")
    assert set(by_state) == {(("state", st.value),) for st in State}
    assert sum(by_state.values()) == ctx.fleet.machine_count() > 0
    for st in State:
        assert by_state[(("state", st.value),)] == ctx.fleet.list_machines(
            state=st.value, limit=0).total
    running = Counter(w.template or "none" for w in ctx.fleet.active_workflows())
    assert s.values("dragonfly_deployments_running") == {
        (("template", t),): float(n) for t, n in running.items()}


async def check_power(s: Scrape, ctx: AppContext) -> None:
    assert ctx.power is not None
    statuses = await ctx.power.all_status()
    states = Counter(st["state"] for st in statuses)
    assert s.values("dragonfly_power_machines") == {
        (("state", state),): float(states[state]) for state in ("on", "off", "unknown")}
    watts = [st["watts"] for st in statuses if st["watts"] is not None]
    assert s.value("dragonfly_power_watts") == pytest.approx(sum(watts))
    assert s.value("dragonfly_power_reporting_machines") == len(watts)
    errors = Counter(st["reason"] for st in statuses if st["error"])
    assert {k[0][1]: v for k, v in s.values("dragonfly_power_bmc_errors").items() if v} == \
        dict(errors)


# --- the demo --------------------------------------------------------------------------------

async def demo_client(aiohttp_client: Any) -> tuple[Client, AppContext]:
    client: Client = await aiohttp_client(create_app(demo_context(tick=3600)))
    ctx: AppContext = client.app[CTX]
    sim = ctx.services[0]
    assert isinstance(sim, Simulator)
    for _ in range(60):  # the simulator finishes deployments: real records in the history
        sim._doomed.clear()
        await sim.step(5)
    assert ctx.timer is not None
    await ctx.timer.ready()
    await add_known(ctx.timer)
    await asyncio.sleep(0.05)  # the history follows the store's change feed
    return client, ctx


async def test_the_demos_metrics_pass_promtool_and_add_up(aiohttp_client: Any) -> None:
    client, ctx = await demo_client(aiohttp_client)
    assert ctx.timer is not None and ctx.edge is not None
    s = await scrape(client)
    promtool_check(s.text)
    assert len(ctx.timer.records) > len(KNOWN)  # the simulator's own deployments too
    check_deployments(s, ctx.timer)
    check_known(s)
    check_machines(s, ctx)
    await check_power(s, ctx)
    assert s.value("dragonfly_power_bmc_errors", reason="timeout") >= 1  # the demo's dead BMC
    info = s.values("dragonfly_info")
    assert info == {(("mode", "demo"), ("version", __version__)): 1.0}
    edge = (await ctx.edge.status())["services"]
    assert s.value("dragonfly_dhcp_answered_total") == edge["dhcp"]["counters"]["answered"] > 0
    assert s.value("dragonfly_tftp_sent_bytes_total") == \
        edge["tftp"]["counters"]["bytes_sent"] > 0
    assert s.value("dragonfly_tftp_transfers_total", result="ok") == \
        edge["tftp"]["counters"]["transfers_ok"]
    assert s.value("dragonfly_boot_service_up", service="dhcp") == 1
    assert s.value("process_resident_memory_bytes") > 0
    assert label_problems(s, ctx) == []

    # A new deployment: counted once, in its own series.
    await ctx.timer.add(record(99, "metrics-os", R650, 50.0))
    again = await scrape(client)
    assert again.value("dragonfly_deployments_total", template="metrics-os",
                       result="succeeded") == 5
    check_deployments(again, ctx.timer)


async def test_a_label_naming_a_machine_is_caught(aiohttp_client: Any) -> None:
    """The label check above can fail: a machine's id, name or MAC as a label value."""
    client, ctx = await demo_client(aiohttp_client)
    s = await scrape(client)
    machine = ctx.fleet.list_machines(limit=1).items[0]
    for bad in (machine.id, machine.name, machine.mac, "52:54:00:00:00:99"):
        tampered = Scrape(s.text + f'# HELP x_bad b\n# TYPE x_bad gauge\nx_bad{{m="{bad}"}} 1\n')
        assert label_problems(tampered, ctx) == [f"x_bad{{m={bad!r}}}"]


async def test_aggregation_is_incremental_and_label_values_are_capped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(":memory:")
    await store.open()
    history = DeploymentHistory(store, lambda _id: None)
    await history.start()
    await history.ready()
    try:
        added: list[str] = []
        original = metrics.DeploymentAggregates._add

        def counting(self: metrics.DeploymentAggregates, r: DeploymentRecord) -> None:
            added.append(r.id)
            original(self, r)
        monkeypatch.setattr(metrics.DeploymentAggregates, "_add", counting)
        # More templates than a label may have values: the later ones are "other".
        for n in range(metrics.MAX_VALUES + 50):
            await history.add(record(n, f"tpl-{n:03d}", R650, 100.0 + n))
        state = metrics.MetricsState()
        families = await metrics._deployments(history, state)
        assert len(added) == metrics.MAX_VALUES + 50
        totals = next(f for f in families if f.name == "dragonfly_deployments")
        templates = {s.labels["template"] for s in totals.samples}
        assert len(templates) == metrics.MAX_VALUES + 1 and metrics.OTHER in templates
        other = next(s for s in totals.samples if s.labels["template"] == metrics.OTHER)
        assert other.value == 50
        assert "tpl-000" in templates and f"tpl-{metrics.MAX_VALUES + 1:03d}" not in templates
        # Nothing new: nothing recounted. One new record: only it is counted.
        await metrics._deployments(history, state)
        assert len(added) == metrics.MAX_VALUES + 50
        await history.add(record(10_000, "tpl-000", R650, 100.0))
        families = await metrics._deployments(history, state)
        assert added[metrics.MAX_VALUES + 50:] == ["metrics-wf-10000"]
        totals = next(f for f in families if f.name == "dragonfly_deployments")
        assert next(s.value for s in totals.samples if s.labels["template"] == "tpl-000") == 2
    finally:
        await history.stop()
        await store.close()


async def test_ten_thousand_deployments_scrape_cheaply() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    history = DeploymentHistory(store, lambda _id: None)
    await history.start()
    await history.ready()
    try:
        hardware = [R650, DL360]
        for n in range(10_000):  # straight into memory: the store is not what is measured
            history._add(record(n, f"os-{n % 7}", hardware[n % 2], 60.0 + n % 3000,
                                ok=n % 11 != 0, end=1_800_000_000.0 + n))
        state = metrics.MetricsState()
        gc.disable()  # a collection over 10,000 records is not what is measured
        try:
            start = time.perf_counter()
            first = await metrics._deployments(history, state)
            cold = time.perf_counter() - start
            warm = []
            for _ in range(3):
                start = time.perf_counter()
                await metrics._deployments(history, state)
                warm.append(time.perf_counter() - start)
        finally:
            gc.enable()
        assert cold < 5.0 and min(warm) < 0.02, (cold, warm)
        count = next(f for f in first if f.name == "dragonfly_deployment_duration_seconds")
        assert sum(s.value for s in count.samples if s.name.endswith("_count")) == 10_000
    finally:
        await history.stop()
        await store.close()


# --- an installed server -------------------------------------------------------------------

def pxe_discover(n: int) -> bytes:
    """A BIOS PXE ROM's DISCOVER from its own MAC and UUID."""
    options = {53: b"\x01", 93: b"\x00\x00", 60: b"PXEClient:Arch:00000:UNDI:002001",
               97: b"\x00" + bytes(15) + bytes((n,))}
    return encode(Packet(BOOTREQUEST, 0x4000 + n, bytes((0x52, 0x54, 0, 0xEE, 0, n)),
                         options=options))


def server_ctx(state_dir: Path, **settings: Any) -> AppContext:
    """``server_context`` over ``state_dir``, its boot edge on loopback ephemeral ports."""
    config = Config.load(None, env={}, overrides={"server.state_dir": str(state_dir),
                                                  **settings})
    ctx = server_context(config)
    assert ctx.bootlog is not None and isinstance(ctx.edge, BootEdge)
    edge = BootEdge(ctx.config, ctx.store, ctx.fleet, ctx.bootlog, build=loopback_builder())
    ctx.services[ctx.services.index(ctx.edge)] = edge
    ctx.edge = edge
    return ctx


async def test_a_server_contexts_metrics(aiohttp_client: Any, tmp_path: Path) -> None:
    ctx = server_ctx(tmp_path)
    client: Client = await aiohttp_client(create_app(ctx), cookie_jar=DummyCookieJar())
    assert ctx.timer is not None and isinstance(ctx.edge, BootEdge)
    # Before setup: open (access "public"), like the other unauthenticated routes.
    s = await scrape(client)
    promtool_check(s.text)
    assert s.values("dragonfly_info") == {(("mode", "native"), ("version", __version__)): 1.0}
    assert s.values("dragonfly_deployments_total") == {}
    assert sum(s.values("dragonfly_machines").values()) == 0
    admin = await setup_admin(client)
    await ctx.timer.ready()
    await add_known(ctx.timer)
    for n in range(3):
        r = await client.post("/api/machines", json={"mac": f"52:54:00:aa:00:0{n}"},
                              headers=admin.headers())
        assert r.status == 201, await r.text()

    stack = ctx.edge.stack
    assert stack is not None and stack.dhcp is not None and stack.tftp is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x01" * 10, ("127.0.0.1", stack.dhcp.bound_ports[0]))
        for n in range(2):  # two PXE ROMs of one kind: the second is answered from bytes
            sock.sendto(pxe_discover(n), ("127.0.0.1", stack.dhcp.bound_ports[0]))
    assert (await download(stack.tftp.port, "hello.bin")).content == PAYLOAD
    assert (await download(stack.tftp.port, "nope.bin")).error is not None
    # The boot HTTP surface: a script for a MAC (declared route), an undeclared /boot path.
    script = await client.get("/boot/52:54:00:aa:00:00.ipxe")
    assert script.status == 200, await script.text()
    assert (await client.get("/boot/nothing-here")).status == 404
    for _ in range(200):
        counters = (await ctx.edge.status())["services"]
        if (counters["tftp"]["counters"]["refused"] and counters["dhcp"]["counters"]["malformed"]
                and counters["dhcp"]["counters"]["received"] == 3):
            break
        await asyncio.sleep(0.02)

    s = await scrape(client)
    promtool_check(s.text)
    check_deployments(s, ctx.timer)
    check_known(s)
    machines = s.values("dragonfly_machines")
    assert machines[(("state", "discovered"),)] == 3 and sum(machines.values()) == 3
    assert s.value("dragonfly_dhcp_received_total") == 3
    assert s.value("dragonfly_dhcp_answered_total") == 2
    assert s.value("dragonfly_dhcp_fast_answers_total") == 1
    assert s.value("dragonfly_dhcp_boot_steps_let_go_total") == 0
    assert s.values("dragonfly_dhcp_malformed_total") == {
        (("reason", "too short for a BOOTP header (N < N bytes)"),): 1.0}
    assert s.value("dragonfly_tftp_transfers_total", result="ok") == 1
    assert s.value("dragonfly_tftp_sent_bytes_total") == len(PAYLOAD)
    assert s.value("dragonfly_tftp_refused_total") == 1
    assert s.value("dragonfly_tftp_requests_total") == 2
    assert s.value("dragonfly_boot_service_up", service="tftp") == 1
    assert s.values("dragonfly_boot_http_requests_total") == {
        (("code", "200"), ("route", "/boot/{mac}.ipxe")): 1.0,
        (("code", "404"), ("route", "other")): 1.0}
    assert s.values("dragonfly_power_machines") == {
        (("state", st),): 0.0 for st in ("on", "off", "unknown")}
    before = {name: s.values(name) for name in (
        "dragonfly_deployments_total", "dragonfly_deployment_duration_seconds_bucket",
        "dragonfly_deployment_duration_seconds_sum",
        "dragonfly_deployment_stage_duration_seconds_count")}
    await client.close()

    # After a restart: the same deployment figures, from the stored history.
    restarted: Client = await aiohttp_client(create_app(server_ctx(tmp_path)),
                                             cookie_jar=DummyCookieJar())
    s = await scrape(restarted)
    promtool_check(s.text)
    assert {name: s.values(name) for name in before} == before
    assert s.value("dragonfly_tftp_requests_total") == 0  # the edge's counters start over


# --- access ----------------------------------------------------------------------------------

async def test_the_metrics_token(aiohttp_client: Any, caplog: pytest.LogCaptureFixture
                                 ) -> None:
    caplog.set_level(logging.DEBUG)
    client = await installed_client(aiohttp_client, **{"metrics.token": TOKEN})
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def refused(headers: dict[str, str]) -> None:
        response = await client.get("/metrics", headers=headers)
        body = await response.json()
        assert response.status == 401, body
        assert body["detail"] == {"refused": "metrics_token"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in json.dumps(body)

    # Before setup and after: the token, and only the token.
    await refused({})
    s = await scrape(client, bearer)
    assert s.value("dragonfly_info", mode="native") == 1
    admin = await setup_admin(client)
    api_token = await make_token(client, admin)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, api_token.headers(),
                    admin.headers()):
        await refused(headers)
    await scrape(client, bearer)
    await scrape(client, {"Authorization": f"bearer  {TOKEN}"})

    # Never shown: not by the settings API, the setup and meta routes, the docs, the logs.
    shown = []
    for path, who in (("/api/settings/security", admin), ("/api/setup", ANON),
                      ("/api/version", ANON), ("/api/openapi.json", ANON),
                      ("/docs/settings", admin), ("/api/stats", admin)):
        response = await client.get(path, headers=who.headers())
        assert response.status == 200, path
        shown.append(await response.text())
    assert all(TOKEN not in text for text in shown)
    assert "metrics.token" in shown[4]  # the docs list the setting (and no value)
    assert TOKEN not in caplog.text
    ctx: AppContext = client.app[CTX]
    assert ctx.config["metrics.token"] == TOKEN
    assert TOKEN not in repr(ctx.config) and TOKEN not in str(ctx.config.shown())
    assert ctx.config.shown()["metrics.token"] == SECRET_MASK


async def test_without_a_token_metrics_are_open_to_the_allowlist_only(aiohttp_client: Any
                                                                      ) -> None:
    open_client = await installed_client(aiohttp_client,
                                         **{"security.allowlist": ["127.0.0.0/8"]})
    await setup_admin(open_client)
    # No login, whatever the front page says; an API token's header is no obstacle either.
    await scrape(open_client)
    await scrape(open_client, {"Authorization": "Bearer not-a-token"})
    closed = await installed_client(aiohttp_client, **{"security.allowlist": ["10.0.0.0/8"]})
    response = await closed.get("/metrics")
    assert response.status == 403
    assert "allowlist" in await response.text()


def test_the_token_comes_from_the_environment_too() -> None:
    config = Config.load(None, env={"DRAGONFLY_METRICS_TOKEN": TOKEN})
    assert config["metrics.token"] == TOKEN and TOKEN not in repr(config)
    assert SETTINGS_BY_KEY["metrics.token"].secret
    assert Config.defaults().shown()["metrics.token"] == ""  # unset says so


async def test_a_secret_setting_is_masked_by_the_settings_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism, on a secret the panel could change: ``describe`` (GET
    /api/settings/security, `dragonfly security show`) masks it; a plain setting is shown."""
    import dragonfly.auth.settings as settings_module

    monkeypatch.setattr(settings_module, "RUNTIME_KEYS",
                        (*settings_module.RUNTIME_KEYS, "metrics.token"))
    store = SqliteStore(":memory:")
    await store.open()
    try:
        config = Config.load(None, env={}, overrides={"metrics.token": TOKEN,
                                                      "server.bind": "127.0.0.1"})
        described = {d["key"]: d for d in await RuntimeSettings(store, config,
                                                                time.time).describe()}
        assert described["metrics.token"]["value"] == SECRET_MASK
        assert described["metrics.token"]["default"] == ""
        assert TOKEN not in json.dumps(described)
        assert described["server.mode"]["value"] == "native"
    finally:
        await store.close()


# --- the Grafana dashboard -----------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregation modifiers, label matchers, strings, durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every panel target and every query variable."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text)
            assert found, text
            yield f"${variable['name']}", found.group(1)


def dashboard_problems(dashboard: dict[str, Any], exposed: set[str]) -> list[str]:
    problems = []
    for where, expr in dashboard_queries(dashboard):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: names no metric: {expr}")
        problems += [f"{where}: {name} is not exposed" for name in sorted(names - exposed)]
    return problems


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names('histogram_quantile(0.9, sum by (le, template) (rate('
                        'a_bucket{result="succeeded",template=~"$template"}[5m])))') == \
        {"a_bucket"}
    assert metric_names("sum(increase(b_total[$__range])) / sum(c_total offset 1d) or "
                        "vector(0)") == {"b_total", "c_total"}
    assert metric_names('label_replace(d * on() group_left(hour) count_values("hour", '
                        'hour()), "x", "0$1", "hour", "^([0-9])$")') == {"d"}
    assert metric_names("e > 0") == {"e"}


async def test_the_grafana_dashboard_queries_only_exposed_metrics(aiohttp_client: Any
                                                                 ) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["title"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    for wanted in ("Deployment time by template", "Deployment time by hardware",
                   "Success rate", "Failures by hour of day", "Deployments per day", "DHCP",
                   "TFTP transfers", "Boot HTTP requests", "Machines by state", "Power draw",
                   "Machines by power state"):
        assert wanted in titles, wanted
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))

    client, _ctx = await demo_client(aiohttp_client)
    exposed = (await scrape(client)).exposed_names()
    assert "dragonfly_deployment_duration_seconds_bucket" in exposed
    assert dashboard_problems(dashboard, exposed) == []
    # The check can fail: a misspelled metric in one panel.
    broken = json.loads(DASHBOARD.read_text())
    target = next(p for p in broken["panels"] if p["type"] != "row")["targets"][0]
    target["expr"] = target["expr"].replace("dragonfly_deployments_total",
                                            "dragonfly_deployment_total")
    assert any("dragonfly_deployment_total is not exposed" in p
               for p in dashboard_problems(broken, exposed))


def test_the_grafana_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Every query is PromQL Prometheus parses (Grafana's variables filled in)."""
    dashboard = json.loads(DASHBOARD.read_text())
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is required: apt-get install prometheus")
    rules = [{"record": f"dashboard:query_{n}", "expr": expr.replace(
        "$__rate_interval", "1m").replace("$__range", "7d").replace("$template", ".*")}
             for n, (where, expr) in enumerate(dashboard_queries(dashboard))
             if not where.startswith("$")]
    path = tmp_path / "dashboard-rules.json"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
