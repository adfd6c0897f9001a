"""First run to two-factor sign-in in a real browser (Debian's Chromium via Playwright) against
``python -m dragonfly serve``: the wizard with the setup token the server printed, TOTP
enrollment reading the secret off the page, sign-out, and sign-in with password plus a code
computed by oathtool. Fails, never skips, when Chromium or Playwright is missing, unless
DRAGONFLY_SKIP_BROWSER=1."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS
from tests.test_auth_cli import Server, start, stop
from tests.test_auth_fixtures import oathtool

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-default-apps",
                 "--disable-extensions", "--no-default-browser-check"]
PASSWORD = "a browser password 9"


def _playwright() -> Any:
    missing = []
    sync_api: Any = None
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
    if not Path(CHROMIUM).exists():
        missing.append(f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    if shutil.which("oathtool") is None:
        missing.append("oathtool (apt-get install oathtool)")
    if missing:
        message = "the TOTP browser test needs " + " and ".join(missing)
        if os.environ.get("DRAGONFLY_SKIP_BROWSER") == "1":
            pytest.skip(message)
        pytest.fail(message + "; set DRAGONFLY_SKIP_BROWSER=1 to skip it")
    return sync_api


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path / "state")
    try:
        yield running
    finally:
        stop(running)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"auth-{name}.png"), full_page=True)


def test_first_run_wizard_totp_enrollment_and_login(server: Server) -> None:
    sync_api = _playwright()
    assert server.token, "serve printed no setup token:\n" + "".join(server.output)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # Any page leads to the wizard until setup is done.
            page.goto(server.url + "/machines")
            page.wait_for_url("**/setup")
            page.fill("#setup-token", "wrong-token")
            page.fill("#setup-name", "admin")
            page.fill("#setup-password", PASSWORD)
            page.fill("#setup-password2", PASSWORD + "x")
            page.click("#setup-submit")
            error = page.locator("#setup-form [data-error]")
            error.wait_for(state="visible")
            assert "differ" in error.inner_text()
            page.fill("#setup-password2", PASSWORD)
            page.click("#setup-submit")
            page.wait_for_function(
                "document.querySelector('#setup-form [data-error]').textContent"
                ".includes('setup token')")
            page.fill("#setup-token", server.token)
            page.select_option("#setup-dhcp", "off")
            shot(page, "setup")
            page.click("#setup-submit")
            page.wait_for_url("**/account?welcome=1")

            # Enroll TOTP: read the secret shown on the page, answer with oathtool's code.
            page.click("#mfa-start-button")
            page.locator("#mfa-enroll").wait_for(state="visible")
            secret = page.inner_text("#totp-secret").strip()
            assert len(secret) == 32 and secret.isalnum()
            assert page.get_attribute("#mfa-enroll img", "src").startswith(
                "data:image/svg+xml")
            shot(page, "enroll")
            page.fill("#mfa-code", oathtool(secret, time.time()))
            page.click("#mfa-confirm-button")
            page.locator("#recovery-codes li").first.wait_for()
            assert page.locator("#recovery-codes li").count() == 10
            page.reload()
            assert page.inner_text("#mfa-state").strip() == "on"

            # Sign out, then in: password, then the second factor.
            page.click("#logout")
            page.wait_for_url("**/login")
            page.goto(server.url + "/machines")
            page.wait_for_url("**/login?next=/machines")
            page.fill("#login-name", "admin")
            page.fill("#login-password", PASSWORD)
            page.click("#login-submit")
            page.locator("#login-code").wait_for(state="visible")
            page.fill("#login-code", "000000")
            page.click("#login-submit")
            login_error = page.locator("#login-form [data-error]")
            login_error.wait_for(state="visible")
            assert "code" in login_error.inner_text()
            # The enrollment spent the current step; the next one is inside the ±1 window.
            page.fill("#login-code", oathtool(secret, time.time() + 30))
            page.click("#login-submit")
            page.wait_for_url("**/machines")
            assert page.locator("body").inner_text().strip()
            shot(page, "signed-in")
            assert not errors, errors
        finally:
            browser.close()
