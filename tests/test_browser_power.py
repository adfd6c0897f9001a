"""Power in the panel, in a real browser (Debian's Chromium driven by Playwright) against the
built zipapp's demo, whose machines have fake BMCs (one of them unreachable, the just
discovered ones none).

The machine list: the Power column and the power filter agree with ``GET /api/power``; bulk
power off reports a locked machine's 423 refusal and skips a machine without a BMC, while the
other machine goes off. The machine page: the Power card offers exactly the operations its
driver supports (seven for the fake driver, one for Wake-on-LAN), a power action changes the
state shown, the BMC form saves without ever showing the password back, Test connection shows
an unreachable BMC's reason verbatim, a user sees the state without buttons or the form.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import DemoProcess
from tests.test_browser import api, browser, call, no_horizontal_overflow, shot, switch_role

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, used by name

FAKE_ACTIONS = ["on", "off", "soft_off", "reset", "cycle", "boot_pxe", "boot_disk"]
SECRET = "s3cret-BMC-pass-7"


def power_key(status: dict[str, Any] | None) -> str:
    """What the list's filter matches, from an API status."""
    if not status or not status.get("configured"):
        return "none"
    return status["state"] if status["state"] in ("on", "off") else "unknown"


def powers(demo: DemoProcess) -> dict[str, str]:
    """Every machine's power key as the API says: GET /api/power, "none" for the rest."""
    known = {s["machine"]: power_key(s) for s in api(demo, "/api/power")}
    return {m["id"]: known.get(m["id"], "none")
            for m in api(demo, "/api/machines?limit=1000")["items"]}


def page_html(demo: DemoProcess, path: str) -> str:
    with urllib.request.urlopen(demo.url + path, timeout=10) as response:
        return str(response.read().decode())


def shown_powers(page: Any) -> dict[str, str]:
    shown: dict[str, str] = page.eval_on_selector_all(
        "#machine-rows tr", "rows => Object.fromEntries(rows.map(r => "
        "[r.dataset.id, r.querySelector('.col-power [data-power]')?.dataset.power]))")
    return shown


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def watch_errors(page: Any, errors: list[str]) -> None:
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "status of 4" not in msg.text else None)  # deliberate 4xx answers are logged
    page.set_default_timeout(15_000)


def test_power_column_filter_and_bulk_power(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    watch_errors(page, errors)
    page.goto(demo.url + "/machines")
    page.locator('#live[data-status="live"]').wait_for()

    # --- the Power column: every row's dot is what the API says (the simulator discovers
    # machines now and then, without BMCs: compare until both agree).
    expected = powers(demo)
    assert {"on", "off", "unknown", "none"} <= set(expected.values()), expected
    page.wait_for_function("n => document.querySelectorAll('#machine-rows tr').length >= n",
                           arg=len(expected))
    eventually(lambda: shown_powers(page) == powers(demo), what="the column follows the API")
    # The failing BMC's reason is the dot's tooltip; a powered machine shows its draw.
    failing = next(s for s in api(demo, "/api/power") if s["error"])
    dot = page.locator(f'#machine-rows tr[data-id="{failing["machine"]}"] .col-power .pwr')
    assert dot.get_attribute("data-power") == "unknown"
    assert dot.get_attribute("title") == f'{failing["error"]} ({failing["reason"]})'
    assert "did not answer" in failing["error"]
    powered = next(s for s in api(demo, "/api/power") if s["state"] == "on")
    cell = page.locator(f'#machine-rows tr[data-id="{powered["machine"]}"] .col-power')
    assert cell.locator(".pwr-watts").inner_text().endswith(" W")

    # --- the power filter: exactly the machines in that power state, the URL follows
    for key in ("unknown", "none", "off", "on"):
        page.locator("#power-filter").select_option(key)
        page.wait_for_url(f"**power={key}**")
        eventually(lambda key=key: set(shown_powers(page)) == {
            i for i, k in powers(demo).items() if k == key}, what=f"power={key}")
        assert set(shown_powers(page).values()) == {key}
    # The state chips count within the filter: the machines without a BMC are the
    # discovered ones (the demo sets up every other).
    page.locator("#power-filter").select_option("none")
    eventually(lambda: page.locator('#state-chips [data-count="discovered"]').inner_text()
               == str(sum(1 for m in api(demo, "/api/machines?state=discovered")["items"]
                          if powers(demo)[m["id"]] == "none")), what="chip counts")
    assert page.locator('#state-chips [data-count="installed"]').inner_text() == "0"
    page.locator("#power-filter").select_option("")
    page.wait_for_function("n => document.querySelectorAll('#machine-rows tr').length >= n",
                           arg=len(expected))
    # The server renders a filtered first page too (a shared link, or no script at all).
    for key in ("none", "unknown"):
        eventually(lambda key=key: set(re.findall(r'<tr data-id="([0-9a-f]+)"', page_html(
            demo, f"/machines?power={key}"))) == {i for i, k in powers(demo).items()
                                                   if k == key}, what=f"served power={key}")
    served = page_html(demo, "/machines?power=unknown")
    assert 'data-power="unknown"' in served and 'data-power="on"' not in served
    assert '<option value="unknown" selected>' in served

    # --- bulk power off: one machine locked (refused with 423), one without a BMC (skipped),
    # one that goes off.
    status = {s["machine"]: s for s in api(demo, "/api/power")}
    on = [i for i, s in status.items() if power_key(s) == "on"]
    locked, target = on[0], on[1]
    no_bmc = next(i for i, k in powers(demo).items() if k == "none")
    call(demo, "PUT", f"/api/machines/{locked}/lock", {"reason": "bulk power test hold"})
    page.locator(f'#machine-rows tr[data-id="{locked}"] .lock-mark').wait_for()
    for machine in (locked, target, no_bmc):
        page.locator(f'#machine-rows tr[data-id="{machine}"] .row-check').check()
    bar = page.locator("#bulkbar")
    assert bar.locator('[data-field="selected"]').inner_text() == "3"
    assert bar.locator("[data-bulk-power]").evaluate_all(
        "bs => bs.map(b => b.dataset.bulkPower)") == [
        "on", "off", "soft_off", "cycle", "reset", "boot_pxe"]
    bar.locator('[data-bulk-power="off"]').click()
    dialog = page.locator("dialog[open]")
    assert "Power off: 2 machines" in dialog.locator("h2").inner_text()
    assert "1 other selected machine is skipped: no BMC" in dialog.inner_text()
    confirm = dialog.get_by_role("button", name="Power off 2 machines")
    assert confirm.is_disabled()  # two machines interrupted: type how many first
    dialog.get_by_label("Type 2 to confirm").fill("2")
    confirm.click()
    results = page.locator("#bulk-results")
    results.wait_for(state="visible")
    assert results.locator('[data-field="bulk-summary"]').inner_text() == (
        "Power off: 1 done, 1 refused or failed, 1 skipped")
    refused = results.locator(f'li[data-machine="{locked}"]')
    assert refused.get_attribute("data-status") == "423"
    assert "423 · locked" in refused.inner_text()
    assert "bulk power test hold" in refused.inner_text()
    assert "power off is refused until it is unlocked" in refused.inner_text()
    assert results.locator(f'li[data-machine="{no_bmc}"]').get_attribute(
        "data-status") == "skipped"
    assert results.locator(f'li[data-machine="{target}"]').count() == 0
    shot(page, "power-bulk-results")
    # The one that was let through goes off, live; the locked one stays on.
    page.locator(f'#machine-rows tr[data-id="{target}"] .col-power [data-power="off"]'
                 ).wait_for(timeout=20_000)
    assert api(demo, f"/api/machines/{target}/power")["state"] == "off"
    assert shown_powers(page)[locked] == "on"
    outcomes = {(e["machine"], e["outcome"])
                for e in api(demo, "/api/audit?action=machine.power.off")}
    assert (locked, "denied") in outcomes and (target, "ok") in outcomes

    # Safety mode turns the bulk power buttons off with its reason, live.
    call(demo, "PUT", "/api/safety", {"enabled": True, "reason": "power freeze"})
    off = bar.locator('[data-bulk-power="on"]')
    page.wait_for_function(
        "() => document.querySelector('[data-bulk-power=\"on\"]')"
        ".getAttribute('aria-disabled') === 'true'")
    assert "power freeze" in off.get_attribute("title")
    call(demo, "PUT", "/api/safety", {"enabled": False})
    page.wait_for_function(
        "() => !document.querySelector('[data-bulk-power=\"on\"]').hasAttribute('aria-disabled')")
    call(demo, "DELETE", f"/api/machines/{locked}/lock")
    assert not errors, errors


def test_power_card_actions_and_bmc_form(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_errors(page, errors)
    status = {s["machine"]: s for s in api(demo, "/api/power")}
    target = next(m for m in api(demo, "/api/machines?state=installed")["items"]
                  if power_key(status.get(m["id"])) == "on")
    url = f"/api/machines/{target['id']}"
    page.goto(f"{demo.url}/machines/{target['id']}")
    page.locator('#live[data-status="live"]').wait_for()
    card = page.locator("#power-card")

    # --- the card: state, health, draw, its history, and the fake driver's seven actions
    assert card.locator('[data-field="power-state"] [data-power]').get_attribute(
        "data-power") == "on"
    assert card.locator('[data-field="power-health"]').text_content() == "ok"
    assert card.locator('[data-field="power-watts"]').inner_text().endswith(" W")
    spark = card.locator('[data-field="power-spark"]')
    assert int(spark.get_attribute("data-points")) == len(
        api(demo, f"{url}/power")["watts_history"]) >= 2
    assert spark.locator("svg polyline").count() == 1
    buttons = card.locator("[data-power-op]")
    assert buttons.evaluate_all("bs => bs.map(b => b.dataset.powerOp)") == \
        api(demo, f"{url}/power")["actions"] == FAKE_ACTIONS
    assert page.locator('#machine-head [data-field="power"]').text_content().strip() == "on"
    shot(page, "power-card")

    # --- a power action changes what the card shows (confirmed first: it interrupts)
    buttons.filter(has_text="Power off").click()
    dialog = page.locator("dialog[open]")
    assert "Cuts the power at once" in dialog.inner_text()
    dialog.get_by_role("button", name="Power off").click()
    page.locator(".toast").filter(has_text="Power off: sent to").wait_for()
    card.locator('[data-field="power-state"] [data-power="off"]').wait_for(timeout=20_000)
    assert page.locator('#machine-head [data-field="power"]').text_content().strip() == "off"
    assert api(demo, f"{url}/power")["state"] == "off"
    buttons.filter(has_text="Power on").click()  # not interrupting: no dialog
    card.locator('[data-field="power-state"] [data-power="on"]').wait_for(timeout=20_000)

    # A lock turns every power button off with its reason.
    call(demo, "PUT", f"{url}/lock", {"reason": "power card hold"})
    page.wait_for_function(
        "() => [...document.querySelectorAll('#power-actions [data-power-op]')]"
        ".every(b => b.getAttribute('aria-disabled') === 'true')")
    assert "power card hold" in buttons.first.get_attribute("title")
    call(demo, "DELETE", f"{url}/lock")
    page.wait_for_function(
        "() => ![...document.querySelectorAll('#power-actions [data-power-op]')]"
        ".some(b => b.hasAttribute('aria-disabled'))")

    # --- the BMC form: the fake driver's fields; a password saved is never shown again
    form = page.locator("#bmc-form")
    form.wait_for()
    assert form.locator("#bmc-driver").input_value() == "fake"
    assert form.locator("#bmc-address").input_value() == api(demo, f"{url}/bmc")["address"]
    assert form.locator("#bmc-mac").is_hidden() and form.locator("#bmc-system").is_hidden()
    form.locator("#bmc-driver").select_option("redfish")  # its fields, not saved
    for field in ("address", "port", "user", "password", "system", "ca-pem", "insecure"):
        assert form.locator(f"#bmc-{field}").is_visible(), field
    assert form.locator("#bmc-mac").is_hidden()
    form.locator("#bmc-driver").select_option("fake")
    form.locator("#bmc-user").fill("operator")
    form.locator("#bmc-password").fill(SECRET)
    with page.expect_response(lambda r: r.url.endswith("/bmc")
                              and r.request.method == "PUT") as put:
        form.get_by_role("button", name="Save").click()
    assert put.value.ok and SECRET not in put.value.text()
    assert put.value.json()["has_password"] is True
    page.locator(".toast").filter(has_text="Saved the BMC of").wait_for()
    password = form.locator("#bmc-password")
    assert password.input_value() == ""
    assert password.get_attribute("placeholder") == "Password set: leave empty to keep it"
    assert "password set" in form.locator('[data-field="bmc-status"]').inner_text()
    record = api(demo, f"{url}/bmc")
    assert record["has_password"] is True and record["user"] == "operator"
    assert "password" not in record
    assert SECRET not in page.content()
    with page.expect_response(lambda r: r.url.endswith("/bmc")
                              and r.request.method == "GET") as got:
        page.reload()
    assert SECRET not in got.value.text() and "password" not in got.value.json()
    form.wait_for()
    page.locator("#bmc-password").wait_for()
    assert page.locator("#bmc-password").input_value() == ""
    assert "password set" in form.locator('[data-field="bmc-status"]').inner_text()
    assert SECRET not in page.content()
    # Saving again without typing it keeps it.
    form.locator("#bmc-user").fill("operator2")
    form.get_by_role("button", name="Save").click()
    page.locator(".toast").filter(has_text="Saved the BMC of").last.wait_for()
    eventually(lambda: api(demo, f"{url}/bmc")["user"] == "operator2", what="saved again")
    assert api(demo, f"{url}/bmc")["has_password"] is True

    # --- Test connection: an unreachable BMC's reason, verbatim
    form.locator("#bmc-address").fill("unreachable-browser-test")
    form.get_by_role("button", name="Save").click()
    eventually(lambda: api(demo, f"{url}/bmc")["address"] == "unreachable-browser-test",
               what="the unreachable address saved")
    form.get_by_role("button", name="Test connection").click()
    title = form.locator(".bmc-test-title")
    title.wait_for()
    assert title.get_attribute("data-ok") == "false"
    reason = form.locator(".bmc-test-reason").inner_text()
    assert reason == "timeout: the BMC at unreachable-browser-test did not answer"
    step = form.locator('.bmc-step[data-step="state"]')
    assert "failed" in step.get_attribute("class")
    assert step.locator(".bmc-step-detail").inner_text() == reason
    assert step.locator(".pill").inner_text() == "timeout"
    # The monitor's next reading fails the same way: the card says why.
    card.locator('[data-field="power-error"]').wait_for(timeout=20_000)
    assert reason in card.locator('[data-field="power-error"]').inner_text()
    shot(page, "power-bmc-test", full_page=True)

    # --- another driver: Wake-on-LAN can only power on, so the card offers only that
    form.locator("#bmc-driver").select_option("wol")
    assert form.locator("#bmc-address").is_hidden() and form.locator("#bmc-mac").is_visible()
    assert "SecureOn" in form.locator('[data-field-for="password"] label').first.inner_text()
    form.locator("#bmc-mac").fill(target["mac"])
    form.locator("#bmc-broadcast").fill("192.0.2.255")
    form.get_by_role("button", name="Save").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#power-actions [data-power-op]')]"
        ".map(b => b.dataset.powerOp).join() === 'on'")
    saved = api(demo, f"{url}/bmc")
    assert saved["driver"] == "wol" and saved["address"] == ""
    assert saved["has_password"] is False  # the fake driver's password was for the fake BMC
    assert api(demo, f"{url}/power")["actions"] == ["on"]

    # --- Remove: no BMC, no buttons
    form.get_by_role("button", name="Remove").click()
    page.locator("dialog[open]").get_by_role("button", name="Remove").click()
    card.get_by_text("No BMC configured").wait_for()
    assert card.locator("[data-power-op]").count() == 0
    assert api(demo, f"{url}/bmc")["configured"] is False
    assert api(demo, f"{url}/power")["configured"] is False

    # --- a user sees the power state, not the buttons or the BMC form
    other = next(m for m in api(demo, "/api/machines?state=installed")["items"]
                 if power_key(status.get(m["id"])) == "on" and m["id"] != target["id"])
    page.goto(f"{demo.url}/machines/{other['id']}")
    switch_role(page, "user")
    assert page.locator('#power-card [data-field="power-state"] [data-power]').get_attribute(
        "data-power") == "on"
    assert page.locator("#power-card [data-power-op]").count() == 0
    assert page.locator("#bmc-config").count() == 0
    switch_role(page, "admin")
    assert page.locator("#power-card [data-power-op]").count() == len(FAKE_ACTIONS)

    # Phone width: the card and the form fit.
    context.close()
    phone = browser.new_context(viewport={"width": 375, "height": 812}, has_touch=True)
    mobile = phone.new_page()
    watch_errors(mobile, errors)
    for path in (f"/machines/{other['id']}", "/machines?power=on"):
        mobile.goto(demo.url + path)
        mobile.wait_for_timeout(300)
        no_horizontal_overflow(mobile)
    shot(mobile, "phone-power-card", full_page=True)
    phone.close()
    assert not errors, errors
