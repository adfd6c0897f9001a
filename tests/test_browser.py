"""The panel in a real browser: Debian's Chromium driven by Playwright, against the built zipapp.

One walk through the demo as a newcomer would take it: the banner and its dialogs, the
dashboard with deployments advancing live over SSE, search, a tag edit on a machine page, the
docs, and a phone-width pass. A second walk covers what access control and the boot doctor
add: the role switcher, node locks and safety mode arriving live, and a stalled PXE boot
diagnosed on the dashboard. Screenshots go to test-artifacts/ (and the README's panel.png and
machine.png to docs/screenshots/). Fails, never skips, when Chromium or Playwright is
missing, unless DRAGONFLY_SKIP_BROWSER=1.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ARTIFACTS, ROOT, DemoProcess

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-default-apps",
                 "--disable-extensions", "--no-default-browser-check"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
BANNER = ("Demo Mode: Dragonfly is not installed yet. This is a preview — none of your "
          "hardware is touched.")


def _require_browser() -> Any:
    """Playwright's sync API, or a failure that says what is missing (or a skip if told to)."""
    missing = []
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
        sync_api = None
    if not Path(CHROMIUM).exists():
        missing.append(f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("DRAGONFLY_SKIP_BROWSER") == "1":
            pytest.skip(message)
        pytest.fail(message + "; set DRAGONFLY_SKIP_BROWSER=1 to skip it")
    return sync_api


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = _require_browser()
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def api(demo: DemoProcess, path: str) -> Any:
    with urllib.request.urlopen(demo.url + path, timeout=10) as response:
        return json.load(response)


def shot(page: Any, name: str, *, full_page: bool = False, also: Path | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=full_page)
    if also is not None:
        also.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, also)


def no_horizontal_overflow(page: Any) -> None:
    sizes = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1], f"{page.url} overflows horizontally: {sizes}"


def test_demo_in_a_real_browser(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    requests: list[str] = []
    errors: list[str] = []

    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  color_scheme="dark", device_scale_factor=1)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The deliberate 400 (a too-long tag) and 404 (the not-found page) are logged by Chromium.
    expected = ("status of 400 (Bad Request)", "status of 404 (Not Found)")
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.endswith(expected) else None)
    page.set_default_timeout(15_000)

    # --- the dashboard: banner, buttons, machines, live stream
    page.goto(demo.url + "/")
    banner = page.get_by_role("region", name="Demo mode")
    assert banner.inner_text().strip().startswith(BANNER)
    for name in ("Install Now", "Advanced Setup"):
        assert page.get_by_role("button", name=name).is_visible()
    assert banner.get_by_role("link", name="Docs").get_attribute("href") == "/docs"
    page.locator('#live[data-status="live"]').wait_for()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert int(page.locator('[data-count="installed"]').inner_text()) >= 1
    # "Recently seen" follows the live fleet (agents heartbeat, machines are discovered), so
    # the page and the API are compared until they agree, in order.
    deadline = time.monotonic() + 15
    while True:
        wanted = [m["id"] for m in api(demo, "/api/stats")["recently_seen"]]
        shown = page.eval_on_selector_all("#recent .recent", "li => li.map(x => x.dataset.id)")
        if shown == wanted or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)
    assert shown == wanted and len(wanted) > 0
    first = page.locator(f'#recent [data-id="{wanted[0]}"] .recent-name')
    assert first.is_visible() and first.inner_text().strip()

    # Keyboard: the first Tab lands on the skip link.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.evaluate("document.activeElement.blur()")

    # A progress bar advances through SSE, without a reload.
    page.evaluate("window.__sameDocument = true")
    bars = page.locator("#deployments .deploy")
    bars.first.wait_for()
    slowest = min(api(demo, "/api/stats")["active_workflows"], key=lambda w: w["progress"])
    item = page.locator(f'#deployments [data-wf="{slowest["id"]}"] [role="progressbar"]')
    before = float(item.get_attribute("aria-valuenow"))
    page.wait_for_function(
        """([id, before]) => {
             const bar = document.querySelector(`[data-wf="${id}"] [role="progressbar"]`);
             return bar && Number(bar.getAttribute("aria-valuenow")) > before;
           }""", arg=[slowest["id"], before], timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_timeout(600)  # let the bars ease to their values for the screenshot
    shot(page, "dashboard")

    # --- Install Now and Advanced Setup dialogs
    page.get_by_role("button", name="Install Now").click()
    dialog = page.locator("#install-dialog")
    assert dialog.is_visible()
    assert dialog.locator("#install-command").inner_text() == "sudo ./dragonfly install"
    assert "/usr/local/bin/dragonfly" in dialog.inner_text()
    dialog.get_by_role("button", name="Copy").click()
    dialog.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == "sudo ./dragonfly install"
    shot(page, "install-dialog")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    page.get_by_role("button", name="Advanced Setup").click()
    setup = page.locator("#setup-dialog")
    setup.locator('input[name="mode"][value="tinkerbell"]').check()
    setup.locator("#adv-interface").fill("eno2")
    setup.locator('input[name="dhcp"][value="full"]').check()
    setup.locator("#adv-port").fill("8080")
    assert setup.locator("#adv-command").inner_text() == (
        "sudo ./dragonfly install --mode tinkerbell --interface eno2 --dhcp-mode full "
        "--port 8080")
    shot(page, "advanced-setup")
    page.keyboard.press("Escape")

    # --- the machine list: rows, search as you type, the URL follows
    page.get_by_role("link", name="Machines", exact=True).click()
    page.wait_for_url("**/machines")
    listing = api(demo, "/api/machines")
    assert page.locator("#machine-rows tr").count() == len(listing["items"])
    target = next(m for m in listing["items"] if m["state"] == "installed")
    page.locator("#q").press_sequentially(target["serial"], delay=30)
    page.wait_for_function(
        "n => document.querySelectorAll('#machine-rows tr').length === n", arg=1)
    assert page.locator("#machine-rows tr").first.get_attribute("data-id") == target["id"]
    assert f"q={target['serial']}" in page.url
    page.locator("#q").fill("")
    page.locator("#q").dispatch_event("input")
    page.wait_for_function(
        "n => document.querySelectorAll('#machine-rows tr').length === n",
        arg=len(api(demo, "/api/machines")["items"]))
    shot(page, "machines")

    # --- a machine page: add a tag, check the API has it, remove it again
    page.goto(f"{demo.url}/machines/{target['id']}")
    page.locator("#tag-input").fill("browser-test")
    page.locator("#tag-input").press("Enter")
    chip = page.locator('#tag-list [data-tag="browser-test"]')
    chip.wait_for()
    assert "browser-test" in api(demo, f"/api/machines/{target['id']}")["tags"]
    page.locator("#tag-input").fill("x" * 80)
    page.locator("#tag-input").press("Enter")
    page.locator("#tag-error").wait_for()
    assert "at most 64 characters" in page.locator("#tag-error").inner_text()
    page.locator("#tag-input").fill("")
    page.get_by_role("button", name="Remove tag browser-test").click()
    chip.wait_for(state="detached")
    assert "browser-test" not in api(demo, f"/api/machines/{target['id']}")["tags"]
    # A destructive action asks for the machine's name before it can be confirmed.
    page.get_by_role("button", name="Reimage").click()
    confirm = page.get_by_role("button", name="Wipe and reimage")
    assert confirm.is_disabled()
    page.get_by_label(f"Type {target['name']} to confirm").fill(target["name"])
    assert confirm.is_enabled()
    page.keyboard.press("Escape")
    assert api(demo, f"/api/machines/{target['id']}")["state"] == "installed"
    shot(page, "machine-installed", full_page=True)

    deploying = api(demo, "/api/machines?state=deploying")["items"]
    if deploying:
        page.goto(f"{demo.url}/machines/{deploying[0]['id']}")
        page.locator("#workflow .steps-timeline").wait_for()
    page.wait_for_timeout(600)
    shot(page, "machine", also=SCREENSHOTS / "machine.png")

    # --- tags and docs
    page.goto(demo.url + "/tags")
    assert page.locator("#tag-rows tr").count() == len(api(demo, "/api/tags"))
    shot(page, "tags")
    for doc in ("", "/install", "/lifecycle", "/settings", "/api", "/cli"):
        page.goto(f"{demo.url}/docs{doc}")
        assert page.locator("article.prose h1").is_visible()
        shot(page, "docs" + doc.replace("/", "-"), full_page=True)
    page.goto(demo.url + "/machines/no-such-machine")
    assert page.get_by_role("heading", name="This page flew away").is_visible()
    shot(page, "not-found")

    # --- the light theme sticks across a reload
    page.goto(demo.url + "/")
    page.locator("#theme-toggle").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    shot(page, "dashboard-light")
    context.close()

    # --- phone width: nothing overflows sideways
    # Not is_mobile: a mobile viewport would zoom out to fit wide content and hide overflow.
    phone = browser.new_context(viewport={"width": 375, "height": 812}, color_scheme="dark",
                                device_scale_factor=2, has_touch=True)
    phone.on("request", lambda request: requests.append(request.url))
    mobile = phone.new_page()
    mobile.on("pageerror", lambda exc: errors.append(str(exc)))
    for name, path in (("dashboard", "/"), ("machines", "/machines"),
                       ("machine", f"/machines/{target['id']}"), ("tags", "/tags"),
                       ("docs", "/docs/settings")):
        mobile.goto(demo.url + path)
        mobile.wait_for_timeout(300)
        no_horizontal_overflow(mobile)
        shot(mobile, f"phone-{name}", full_page=True)
    mobile.get_by_role("button", name="Advanced Setup").click()
    no_horizontal_overflow(mobile)
    shot(mobile, "phone-advanced-setup")
    phone.close()

    # --- nothing left this machine, and the scripts ran clean
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, sorted(u for u in requests if "127.0.0.1" not in u)
    assert len(requests) > 20
    assert not errors, errors


def call(demo: DemoProcess, method: str, path: str, body: Any = None) -> Any:
    """An API change from outside the browser (the demo's cookie-less caller is an admin)."""
    request = urllib.request.Request(
        demo.url + path, method=method, headers={"Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def switch_role(page: Any, role: str) -> None:
    """The demo's role switcher in the account menu: post the role, the page reloads."""
    page.locator("#account-menu summary").click()
    option = page.locator(f'#account-menu [data-demo-role="{role}"]')
    with page.expect_navigation():
        option.click()
    assert option.get_attribute("aria-pressed") == "true"
    assert page.locator("#account-menu .menu-role").inner_text() == role


def test_demo_roles_locks_and_boot_doctor(demo_process: DemoProcess, browser: Any) -> None:
    demo = demo_process
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  color_scheme="dark", device_scale_factor=1)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(15_000)

    # --- the boot doctor on the dashboard: a MAC that took an offer and went quiet gets its
    # plain-language diagnosis (~20 s after the demo started), machines that registered show
    # by name with their last step.
    page.goto(demo.url + "/")
    page.locator('#live[data-status="live"]').wait_for()
    page.evaluate("window.__sameDocument = true")
    stuck = page.locator('#boot-list [data-mac="3c:ec:ef:4a:19:02"]')
    stuck.wait_for()
    assert "unknown machine" in stuck.inner_text() and "undionly.kpxe" in stuck.inner_text()
    stuck.locator(".boot-diag").wait_for(timeout=45_000)
    assert "never fetched the loader undionly.kpxe" in stuck.locator(".boot-diag").inner_text()
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator('#boot-card [data-field="boot-stopped"]').inner_text() == "1 stopped"
    discovered = api(demo, "/api/machines?state=discovered")["items"][0]
    row = page.locator(f'#boot-list [data-mac="{discovered["mac"]}"]')
    assert row.locator(".boot-name").inner_text() == discovered["name"]
    assert "Agent check-in" in row.inner_text()
    page.wait_for_timeout(600)
    # The README's panel screenshot: live deployments and a boot the doctor diagnosed.
    shot(page, "dashboard-boot", also=SCREENSHOTS / "panel.png")

    # ... and the whole chain on a discovered machine's page.
    page.goto(f"{demo.url}/machines/{discovered['id']}")
    timeline = api(demo, f"/api/machines/{discovered['id']}/boot")[0]
    steps = page.locator("#boot-timeline .bstep")
    steps.first.wait_for()
    assert steps.count() == len(timeline["steps"])
    assert [s.strip() for s in page.locator("#boot-timeline .bstep-label").all_inner_texts()] == [
        s["label"] for s in timeline["steps"]]
    assert "checked in" in page.locator("#boot-timeline .card-head").inner_text()
    assert page.locator("#boot-timeline time").first.get_attribute("title").endswith("Z")

    # --- roles: a user cannot reimage (or deploy); an admin can, again, after switching back.
    target = api(demo, "/api/machines?state=installed")["items"][0]
    page.goto(f"{demo.url}/machines/{target['id']}")
    assert page.locator('[data-action="reimage"]').is_visible()
    assert page.locator('#account-menu .menu-role').inner_text() == "admin"
    switch_role(page, "user")
    assert page.locator('[data-action="reimage"]').count() == 0
    assert page.locator('[data-tool="lock"]').is_visible()
    assert page.locator('[data-tool="delete"]').count() == 0
    assert page.locator('.nav-link[href="/admin/security"]').count() == 0
    for m in api(demo, "/api/machines")["items"]:
        if m["state"] not in ("ready", "failed"):
            continue
        page.goto(f"{demo.url}/machines/{m['id']}")
        state = page.locator('#machine-head [data-field="badge"] .badge').get_attribute(
            "data-state")
        if state in ("ready", "failed"):
            assert page.locator('[data-action="deploy"]').count() == 0
            break
    shot(page, "machine-as-user")
    page.goto(f"{demo.url}/machines/{target['id']}")
    switch_role(page, "admin")
    assert page.locator('[data-action="reimage"]').is_visible()
    assert page.locator('.nav-link[href="/admin/security"]').is_visible()

    # --- a lock set through the API shows on the open page at once, without a reload
    page.evaluate("window.__sameDocument = true")
    call(demo, "PUT", f"/api/machines/{target['id']}/lock", {"reason": "browser test hold"})
    page.locator("#lock-badge").wait_for(state="visible")
    assert "browser test hold" in page.locator("#lock-callout").inner_text()
    reimage = page.locator('[data-action="reimage"]')
    assert reimage.get_attribute("aria-disabled") == "true"
    assert "browser test hold" in reimage.get_attribute("title")
    assert page.locator('[data-tool="unlock"]').is_visible()
    assert page.locator('[data-tool="lock"]').is_hidden()
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_timeout(300)
    shot(page, "machine-locked")
    reimage.click(force=True)  # a refused button says why instead of acting
    page.locator(".toast").filter(has_text="browser test hold").wait_for()
    assert api(demo, f"/api/machines/{target['id']}")["state"] == "installed"

    # Safety mode: the banner comes and goes live; delete is off while it is on.
    call(demo, "PUT", "/api/safety", {"enabled": True, "reason": "freeze for the test"})
    banner = page.locator("#safety-banner")
    banner.wait_for(state="visible")
    page.wait_for_timeout(500)
    assert "Safety mode is on: reimage, delete and power actions are disabled." in \
        banner.inner_text() and "freeze for the test" in banner.inner_text()
    assert "Safety mode" in page.locator('[data-tool="delete"]').get_attribute("title")
    shot(page, "safety-mode")
    call(demo, "PUT", "/api/safety", {"enabled": False})
    banner.wait_for(state="hidden")

    # Unlock from the page (an admin may); the buttons come back.
    page.locator('[data-tool="unlock"]').click()
    page.locator("#lock-badge").wait_for(state="hidden")
    assert api(demo, f"/api/machines/{target['id']}")["lock"] is None
    assert reimage.get_attribute("aria-disabled") is None
    assert page.locator('[data-tool="lock"]').is_visible()

    # The machine list marks a machine locked while it is open.
    page.goto(demo.url + "/machines")
    page.locator('#live[data-status="live"]').wait_for()
    row = page.locator(f'#machine-rows tr[data-id="{target["id"]}"]')
    assert row.locator(".lock-mark").count() == 0
    call(demo, "PUT", f"/api/machines/{target['id']}/lock", {"reason": "listed"})
    row.locator(".lock-mark").wait_for()
    call(demo, "DELETE", f"/api/machines/{target['id']}/lock")
    row.locator(".lock-mark").wait_for(state="detached")

    context.close()
    assert not errors, errors


def row_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#machine-rows tr",
                                               "rows => rows.map(r => r.dataset.id)")
    return ids


def test_machine_list_filter_sort_and_bulk_tags(demo_process: DemoProcess,
                                                browser: Any) -> None:
    """The list's controls clicked for real: a state chip, a column sort, a shift-click range,
    bulk add, the tag filter, select all and bulk remove, each checked against the API."""
    demo = demo_process
    errors: list[str] = []
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(15_000)
    page.goto(demo.url + "/machines")
    page.locator('#live[data-status="live"]').wait_for()

    # State chip: only installed machines remain (the simulator may move some meanwhile:
    # the list re-queries, so wait until every row is installed again).
    page.locator('#state-chips [data-state="installed"]').click()
    page.wait_for_function("""() => {
        const rows = [...document.querySelectorAll('#machine-rows tr')];
        return rows.length > 0 && rows.every(r => r.dataset.state === 'installed'); }""")
    assert "state=installed" in page.url
    assert page.locator('#state-chips [data-state="installed"]').get_attribute(
        "aria-pressed") == "true"

    # Back to all states, then sort by memory: the biggest first (the API's own order).
    page.locator('#state-chips [data-state=""]').click()
    page.locator('.th-sort[data-sort="memory"]').click()
    page.wait_for_url("**sort=memory**")
    assert "order=desc" in page.url
    page.wait_for_function("() => document.querySelector('#machine-table th[aria-sort]')"
                           "?.querySelector('[data-sort=memory]') != null")
    page.wait_for_timeout(400)
    shown = row_ids(page)
    ordered = [m["id"] for m in api(demo, "/api/machines?sort=memory&order=desc&limit=500")
               ["items"]]
    assert [i for i in ordered if i in set(shown)] == shown
    memory = {m["id"]: m["memory_bytes"] for m in api(demo, "/api/machines?limit=500")["items"]}
    sizes = [memory[i] for i in shown if i in memory]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]

    # Select the first row, shift-click the third: a range of three; bulk-add a tag.
    checks = page.locator("#machine-rows tr .row-check")
    picked = row_ids(page)[:3]
    checks.nth(0).click()
    checks.nth(2).click(modifiers=["Shift"])
    bulkbar = page.locator("#bulkbar")
    assert bulkbar.is_visible()
    assert bulkbar.locator('[data-field="selected"]').inner_text() == "3"
    page.locator("#bulk-tag").fill("rack-b7")
    bulkbar.get_by_role("button", name="Add tag").click()

    def tagged() -> set[str]:
        return {m["id"] for m in api(demo, "/api/machines?tag=rack-b7&limit=500")["items"]}

    deadline = time.monotonic() + 10
    while tagged() != set(picked) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tagged() == set(picked)

    # The tag filter learns the new tag and narrows the list to those three.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#tag-filter option')]"
        ".some(o => o.value === 'rack-b7')")
    page.locator("#tag-filter").select_option("rack-b7")
    page.wait_for_function(
        "n => document.querySelectorAll('#machine-rows tr').length === n", arg=3)
    assert set(row_ids(page)) == set(picked) and "tag=rack-b7" in page.url

    # Select all visible, bulk-remove: no machine keeps the tag.
    page.locator("#select-all").check()
    page.locator("#bulk-tag").fill("rack-b7")
    bulkbar.get_by_role("button", name="Remove tag").click()
    deadline = time.monotonic() + 10
    while tagged() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tagged() == set()
    assert not errors, errors


def test_installed_sign_in_expiry_and_sign_out(tmp_path: Path, browser: Any) -> None:
    """An installed server (``python -m dragonfly serve``): sign-in pages open no event stream,
    an API call that meets an ended session goes back to the sign-in page and then returns,
    and the account menu signs out."""
    from tests.test_auth_cli import start, stop

    password = "a panel password 7"
    server = start(tmp_path / "state")
    try:
        assert server.token, "serve printed no setup token"
        request = urllib.request.Request(
            server.url + "/api/setup", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"setup_token": server.token, "name": "admin",
                             "password": password}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        requests: list[str] = []
        errors: list[str] = []
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.on("request", lambda r: requests.append(urlsplit(r.url).path))
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(15_000)

        def sign_in() -> None:
            page.fill("#login-name", "admin")
            page.fill("#login-password", password)
            page.click("#login-submit")

        page.goto(server.url + "/machines")
        page.wait_for_url("**/login?next=/machines")
        assert page.locator("#live").is_hidden()
        page.wait_for_timeout(500)
        assert "/api/events" not in requests  # nothing to stream for someone signed out
        sign_in()
        page.wait_for_url("**/machines")
        page.locator('#live[data-status="live"]').wait_for()
        assert page.locator("#account-menu .menu-role").inner_text() == "admin"

        # The session ends behind the page's back (here: signed out from elsewhere).
        cookie = next(c for c in context.cookies() if c["name"] == "dragonfly_session")
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        logout = urllib.request.Request(
            server.url + "/api/auth/logout", method="POST",
            headers={"Cookie": f"dragonfly_session={cookie['value']}", "X-CSRF-Token": csrf})
        with urllib.request.urlopen(logout, timeout=10) as response:
            assert response.status == 200
        page.locator("#q").fill("ceph")  # the search asks the API, which answers 401
        page.wait_for_url("**/login?next=/machines?q=ceph")
        sign_in()
        page.wait_for_url("**/machines?q=ceph")
        assert page.locator("#q").input_value() == "ceph"

        # Sign out from the account menu.
        page.locator("#account-menu summary").click()
        page.locator("#menu-logout").click()
        page.wait_for_url("**/login")
        assert not [c for c in context.cookies() if c["name"] == "dragonfly_session"]
        context.close()
        assert not errors, errors
    finally:
        stop(server)
