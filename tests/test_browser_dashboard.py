"""The deployment timer in the panel, in a real browser (Debian's Chromium driven by
Playwright) against the built zipapp's demo, whose history is backfilled at start (about 300
deployments over 30 days) and grows as the simulator's deployments finish.

The dashboard: the Deployed card says what ``GET /api/deployments/stats`` says (asked in the
browser's time zone: the page runs in Asia/Kolkata, +330 min, and the by-hour chart matches
the API's answer for that offset, not UTC's); the bar of the last 100 has one tick per
deployment, in order, failures coloured apart, each as tall as its time; hovering a tick
names the machine and the failure's reason, clicking it opens the machine. The charts' bars
match the figures (outcome by template: counts and widths in proportion; time by template:
the medians), their text is readable in dark and light. The active deployments carry the
ETA's basis as a tooltip.

The machine page: a running deployment shows "about … left" and what the estimate rests on
(the API's ``eta_basis``); a running step that reports no measure shows the barber pole (no
``aria-valuenow``, animated unless the user asks for reduced motion), a streaming step a real
% from its bytes. Nothing overflows sideways at 390 px.

And the demo's backfill itself, without a browser (but marked like the rest of this module):
repeatable for a seed, believable (failure rate, working hours, NVMe faster than spinning
disks), consistent with the fleet it describes.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import pytest

from tests.conftest import DemoProcess
from tests.test_browser import api, browser, no_horizontal_overflow, shot
from tests.test_browser_power import watch_errors

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, used by name

TZ = "Asia/Kolkata"  # +5:30 all year: no daylight saving to trip over
TZ_OFFSET = 330
STREAMS = ("stream image", "stream-image")


def eta(seconds: float | None) -> str:
    """fmt.eta of web/static/js/fmt.js."""
    if seconds is None:
        return "—"
    s = max(0, math.floor(seconds + 0.5))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def stats(demo: DemoProcess, offset: int = TZ_OFFSET) -> dict[str, Any]:
    found: dict[str, Any] = api(demo, f"/api/deployments/stats?tz_offset={offset}")
    return found


def card_shows(page: Any) -> dict[str, str]:
    shown: dict[str, str] = page.eval_on_selector_all(
        "#deployed-card [data-field]", "els => Object.fromEntries(els.map(e => "
        "[e.dataset.field, e.textContent]))")
    return shown


def card_expected(s: dict[str, Any]) -> dict[str, str]:
    day = s["last_24h"]
    return {"deployed": str(s["deployed"]),
            "deployed-of": f"of {s['total']} · {s['failed']} failed",
            "average": eta(s["average_seconds"]), "day": str(day["deployed"]),
            "day-note": f"{day['failed']} failed"
                        + ("" if day["average_seconds"] is None
                           else f" · avg {eta(day['average_seconds'])}")}


def ticks(page: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#deploy-ticks .tick", "ts => ts.map(t => ({id: t.dataset.id, result: t.dataset.result, "
        "height: t.style.height, color: getComputedStyle(t).backgroundColor, "
        "href: t.getAttribute('href'), title: t.title}))")
    return found


def agree(read_page: Any, read_api: Any, timeout: float = 45.0, what: str = "") -> Any:
    """The page and the API agree at some moment (deployments keep finishing in the demo; the
    page follows within its 10 s refresh). Returns the API's side."""
    deadline = time.monotonic() + timeout
    while True:
        shown, wanted = read_page(), read_api()
        if shown == wanted:
            return wanted
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the page shows {shown!r}, the API says {wanted!r}")
        time.sleep(0.4)


def rgb(color: str) -> tuple[float, ...]:
    values = re.findall(r"[\d.]+", color)
    assert len(values) >= 3, color
    if color.startswith("color(srgb"):
        return tuple(float(v) * 255 for v in values[:3])
    return tuple(float(v) for v in values[:3])


def contrast(a: str, b: str) -> float:
    def luminance(color: str) -> float:
        def channel(c: float) -> float:
            c /= 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b_ = (channel(c) for c in rgb(color))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b_
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_dashboard_deployed_card_ticks_and_charts(demo_process: DemoProcess,
                                                  browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    asked: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark",
                                  timezone_id=TZ)
    page = context.new_page()
    watch_errors(page, errors)
    page.on("request", lambda r: asked.append(r.url) if "/api/deployments/stats" in r.url
            else None)
    page.goto(demo.url + "/")
    page.locator('#live[data-status="live"]').wait_for()
    page.locator("#deployed-card[data-loaded]").wait_for()
    # The browser's offset goes with the question (minutes east of UTC).
    assert asked and all(url.endswith(f"?tz_offset={TZ_OFFSET}") for url in asked), asked

    # --- the Deployed card: the API's figures (the demo starts with 300 in its history)
    first = stats(demo)
    assert first["total"] >= 300 and first["failed"] > 0 and first["last_24h"]["deployed"] > 0
    agree(lambda: {k: v for k, v in card_shows(page).items() if k in card_expected(first)},
          lambda: card_expected(stats(demo)), what="the Deployed card")
    # Right after the state counts.
    assert page.evaluate("document.querySelector('#state-counts').closest('section')"
                         ".nextElementSibling.id") == "deployed-card"

    # --- the last 100, oldest first: one tick each, failures in another colour, height = time
    def settled() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The ticks and the API's last 100, read when they are the same deployments."""
        deadline = time.monotonic() + 45
        while True:
            shown, recent = ticks(page), stats(demo)["recent"]
            if [t["id"] for t in shown] == [d["id"] for d in recent]:
                return shown, recent
            assert time.monotonic() < deadline, "the ticks never matched the API's last 100"
            time.sleep(0.4)

    shown, recent = settled()
    assert len(shown) == min(100, stats(demo)["total"]) == 100
    assert [t["result"] for t in shown] == [d["result"] for d in recent]
    by_id = {d["id"]: d for d in recent}
    colours: dict[str, set[str]] = {t["result"]: set() for t in shown}
    for t in shown:
        colours[t["result"]].add(t["color"])
    assert set(colours) == {"succeeded", "failed"}, "the last 100 hold failures in the demo"
    assert len(colours["succeeded"]) == len(colours["failed"]) == 1
    assert colours["succeeded"] != colours["failed"]
    longest = max(by_id[t["id"]]["seconds"] for t in shown)
    for t in shown:
        d = by_id[t["id"]]
        assert t["height"] == f"{max(8, math.floor(100 * d['seconds'] / longest + 0.5))}%", (t, d)
        assert t["href"] == f"/machines/{d['machine_id']}"
        assert d["machine"] in t["title"] and eta(d["seconds"]) in t["title"]
    failed = next(t for t in reversed(shown) if t["result"] == "failed")
    assert by_id[failed["id"]]["reason"] in failed["title"]
    page.locator(f'#deploy-ticks .tick[data-id="{failed["id"]}"]').hover()
    readout = page.locator('[data-field="tick-readout"]')
    assert by_id[failed["id"]]["machine"] in readout.inner_text()
    assert by_id[failed["id"]]["reason"] in readout.inner_text()

    # --- the charts: bars in proportion to the figures
    def outcome_rows() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = page.eval_on_selector_all(
            "#chart-outcome-template .chart-row", "gs => gs.map(g => ({name: g.dataset.name, "
            "succeeded: Number(g.dataset.succeeded), failed: Number(g.dataset.failed), "
            "ok: Number(g.querySelector('.bar-ok').getAttribute('width')), "
            "bad: Number(g.querySelector('.bar-failed').getAttribute('width'))}))")
        return rows

    agree(lambda: sorted((r["name"], r["succeeded"], r["failed"]) for r in outcome_rows()),
          lambda: sorted((g["name"], g["succeeded"], g["failed"])
                         for g in stats(demo)["by_template"]), what="outcome by template")
    rows = outcome_rows()
    assert len(rows) >= 5
    per = rows[0]["ok"] / rows[0]["succeeded"]  # pixels per deployment, the same on every row
    for r in rows:
        assert abs(r["ok"] - per * r["succeeded"]) < 0.5, r
        assert abs(r["bad"] - per * r["failed"]) < 0.5, r
    assert max(r["succeeded"] + r["failed"] for r in rows) * per <= float(page.evaluate(
        "document.querySelector('#chart-outcome-template svg').getAttribute('width')"))
    medians = page.eval_on_selector_all(
        "#chart-time-template .chart-row", "gs => Object.fromEntries(gs.map(g => [g.dataset.name, "
        "Number(g.querySelector('.bar-median')?.dataset.seconds)]))")
    assert medians == {g["name"]: g["median_seconds"] for g in stats(demo)["by_template"]}
    assert page.locator("#chart-time-hardware .chart-row").count() == len(
        stats(demo)["by_hardware"])

    def hours() -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = page.eval_on_selector_all(
            "#chart-by-hour .chart-col", "cs => cs.map(c => [Number(c.dataset.succeeded), "
            "Number(c.dataset.failed)])")
        return [tuple(h) for h in found]  # type: ignore[misc]

    wanted = agree(hours, lambda: [(h["succeeded"], h["failed"]) for h in stats(demo)["by_hour"]],
                   what="by hour, in the browser's time zone")
    assert wanted != [(h["succeeded"], h["failed"]) for h in stats(demo, 0)["by_hour"]]
    assert page.locator("#chart-by-day .chart-col").count() == 30

    # --- the active deployments: the ETA's basis as the tooltip
    def tooltips() -> dict[str, str | None]:
        found: dict[str, str | None] = page.eval_on_selector_all(
            "#deployments .deploy", "ls => Object.fromEntries(ls.filter(l => "
            "!l.classList.contains('is-done') && !l.classList.contains('is-failed')).map(l => "
            "[l.dataset.wf, l.querySelector('[data-field=eta]').title || null]))")
        return found

    agree(tooltips, lambda: {w["id"]: f"Estimated {w['eta_basis']}" if w["eta_basis"] else None
                             for w in api(demo, "/api/stats")["active_workflows"]
                             if w["state"] == "running"}, what="ETA tooltips")
    shot(page, "dashboard-deployed", full_page=True)

    # --- readable in both themes: the charts' text against the card, the bars too
    def legibility() -> list[float]:
        colours = page.evaluate("""() => {
          const card = getComputedStyle(document.querySelector('.chart-card')).backgroundColor;
          const fill = (sel) => getComputedStyle(document.querySelector(sel)).fill;
          return [card, fill('#chart-time-template .chart-label'),
                  fill('#chart-outcome-template .bar-ok'),
                  fill('#chart-outcome-template .bar-failed'),
                  fill('#chart-time-template .bar-median')];
        }""")
        return [contrast(colours[0], c) for c in colours[1:]]

    dark = legibility()
    page.locator("#theme-toggle").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    light = legibility()
    for ratios in (dark, light):
        assert ratios[0] >= 4.5 and min(ratios[1:]) >= 3, ratios
    assert dark != light
    shot(page, "dashboard-deployed-light", full_page=True)

    # --- a tick leads to its machine
    newest = shown[-1]
    page.locator(f'#deploy-ticks .tick[data-id="{newest["id"]}"]').click()
    page.wait_for_url(f"**{newest['href']}")
    context.close()
    assert not errors, errors


def wait_for(find: Any, what: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] | None = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.3)


def open_while(page: Any, demo: DemoProcess, find: Any, shown: Any, what: str
               ) -> dict[str, Any]:
    """Open the machine page of a deployment ``find`` picks and wait for ``shown`` on it. The
    demo's deployments move on within seconds: when the step has passed by the time the page
    shows, pick again (a few times), rather than fail on the race."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _attempt in range(6):
        wf = wait_for(lambda: find(demo), what)
        page.goto(f"{demo.url}/machines/{wf['machine_id']}")
        page.locator('#live[data-status="live"]').wait_for()
        try:
            shown.wait_for(timeout=6000)
        except PlaywrightTimeout:
            continue
        return wf
    raise AssertionError(f"{what}: the page never showed it in six tries")


def running_unmeasured(demo: DemoProcess) -> dict[str, Any] | None:
    """A running deployment whose running step reports no measure (not streaming)."""
    wf: dict[str, Any]
    for wf in api(demo, "/api/stats")["active_workflows"]:
        run = [a for a in wf["actions"] if a["state"] == "running"]
        if (wf["state"] == "running" and wf["eta_basis"] and run
                and run[0]["name"] not in STREAMS and not run[0].get("bytes_total")
                and wf["progress"] < 80):
            return wf
    return None


def running_stream(demo: DemoProcess) -> dict[str, Any] | None:
    wf: dict[str, Any]
    for wf in api(demo, "/api/stats")["active_workflows"]:
        run = [a for a in wf["actions"] if a["state"] == "running"]
        if wf["state"] == "running" and run and run[0]["name"] in STREAMS and wf["progress"] < 50:
            return wf
    return None


def test_machine_page_eta_basis_and_barber_pole(demo_process: DemoProcess,
                                                browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    page = context.new_page()
    watch_errors(page, errors)

    # --- a step without a measure: the barber pole, animated; the ETA and what it rests on
    box = page.locator("#workflow")
    pole = box.locator(".step.step-running .progress.is-pole")
    # Read the pole in one go: the demo's step may move on between two separate reads.
    facts: dict[str, Any] | None = None
    for _attempt in range(4):
        wf = open_while(page, demo, running_unmeasured, pole,
                        "a deployment in a step without a measure")
        facts = page.evaluate("""() => {
            const b = document.querySelector("#workflow .step.step-running .progress.is-pole");
            if (!b || !b.firstElementChild) return null;
            const step = b.closest(".step");
            return {now: b.getAttribute("aria-valuenow"),
                    text: b.getAttribute("aria-valuetext") || "",
                    animation: getComputedStyle(b.firstElementChild).animationName,
                    inner: b.firstElementChild.getBoundingClientRect().width,
                    outer: b.getBoundingClientRect().width,
                    state: step.querySelector(".step-state").innerText};
        }""")
        if facts is not None:
            break
    assert facts is not None, "the pole was never there to read"
    assert facts["now"] is None and "no measure" in facts["text"], facts
    assert facts["animation"] == "pole", facts
    assert facts["inner"] == pytest.approx(facts["outer"], abs=1), facts
    assert facts["state"] == "running", facts  # no made-up %
    # The whole deployment's bar: its % and the running step's span as a pole.
    overall = box.locator(".wf-overall .progress")
    assert overall.get_attribute("aria-valuenow") is not None
    assert overall.locator(".progress-pole").count() == 1

    def timer_words() -> tuple[str, str]:
        return (box.locator('[data-field="eta-basis"]').inner_text(),
                box.locator('[data-field="eta"]').inner_text())

    def api_words() -> tuple[str, str]:
        now = api(demo, f"/api/workflows/{wf['id']}")
        return (f"Estimated {now['eta_basis']}", timer_words()[1])

    basis, left = agree(timer_words, api_words, what="the ETA's basis")
    assert re.fullmatch(r"Estimated from \d+ [\w.-]+ deployments on .+|"
                        r"Estimated from \d+ deployments .+", basis), basis
    assert re.fullmatch(r"about \d+ (s|min) left|a few seconds left|finishing", left), left
    shot(page, "machine-barber-pole")

    # Reduced motion: the pole stands still.
    calm = browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    still = calm.new_page()
    still.goto(f"{demo.url}/machines/{wf['machine_id']}")
    bar = still.locator("#workflow .progress.is-pole, #workflow .progress-pole").first
    bar.wait_for()
    animation = bar.evaluate("b => getComputedStyle(b.classList.contains('progress-pole') ? b "
                             ": b.firstElementChild).animationName")
    assert animation == "none"
    calm.close()

    # --- a streaming step: a real % from its bytes
    measured = box.locator(".step.step-running .progress.is-measured")
    wf = open_while(page, demo, running_stream, measured, "a deployment streaming its image")
    value = float(measured.get_attribute("aria-valuenow") or "nan")
    now = api(demo, f"/api/workflows/{wf['id']}")
    fraction = 100 * now["bytes_done"] / now["bytes_total"]
    assert 0 < value <= 100 and abs(value - fraction) < 25, (value, fraction)
    assert re.fullmatch(r"running · \d+%", box.locator(
        ".step.step-running .step-state").inner_text())
    assert box.locator(".wf-overall .progress-pole").count() == 0
    context.close()

    # --- phone width: the dashboard and a machine page stay within the screen
    phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                device_scale_factor=2, has_touch=True)
    mobile = phone.new_page()
    watch_errors(mobile, errors)
    mobile.goto(demo.url + "/")
    mobile.locator("#deployed-card[data-loaded]").wait_for()
    mobile.locator("#chart-by-day svg").wait_for()
    no_horizontal_overflow(mobile)
    for chart in mobile.locator(".chart svg").all():
        assert chart.evaluate("s => s.getBoundingClientRect().right <= innerWidth"), chart
    assert mobile.locator("#deploy-ticks .tick").count() == 100
    right = mobile.eval_on_selector_all(
        "#deploy-ticks .tick", "ts => Math.max(...ts.map(t => t.getBoundingClientRect().right))")
    assert right <= 390
    shot(mobile, "phone-dashboard-deployed", full_page=True)
    mobile.goto(f"{demo.url}/machines/{wf['machine_id']}")
    mobile.locator("#workflow .steps-timeline").wait_for()
    no_horizontal_overflow(mobile)
    phone.close()
    assert not errors, errors


def test_the_demo_history_is_believable_and_repeatable() -> None:
    """The backfill itself (no browser): the same fleet, seed and clock give the same 300
    deployments; about 8 % fail, in working hours mostly; NVMe is faster than spinning disks;
    each installed machine's latest deployment installed its OS, each failed machine's latest
    one failed with the reason the machine shows."""
    import asyncio
    import statistics

    from dragonfly.compose import demo_context
    from dragonfly.demo.history import DemoHistory
    from dragonfly.demo.simulator import Simulator
    from dragonfly.domain.model import State

    async def run() -> None:
        ctx = demo_context(seed=11, tick=3600)
        await ctx.store.open()
        await ctx.fleet.start()
        try:
            simulator = ctx.services[0]
            assert isinstance(simulator, Simulator)
            await simulator.seed()
            now = 1_760_000_000.0
            backfill = DemoHistory(ctx.fleet, ctx.timer, seed=11)
            records = backfill.records(now)
            assert [r.to_dict() for r in records] == [
                r.to_dict() for r in DemoHistory(ctx.fleet, ctx.timer, seed=11).records(now)]
            assert [r.to_dict() for r in records] != [
                r.to_dict() for r in DemoHistory(ctx.fleet, ctx.timer, seed=12).records(now)]
            assert len(records) == 300 and len({r.id for r in records}) == 300
            assert all(now - 31 * 86400 < r.started_at < r.finished_at < now for r in records)
            assert 0.04 <= sum(not r.succeeded for r in records) / 300 <= 0.13
            offset = time.localtime(now).tm_gmtoff
            working = sum(8 <= time.gmtime(r.finished_at + offset).tm_hour < 18
                          for r in records)
            assert working / 300 > 0.7
            ok = [r for r in records if r.succeeded]
            by_disk = {kind: statistics.median(r.seconds for r in ok
                                               if r.hardware.disk_kind == kind)
                       for kind in {r.hardware.disk_kind for r in ok}}
            assert by_disk["nvme"] < by_disk["ssd"] < by_disk["hdd"], by_disk
            for r in records:
                assert r.stages and abs(sum(s["seconds"] for s in r.stages) - r.seconds) < 0.01
                assert r.succeeded == all(s["state"] == "succeeded" for s in r.stages)
                assert r.succeeded or r.reason.startswith(r.stages[-1]["name"]), r.reason
            machines = {m.id: m for m in ctx.fleet.list_machines(limit=1000).items}
            latest = {r.machine_id: r for r in records}
            for machine in machines.values():
                if machine.state is State.INSTALLED:
                    assert latest[machine.id].succeeded
                    assert latest[machine.id].template == machine.os
                if machine.state is State.FAILED:
                    assert latest[machine.id].reason == machine.state_reason
                if machine.state is State.DISCOVERED:
                    assert machine.id not in latest
            assert ctx.timer is not None
            await ctx.timer.start()
            await backfill.start()
            await ctx.timer.ready()
            assert ctx.timer.stats()["total"] == 300
            await ctx.timer.stop()
        finally:
            ctx.fleet.stop()
            await ctx.store.close()

    asyncio.run(run())
