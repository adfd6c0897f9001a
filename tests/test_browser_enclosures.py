"""OpenJBOD enclosures and Adopt from BMC in the panel, in a real browser (Debian's Chromium
driven by Playwright) against the built zipapp's demo.

Enclosures: the demo's own shelves are listed on the enclosures page; an enclosure registered
there points at an in-test stand-in of the OpenJBOD firmware's documented API
(tests/test_power_redfish.py's ``openjbod_app``), which the demo's real openjbod driver talks
to. Its password is never shown back (the form says "password set"). On an attached machine's
page the Enclosures card shows the controller's state and health and offers on, off and cycle:
on switches the stand-in, cycle is confirmed (naming the attached machines), off is refused
with 423 while another attached machine is locked (the refusal shown verbatim, the stand-in
untouched), and goes through once it is unlocked; this machine's own lock turns the buttons
off; a user sees the state without buttons and cannot open the enclosures page.

Adopt from BMC: the dialog offers the drivers an agent can report (not wol, not openjbod), the
fields the chosen one reads; a fake BMC adoption waits, and is linked to the machine whose
agent reports that BMC (the list asks again while one waits); an unreachable fake BMC answers
502 and the dialog shows the error verbatim, the list the failure's reason; removing an
adoption takes it off the list.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import DemoProcess, free_port
from tests.test_agent_checkin import report_body
from tests.test_browser import api, browser, call, no_horizontal_overflow, shot, switch_role
from tests.test_browser_power import eventually, watch_errors
from tests.test_power_redfish import PASSWORD, openjbod_app

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, used by name

BMC_SECRET = "adopt-S3cret-9"
PASSWORD_SET = "Password set: leave empty to keep it"


@contextmanager
def openjbod_controller() -> Iterator[tuple[str, dict[str, Any]]]:
    """The OpenJBOD stand-in on a loopback port, served from its own thread: (URL, what it saw)."""
    app, seen = openjbod_app(newer=False)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="openjbod stand-in", daemon=True)
    thread.start()
    assert ready.wait(10), "the OpenJBOD stand-in did not start"
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def posts(seen: dict[str, Any], since: int = 0) -> list[str]:
    return [c for c in seen["calls"][since:] if c.startswith("POST")]


def test_enclosures_page_and_card(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_errors(page, errors)
    demo_shelves = api(demo, "/api/enclosures")
    assert [e["name"] for e in demo_shelves] == ["shelf-a", "shelf-b"]
    in_shelves = {m for e in demo_shelves for m in e["machines"]}
    free = [m for m in api(demo, "/api/machines?state=installed&limit=1000")["items"]
            if m["id"] not in in_shelves]
    m1, m2 = free[0], free[1]

    with openjbod_controller() as (base, seen):
        # --- the enclosures page: the demo's shelves, then one registered through the form
        page.goto(demo.url + "/enclosures")
        page.locator('#live[data-status="live"]').wait_for()
        assert page.locator('.nav-link[aria-current="page"]').inner_text().strip() == "Machines"
        rows = page.locator("#enclosure-rows tr")
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.enclosure)") == ["shelf-a", "shelf-b"]
        shelf_a = page.locator('#enclosure-rows tr[data-enclosure="shelf-a"]')
        assert "password set" in shelf_a.inner_text()
        assert shelf_a.locator("[data-machine]").evaluate_all(
            "ls => ls.map(l => l.dataset.machine)") == demo_shelves[0]["machines"]

        page.get_by_role("button", name="Register enclosure").click()
        dialog = page.locator("dialog[open]")
        assert dialog.locator("#enc-password").get_attribute("placeholder") != PASSWORD_SET
        assert dialog.locator("[data-clear-password]").is_hidden()
        dialog.locator("#enc-name").fill("Shelf One")  # refused: upper case and a space
        dialog.locator("#enc-address").fill(base)
        dialog.locator("#enc-user").fill("admin")
        dialog.locator("#enc-password").fill(PASSWORD)
        for machine in (m1, m2):
            dialog.locator("#enc-machine").fill(machine["name"])
            dialog.get_by_role("button", name="Attach").click()
            dialog.locator(f'[data-field="attached"] [data-machine="{machine["id"]}"]').wait_for()
        dialog.locator("#enc-machine").fill("no-such-machine-anywhere")
        dialog.locator("#enc-machine").press("Enter")  # attaches (or says why), never submits
        attach_error = dialog.locator('[data-field="attach-error"]')
        attach_error.wait_for()
        assert attach_error.inner_text() == "No machine matches “no-such-machine-anywhere”."
        dialog.locator("#enc-machine").fill("")
        assert dialog.locator('[data-field="attached"] [data-machine]').count() == 2
        dialog.get_by_role("button", name="Register").click()
        error = dialog.locator("p.field-error:not([data-field])")
        error.wait_for()
        assert error.inner_text().startswith("an enclosure's name is 1-63 lower-case letters")
        assert dialog.locator("#enc-name").get_attribute("aria-invalid") == "true"
        assert api(demo, "/api/enclosures")[-1]["name"] == "shelf-b"  # nothing registered
        dialog.locator("#enc-name").fill("shelf-test")
        with page.expect_response(lambda r: r.url.endswith("/api/enclosures")
                                  and r.request.method == "POST") as made:
            dialog.get_by_role("button", name="Register").click()
        assert made.value.ok and PASSWORD not in made.value.text()
        assert made.value.json()["has_password"] is True
        page.locator(".toast").filter(has_text="Registered enclosure shelf-test").wait_for()
        row = page.locator('#enclosure-rows tr[data-enclosure="shelf-test"]')
        row.wait_for()
        assert "password set" in row.inner_text() and base in row.inner_text()
        assert row.locator("[data-machine]").evaluate_all("ls => ls.map(l => l.innerText)") == [
            m1["name"], m2["name"]]
        record = api(demo, "/api/enclosures/shelf-test")
        assert record["machines"] == [m1["id"], m2["id"]] and record["has_password"] is True
        assert record["user"] == "admin" and "password" not in record
        assert PASSWORD not in page.content()

        # Editing: the password is never shown back, saving without typing it keeps it.
        page.reload()
        assert PASSWORD not in page.content()
        page.get_by_role("button", name="Edit enclosure shelf-test").click()
        dialog = page.locator("dialog[open]")
        password = dialog.locator("#enc-password")
        assert password.input_value() == ""
        assert password.get_attribute("placeholder") == PASSWORD_SET
        assert dialog.locator("[data-clear-password]").is_visible()
        assert "password set" in dialog.locator('[data-field="enclosure-status"]').inner_text()
        assert dialog.locator("#enc-address").input_value() == base
        assert dialog.locator("#enc-name").get_attribute("readonly") is not None
        assert dialog.locator('[data-field="attached"] [data-machine]').evaluate_all(
            "cs => cs.map(c => c.dataset.machine)") == [m1["id"], m2["id"]]
        assert PASSWORD not in page.content()
        dialog.locator("#enc-port").fill("80")
        with page.expect_response(lambda r: r.url.endswith("/api/enclosures/shelf-test")
                                  and r.request.method == "PUT") as saved:
            dialog.get_by_role("button", name="Save").click()
        assert saved.value.ok and "password" not in saved.value.request.post_data_json
        assert api(demo, "/api/enclosures/shelf-test")["has_password"] is True
        assert api(demo, "/api/enclosures/shelf-test")["port"] == 80
        shot(page, "enclosures-page")

        # --- the machine page: the controller's state and health, the buttons it supports
        page.goto(f"{demo.url}/machines/{m1['id']}")
        page.locator('#live[data-status="live"]').wait_for()
        card = page.locator("#enclosure-card")
        shelf = card.locator('[data-enclosure="shelf-test"]')
        shelf.locator('[data-field="enclosure-state"] [data-power="off"]').wait_for()
        assert shelf.locator('[data-field="enclosure-health"]').text_content() == "ok"
        assert shelf.locator("[data-field=enclosure-error]").count() == 0
        status = api(demo, f"/api/machines/{m1['id']}/enclosures")
        assert [s["name"] for s in status] == ["shelf-test"]
        buttons = shelf.locator("[data-enclosure-op]")
        assert buttons.evaluate_all("bs => bs.map(b => b.dataset.enclosureOp)") == \
            status[0]["actions"] == ["on", "off", "cycle"]
        others = shelf.locator('[data-field="enclosure-machines"] [data-machine]')
        assert others.evaluate_all("ls => ls.map(l => l.dataset.machine)") == [m2["id"]]

        # On: not confirmed; the stand-in is switched and the card follows.
        buttons.filter(has_text="Power on").click()
        shelf.locator('[data-field="enclosure-state"] [data-power="on"]').wait_for()
        assert seen["on"] is True and posts(seen)[-1] == "POST /api/power/on"

        # Cycle: confirmed first, naming every attached machine; cancelled, nothing is sent.
        before = len(seen["calls"])
        buttons.filter(has_text="Power cycle").click()
        dialog = page.locator("dialog[open]")
        assert "Power cycle: enclosure shelf-test" in dialog.locator("h2").inner_text()
        assert m1["name"] in dialog.inner_text() and m2["name"] in dialog.inner_text()
        assert "loses its disks" in dialog.inner_text()
        dialog.get_by_role("button", name="Cancel").click()
        dialog.wait_for(state="detached")
        assert posts(seen, before) == []

        # Off while the other attached machine is locked: refused with 423, shown verbatim.
        call(demo, "PUT", f"/api/machines/{m2['id']}/lock", {"reason": "raid rebuild running"})
        buttons.filter(has_text="Power off").click()
        dialog = page.locator("dialog[open]")
        assert "Power off: enclosure shelf-test" in dialog.locator("h2").inner_text()
        assert "vanish at once from under every attached machine" in dialog.inner_text()
        with page.expect_response(lambda r: r.url.endswith("/shelf-test/power/off")) as answer:
            dialog.get_by_role("button", name="Power off").click()
        assert answer.value.status == 423
        refusal = shelf.locator('[data-field="enclosure-refusal"]')
        refusal.wait_for()
        text = refusal.locator('[data-field="enclosure-refusal-text"]').inner_text()
        assert text == answer.value.json()["error"]
        assert "raid rebuild running" in text and m2["id"] in text
        assert "Power off refused" in refusal.inner_text()
        assert seen["on"] is True and "POST /api/power/off" not in seen["calls"]
        assert page.locator(".toast").filter(has_text="This machine is locked").count() == 0
        outcomes = {e["outcome"] for e in api(demo, "/api/audit?action=enclosure.power.off")}
        assert outcomes == {"denied"}
        shot(page, "enclosure-card-refused")

        # Unlocked: off goes through, the refusal goes away.
        call(demo, "DELETE", f"/api/machines/{m2['id']}/lock")
        buttons.filter(has_text="Power off").click()
        page.locator("dialog[open]").get_by_role("button", name="Power off").click()
        shelf.locator('[data-field="enclosure-state"] [data-power="off"]').wait_for()
        assert seen["on"] is False and posts(seen)[-1] == "POST /api/power/off"
        assert refusal.count() == 0

        # This machine's own lock turns the buttons off with its reason, live.
        call(demo, "PUT", f"/api/machines/{m1['id']}/lock", {"reason": "enclosure card hold"})
        page.wait_for_function(
            "() => [...document.querySelectorAll('.enclosure-actions [data-enclosure-op]')]"
            ".every(b => b.getAttribute('aria-disabled') === 'true')")
        assert "enclosure card hold" in buttons.first.get_attribute("title")
        call(demo, "DELETE", f"/api/machines/{m1['id']}/lock")
        page.wait_for_function(
            "() => ![...document.querySelectorAll('.enclosure-actions [data-enclosure-op]')]"
            ".some(b => b.hasAttribute('aria-disabled'))")

        # A demo shelf whose controller does not answer says why.
        failing = demo_shelves[1]
        page.goto(f"{demo.url}/machines/{failing['machines'][0]}")
        error_box = page.locator('[data-enclosure="shelf-b"] [data-field="enclosure-error"]')
        error_box.wait_for()
        assert "timeout: the OpenJBOD controller at unreachable-jbod-b did not answer" in \
            error_box.inner_text()

        # --- a user sees the state, not the buttons, and cannot open the enclosures page
        page.goto(f"{demo.url}/machines/{m1['id']}")
        switch_role(page, "user")
        shelf.locator('[data-field="enclosure-state"] [data-power="off"]').wait_for()
        assert shelf.locator("[data-enclosure-op]").count() == 0
        assert card.get_by_role("link", name="Manage").count() == 0
        assert page.locator("#adopt-bmc").count() == 0
        response = page.goto(f"{demo.url}/enclosures")
        assert response is not None and response.status == 403
        assert "Not allowed" in page.content()
        page.goto(f"{demo.url}/machines")
        assert page.locator("#adopt-bmc").count() == 0
        assert page.get_by_role("link", name="Enclosures").count() == 0
        switch_role(page, "admin")

        # --- removed through the page: gone from the list and from the machine's page
        page.goto(demo.url + "/machines")
        page.get_by_role("link", name="Enclosures").click()
        page.wait_for_url("**/enclosures")
        page.get_by_role("button", name="Remove enclosure shelf-test").click()
        page.locator("dialog[open]").get_by_role("button", name="Remove").click()
        page.locator('#enclosure-rows tr[data-enclosure="shelf-test"]').wait_for(state="detached")
        assert [e["name"] for e in api(demo, "/api/enclosures")] == ["shelf-a", "shelf-b"]
        page.goto(f"{demo.url}/machines/{m1['id']}")
        assert page.locator("#enclosure-card").count() == 0

    # Phone width: the page and a card fit.
    context.close()
    phone = browser.new_context(viewport={"width": 375, "height": 812}, has_touch=True)
    mobile = phone.new_page()
    watch_errors(mobile, errors)
    for path in ("/enclosures", f"/machines/{demo_shelves[0]['machines'][0]}"):
        mobile.goto(demo.url + path)
        mobile.wait_for_timeout(500)
        no_horizontal_overflow(mobile)
    mobile.locator('[data-enclosure="shelf-a"] [data-field="enclosure-state"] [data-power="on"]'
                   ).wait_for()
    shot(mobile, "phone-enclosure-card", full_page=True)
    phone.close()
    assert not errors, errors


def test_adopt_from_bmc(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    watch_errors(page, errors)
    page.goto(demo.url + "/machines")
    page.locator('#live[data-status="live"]').wait_for()
    adoptions = page.locator("#adoptions")
    assert adoptions.is_hidden() and api(demo, "/api/power/adoptions") == []

    # --- the dialog: the drivers an agent can report, the fields the chosen one reads
    page.get_by_role("button", name="Adopt from BMC").click()
    dialog = page.locator("dialog[open]")
    offered = dialog.locator("#adopt-driver option").evaluate_all("os => os.map(o => o.value)")
    drivers = {d["name"] for d in api(demo, "/api/power/drivers")}
    assert set(offered) == drivers - {"wol", "openjbod"} and {"ipmi", "redfish"} <= set(offered)
    assert dialog.locator("#adopt-driver").input_value() == "fake"  # the demo's
    dialog.locator("#adopt-driver").select_option("redfish")
    for field in ("address", "port", "user", "password", "insecure", "ca-pem"):
        assert dialog.locator(f"#adopt-{field}").is_visible(), field
    assert "HTTPS URL" in dialog.locator("#adopt-address-help").inner_text()
    dialog.locator("#adopt-driver").select_option("ipmi")
    assert dialog.locator("#adopt-insecure").is_hidden()
    assert dialog.locator("#adopt-port").is_visible()
    dialog.locator("#adopt-driver").select_option("fake")
    assert dialog.locator("#adopt-port").is_hidden() and dialog.locator("#adopt-ca-pem").is_hidden()
    dialog.locator("#adopt-address").fill("192.0.2.77")
    dialog.locator("#adopt-user").fill("root")
    dialog.locator("#adopt-password").fill(BMC_SECRET)
    with page.expect_response(lambda r: r.url.endswith("/api/power/adopt")) as adopted:
        dialog.get_by_role("button", name="Power on into discovery").click()
    assert adopted.value.ok and BMC_SECRET not in adopted.value.text()
    assert adopted.value.request.post_data_json == {
        "driver": "fake", "address": "192.0.2.77", "user": "root", "password": BMC_SECRET}
    dialog.wait_for(state="detached")
    page.locator(".toast").filter(has_text="Adopting the machine behind 192.0.2.77").wait_for()
    waiting = page.locator('#adoption-list [data-state="waiting"]')
    waiting.wait_for()
    assert adoptions.is_visible()
    assert waiting.locator('[data-field="adoption-address"]').inner_text() == "192.0.2.77"
    assert "waiting" in page.locator('[data-field="adoptions-note"]').inner_text()
    [first] = api(demo, "/api/power/adoptions")
    assert first["state"] == "waiting" and waiting.get_attribute("data-adoption") == first["id"]

    # --- an unreachable BMC: 502, the error verbatim in the dialog, the reason in the list
    page.get_by_role("button", name="Adopt from BMC").click()
    dialog = page.locator("dialog[open]")
    dialog.locator("#adopt-address").fill("unreachable-adopt-browser")
    with page.expect_response(lambda r: r.url.endswith("/api/power/adopt")) as refused:
        dialog.get_by_role("button", name="Power on into discovery").click()
    assert refused.value.status == 502
    error = dialog.locator("p.field-error")
    error.wait_for()
    failed = next(a for a in api(demo, "/api/power/adoptions")
                  if a["address"] == "unreachable-adopt-browser")
    assert failed["state"] == "failed"
    assert "did not answer" in failed["reason"]
    assert error.inner_text() == refused.value.json()["error"] == (
        f"cannot power on the BMC at unreachable-adopt-browser: {failed['reason']}")
    dialog.get_by_role("button", name="Cancel").click()
    failed_row = page.locator(f'#adoption-list [data-adoption="{failed["id"]}"]')
    failed_row.wait_for()
    assert failed_row.get_attribute("data-state") == "failed"
    assert failed_row.locator('[data-field="adoption-reason"]').inner_text() == failed["reason"]
    shot(page, "adoptions")

    # --- the machine's agent reports that BMC: the waiting adoption is linked to it, and the
    # list (asked again while one waits) links to the machine
    mac = "52:54:00:77:00:01"
    joined = call(demo, "POST", "/api/agent/checkin", report_body(
        boot_mac=mac, nics=[{"name": "eth0", "mac": mac, "speed_mbps": 1000, "link": True,
                             "driver": "e1000", "ip": "10.99.0.77"}],
        bmc={"present": True, "interface": "", "ip": "192.0.2.77"}))
    linked = page.locator(f'#adoption-list [data-adoption="{first["id"]}"][data-state="linked"]')
    linked.wait_for(timeout=20_000)
    link = linked.locator('[data-field="adoption-machine"]')
    assert link.get_attribute("href") == f"/machines/{joined['machine_id']}"
    assert link.inner_text() == joined["name"]
    assert api(demo, f"/api/machines/{joined['machine_id']}/bmc")["address"] == "192.0.2.77"
    eventually(lambda: page.locator('[data-field="adoptions-note"]').inner_text() == "",
               what="nothing waits any more")

    # --- removing an adoption takes it off the list
    failed_row.get_by_role("button", name="Remove the adoption of unreachable-adopt-browser"
                           ).click()
    failed_row.wait_for(state="detached")
    assert [a["id"] for a in api(demo, "/api/power/adoptions")] == [first["id"]]
    errors = [e for e in errors if "status of 502" not in e]  # the deliberate failure
    assert not errors, errors
