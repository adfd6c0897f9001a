"""Prometheus metrics at ``/metrics``, made at scrape time from what the appliance already
keeps: no second bookkeeping of deployments that could drift from the history.

* Deployments: duration histograms by template, hardware model and result, stage duration
  histograms by stage and template, and counters by template and result, all built from
  ``DeploymentHistory.records`` (so they are the same after a restart: the history is in the
  store). The aggregation is incremental and keyed on ``history.version``: a scrape over
  10,000 deployments only counts the records added since the previous one.
* Machines by lifecycle state (the fleet's mirror), deployments running by template.
* The boot edge: DHCP and TFTP counters as ``ctx.edge.status()`` reports them, and the boot
  and agent HTTP surface's requests, counted here by declared route and status code.
* Power: machines with a BMC by power state and health, the total draw of those reporting
  watts, and BMCs whose last poll failed, by reason.
* ``dragonfly_info`` (version, mode), the start time, and the process collector's figures.

No label grows without bound: no machine id, name or MAC ever is a label value, and label
values that come from data (templates, hardware models, stage names, reasons) are capped at
``MAX_VALUES`` per label, the rest counted as "other".

Access: ``metrics.token`` empty, the route is open to the panel's allowlist without a login
(access "public"); set, a scrape must send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.context import AppContext, ctx_of
from dragonfly.domain.model import State
from dragonfly.http.errors import error_response
from dragonfly.http.router import ApiRouter, route_of
from dragonfly.timer.history import DeploymentHistory, DeploymentRecord

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

api = ApiRouter()

# The text exposition format every Prometheus understands (prometheus_client's newest default
# announces version 1.0.0, which older servers do not negotiate).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Whole deployments: from half a minute (a small image on NVMe) to four hours (a big one over a
# slow link onto spinning disks).
DEPLOYMENT_BUCKETS: tuple[float, ...] = (30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800,
                                         2700, 3600, 5400, 7200, 10800, 14400)
# Stages: a disk selection takes a second, an image stream up to hours.
STAGE_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
                                    14400)
MAX_VALUES = 200  # distinct values per data-derived label; later ones are counted as "other"
OTHER = "other"
READY_WAIT = 5.0  # seconds a scrape waits for the stored history to load after a start
# PowerError.reason's documented values; anything else is "other".
BMC_REASONS = ("unreachable", "timeout", "credentials", "cipher", "busy", "tls", "refused",
               "protocol", "unsupported", "config")
POWER_STATES = ("on", "off", "unknown")
HEALTH_STATES = ("ok", "warning", "critical", "unknown")
# DHCP and TFTP counters as the edge's status reports them: (key, metric, help).
DHCP_COUNTERS = (
    ("received", "dragonfly_dhcp_received", "DHCP packets received"),
    ("answered", "dragonfly_dhcp_answered", "DHCP packets answered"),
    ("errors", "dragonfly_dhcp_errors", "DHCP packets whose handling failed (a bug: logged)"),
    ("send_failed", "dragonfly_dhcp_send_failed", "DHCP replies the kernel refused to send"),
    ("fast", "dragonfly_dhcp_fast_answers",
     "DHCP answers made from a known kind of DISCOVER's bytes (also in answered)"),
    ("steps_let_go", "dragonfly_dhcp_boot_steps_let_go",
     "Flood boot steps let go because the boot doctor keeps only the newest MACs"),
)
DHCP_BY_REASON = (
    ("ignored", "ignored_by_reason", "dragonfly_dhcp_ignored",
     "DHCP packets not answered, by reason (not a PXE client, another server's ...)"),
    ("malformed", "malformed_by_reason", "dragonfly_dhcp_malformed",
     "DHCP packets that could not be decoded, by reason"),
)
TFTP_COUNTERS = (
    ("requests", "dragonfly_tftp_requests", "TFTP read requests"),
    ("refused", "dragonfly_tftp_refused", "TFTP requests refused (unknown file, outside "
                                          "boot.allowed_networks)"),
    ("malformed", "dragonfly_tftp_malformed", "TFTP packets that could not be decoded"),
    ("retransmits", "dragonfly_tftp_retransmits", "TFTP blocks sent again"),
    ("bytes_sent", "dragonfly_tftp_sent_bytes", "Bytes of files sent over TFTP"),
)


# --- deployments, from the history ------------------------------------------------------------

class _Capped:
    """Label values of one label in first-seen order, at most ``MAX_VALUES`` of them: stable
    (a value keeps its own series once it has one), so counters never move between series."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._known:
            return value
        if len(self._known) >= MAX_VALUES:
            return OTHER
        self._known.add(value)
        return value


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else _le(bound), float(running)))
        return out


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


class DeploymentAggregates:
    """The history's records folded into histograms and counters, record by record: each
    record is counted once, so a scrape only pays for the records added since the last."""

    def __init__(self) -> None:
        self.version = -1
        self._families: list[Metric] = []  # made once per version
        self.counted: set[str] = set()
        self.durations: dict[tuple[str, str, str], _Histogram] = {}
        self.stages: dict[tuple[str, str], _Histogram] = {}
        self.totals: Counter[tuple[str, str]] = Counter()
        self.template = _Capped()
        self.model = _Capped()
        self.stage = _Capped()

    def update(self, history: DeploymentHistory) -> None:
        if history.version == self.version:
            return
        for record in history.records:
            if record.id not in self.counted:
                self.counted.add(record.id)
                self._add(record)
        self.version = history.version
        self._families = list(self._make_families())

    def _add(self, record: DeploymentRecord) -> None:
        template = self.template(record.template or "none")
        result = record.result if record.result in ("succeeded", "failed") else OTHER
        model = self.model(record.hardware.model)
        self.totals[(template, result)] += 1
        key = (template, model, result)
        hist = self.durations.get(key)
        if hist is None:
            hist = self.durations[key] = _Histogram(DEPLOYMENT_BUCKETS)
        hist.observe(record.seconds)
        for stage in record.stages:
            name = self.stage(str(stage.get("name", "")) or "unnamed")
            skey = (name, template)
            shist = self.stages.get(skey)
            if shist is None:
                shist = self.stages[skey] = _Histogram(STAGE_BUCKETS)
            shist.observe(max(0.0, float(stage.get("seconds", 0.0) or 0.0)))

    def families(self) -> list[Metric]:
        return self._families

    def _make_families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        durations = HistogramMetricFamily(
            "dragonfly_deployment_duration_seconds",
            "Time from the start of a deployment to its end, by OS template, hardware model "
            "(vendor and product) and result", labels=("template", "hardware", "result"))
        for (template, model, result), hist in sorted(self.durations.items()):
            durations.add_metric([template, model, result], hist.buckets(), hist.total)
        yield durations
        stages = HistogramMetricFamily(
            "dragonfly_deployment_stage_duration_seconds",
            "Time each stage of a finished deployment took, by stage and OS template",
            labels=("stage", "template"))
        for (stage, template), hist in sorted(self.stages.items()):
            stages.add_metric([stage, template], hist.buckets(), hist.total)
        yield stages
        totals = CounterMetricFamily(
            "dragonfly_deployments", "Finished deployments, by OS template and result",
            labels=("template", "result"))
        for (template, result), n in sorted(self.totals.items()):
            totals.add_metric([template, result], float(n))
        yield totals


# --- the boot and agent HTTP surface ------------------------------------------------------------

@dataclass
class MetricsState:
    """Per application: the deployment aggregates (of one history) and the boot HTTP
    counts."""

    boot_http: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, code)
    _history: DeploymentHistory | None = None
    _aggregates: DeploymentAggregates = field(default_factory=DeploymentAggregates)

    def aggregates(self, history: DeploymentHistory) -> DeploymentAggregates:
        """The aggregates of ``history``, brought up to date."""
        if history is not self._history:  # another history (a test's): start over
            self._history, self._aggregates = history, DeploymentAggregates()
        self._aggregates.update(history)
        return self._aggregates


METRICS: web.AppKey[MetricsState] = web.AppKey("dragonfly_metrics", MetricsState)


def install_metrics(app: web.Application) -> None:
    """The application's metrics state (call in ``create_app``)."""
    app[METRICS] = MetricsState()


@web.middleware
async def count_boot_http(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count requests to the boot and agent surface (routes of access "agent", and any
    /boot path) by declared route and status: bounded labels, never the path itself."""
    route = route_of(request)
    if route is not None and route.access == "agent":
        label = route.path
    elif request.path.startswith("/boot/"):
        label = OTHER
    else:
        return await handler(request)  # type: ignore[no-any-return]
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state = request.app.get(METRICS)
        if state is not None:
            state.boot_http[(label, str(status))] += 1


# --- a scrape ----------------------------------------------------------------------------------

class _Families:
    """A collector over families made before the scrape (the async parts are gathered first:
    prometheus_client's collectors are synchronous)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def collect(ctx: AppContext, state: MetricsState) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

    families: list[Metric] = []
    mode = "demo" if ctx.demo else str(ctx.config["server.mode"])
    info = InfoMetricFamily("dragonfly", "This Dragonfly: its version and mode",
                            labels=("version", "mode"))
    info.add_metric([], {"version": ctx.version, "mode": mode})
    families.append(info)
    families.append(GaugeMetricFamily("dragonfly_start_time_seconds",
                                      "When this Dragonfly started, in Unix seconds",
                                      value=ctx.started_at))
    families += _machines(ctx)
    if ctx.timer is not None:
        families += await _deployments(ctx.timer, state)
    families += _boot_http(state)
    if ctx.edge is not None:
        try:
            status = await ctx.edge.status()
        except Exception:
            log.exception("metrics: the boot edge's status failed")
        else:
            families += _edge(status)
    if ctx.power is not None:
        families += _power(await ctx.power.all_status())
    return families


def _machines(ctx: AppContext) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    states = ctx.fleet.list_machines(limit=0).states
    machines = GaugeMetricFamily("dragonfly_machines", "Machines by lifecycle state",
                                 labels=("state",))
    for s in State:
        machines.add_metric([s.value], float(states.get(s.value, 0)))
    active: Counter[str] = Counter(w.template or "none" for w in ctx.fleet.active_workflows())
    running = GaugeMetricFamily("dragonfly_deployments_running",
                                "Deployments in progress, by OS template",
                                labels=("template",))
    capped = _Capped()
    merged: Counter[str] = Counter()
    for template, n in sorted(active.items()):
        merged[capped(template)] += n
    for template, n in sorted(merged.items()):
        running.add_metric([template], float(n))
    return [machines, running]


async def _deployments(history: DeploymentHistory, state: MetricsState) -> list[Metric]:
    try:
        await asyncio.wait_for(history.ready(), READY_WAIT)
    except TimeoutError:
        # Still loading after a start: no figures rather than partial ones (a counter that
        # jumped up from a half-loaded history would read as a burst of deployments).
        return []
    return list(state.aggregates(history).families())


def _boot_http(state: MetricsState) -> list[Metric]:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(
        "dragonfly_boot_http_requests",
        "Requests to the boot and agent HTTP surface (iPXE scripts, discovery kernel and "
        "initrd, loaders, images, agent check-ins), by declared route and status code",
        labels=("route", "code"))
    for (route, code), n in sorted(state.boot_http.items()):
        family.add_metric([route, code], float(n))
    return [family]


def _counter_of(values: dict[str, Any], key: str) -> float:
    value = values.get(key, 0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def _edge(status: dict[str, Any]) -> list[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    services = status.get("services") or {}
    up = GaugeMetricFamily("dragonfly_boot_service_up",
                           "1 when the boot service (dhcp, tftp) is running, else 0",
                           labels=("service",))
    for name in ("dhcp", "tftp"):
        up.add_metric([name], 1.0 if (services.get(name) or {}).get("state") == "running"
                      else 0.0)
    families: list[Metric] = [up]
    dhcp = (services.get("dhcp") or {}).get("counters") or {}
    for key, name, help_text in DHCP_COUNTERS:
        families.append(CounterMetricFamily(name, help_text, value=_counter_of(dhcp, key)))
    for key, by_key, name, help_text in DHCP_BY_REASON:
        family = CounterMetricFamily(name, help_text, labels=("reason",))
        for reason, n in _by_reason(_counter_of(dhcp, key), dhcp.get(by_key) or {}):
            family.add_metric([reason], n)
        families.append(family)
    tftp = (services.get("tftp") or {}).get("counters") or {}
    for key, name, help_text in TFTP_COUNTERS:
        families.append(CounterMetricFamily(name, help_text, value=_counter_of(tftp, key)))
    transfers = CounterMetricFamily("dragonfly_tftp_transfers",
                                    "TFTP transfers finished, by result", labels=("result",))
    transfers.add_metric(["ok"], _counter_of(tftp, "transfers_ok"))
    transfers.add_metric(["failed"], _counter_of(tftp, "transfers_failed"))
    families.append(transfers)
    families.append(GaugeMetricFamily("dragonfly_tftp_active_transfers",
                                      "TFTP transfers in progress",
                                      value=_counter_of(tftp, "active")))
    return families


def _by_reason(total: float, by_reason: dict[str, Any]) -> list[tuple[str, float]]:
    """The per-reason counts, capped, with whatever the reasons do not cover as "other"."""
    capped = _Capped()
    merged: defaultdict[str, float] = defaultdict(float)
    for reason, n in sorted(by_reason.items()):
        if isinstance(n, int | float) and not isinstance(n, bool):
            merged[capped(str(reason) or OTHER)] += float(n)
    rest = total - sum(merged.values())
    if rest > 0:
        merged[OTHER] += rest
    return [(reason, float(n)) for reason, n in sorted(merged.items())]


def _power(statuses: list[dict[str, Any]]) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    states: Counter[str] = Counter()
    health: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    watts, reporting = 0.0, 0
    for s in statuses:
        state = str(s.get("state", "unknown"))
        states[state if state in POWER_STATES else "unknown"] += 1
        h = str(s.get("health", "unknown"))
        health[h if h in HEALTH_STATES else "unknown"] += 1
        if s.get("error"):
            reason = str(s.get("reason", ""))
            errors[reason if reason in BMC_REASONS else OTHER] += 1
        w = s.get("watts")
        if isinstance(w, int | float) and not isinstance(w, bool):
            watts += float(w)
            reporting += 1
    machines = GaugeMetricFamily("dragonfly_power_machines",
                                 "Machines with a BMC, by power state (last poll)",
                                 labels=("state",))
    for state in POWER_STATES:
        machines.add_metric([state], float(states[state]))
    healthy = GaugeMetricFamily("dragonfly_power_health_machines",
                                "Machines with a BMC, by the health their BMC reports",
                                labels=("health",))
    for h in HEALTH_STATES:
        healthy.add_metric([h], float(health[h]))
    draw = GaugeMetricFamily("dragonfly_power_watts",
                             "Power drawn by all machines whose BMC reports it, in watts",
                             value=watts)
    count = GaugeMetricFamily("dragonfly_power_reporting_machines",
                              "Machines whose BMC reports their power draw", value=reporting)
    failing = GaugeMetricFamily("dragonfly_power_bmc_errors",
                                "BMCs whose last poll failed, by reason", labels=("reason",))
    for reason in (*BMC_REASONS, OTHER):
        failing.add_metric([reason], float(errors[reason]))
    return [machines, healthy, draw, count, failing]


async def render(ctx: AppContext, state: MetricsState) -> bytes:
    """The exposition text of one scrape."""
    # prometheus_client is imported at the first scrape, not at start.
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await collect(ctx, state)))
    ProcessCollector(registry=registry)  # process_*: CPU, memory, open files (Linux)
    PlatformCollector(registry=registry)  # python_info
    return generate_latest(registry)


# --- the route ---------------------------------------------------------------------------------

def bearer_matches(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8"), token.encode("utf-8"))


@api.get("/metrics", "Prometheus metrics: deployments (durations by template, hardware and "
         "result; stages; counts), machines by state, the boot edge's DHCP, TFTP and HTTP "
         "counters, power. Open to the allowlist, or with metrics.token set, to a Bearer "
         "token only", "metrics", access="public", own_credentials=True,
         produces="text/plain")
async def metrics(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    token = str(ctx.config["metrics.token"] or "")
    if token and not bearer_matches(request, token):
        return error_response(401, "this endpoint needs the metrics token: send "
                              "'Authorization: Bearer <metrics.token>'",
                              {"refused": "metrics_token"},
                              {"WWW-Authenticate": 'Bearer realm="dragonfly metrics"'})
    state = request.app.get(METRICS)
    if state is None:  # an application built without install_metrics
        state = MetricsState()
    body = await render(ctx, state)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                            "Cache-Control": "no-store"})
