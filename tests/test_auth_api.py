"""Access control through the HTTP API of an installed-mode app: first-run setup, sign-in,
sessions, CSRF, lock-out, TOTP (codes from oathtool), recovery codes, API tokens, people,
front-page modes, secrets never shown."""

from __future__ import annotations

import json
from typing import Any

from tests.test_auth_fixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    Clock,
    Who,
    add_user,
    auth,
    ctx_of_client,
    installed_client,
    login,
    make_token,
    oathtool,
    setup_admin,
)


async def body(response: Any) -> Any:
    return json.loads(await response.text())


# --- first run ------------------------------------------------------------------------------

async def test_setup_gate_then_wizard(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    # Before setup: everything but the setup endpoints, public reads and static is 403.
    for method, path in (("GET", "/api/machines"), ("GET", "/api/stats"),
                         ("POST", "/api/auth/login"), ("GET", "/api/users"),
                         ("GET", "/api/audit")):
        response = await client.request(method, path, json={})
        data = await body(response)
        assert response.status == 403, (method, path)
        assert "setup is not complete" in data["error"] and data["detail"]["refused"] == "setup"
    assert (await client.get("/api/version")).status == 200
    assert (await client.get("/static/auth.js")).status == 200
    page = await client.get("/machines", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/setup"
    assert (await client.get("/setup")).status == 200
    assert (await body(await client.get("/api/setup")))["complete"] is False

    from dragonfly.auth import firstrun
    token = await firstrun.issue_token(ctx_of_client(client).store, 0)
    bad = await client.post("/api/setup", json={"setup_token": "nope", "name": "admin",
                                                 "password": ADMIN_PASSWORD})
    assert bad.status == 403 and "setup token" in (await body(bad))["error"]
    weak = await client.post("/api/setup", json={"setup_token": token, "name": "admin",
                                                  "password": "short"})
    assert weak.status == 400
    ok = await client.post("/api/setup", json={
        "setup_token": token, "name": "Root", "password": ADMIN_PASSWORD,
        "mode": "native", "dhcp_mode": "off", "boot_interface": "eth1"})
    assert ok.status == 200, await ok.text()
    cookie = ok.cookies["dragonfly_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
    admin = Who("root", sid=cookie.value, csrf=(await body(ok))["user"]["csrf"])
    me = await body(await client.get("/api/account", headers=admin.headers()))
    assert me["name"] == "root" and me["role"] == "admin"
    # Boot settings from the wizard are stored; the token is spent; setup cannot run again.
    values = await auth(client).settings.values()
    assert values["boot.dhcp_mode"] == "off" and values["boot.interface"] == "eth1"
    again = await client.post("/api/setup", json={"setup_token": token, "name": "evil",
                                                   "password": ADMIN_PASSWORD})
    assert again.status == 409
    assert not await firstrun.token_matches(ctx_of_client(client).store, token)
    assert (await client.get("/api/machines", headers=admin.headers())).status == 200
    audit = await body(await client.get("/api/audit?action=setup", headers=admin.headers()))
    assert [e["action"] for e in audit] == ["setup.complete", "setup.failed"]


# --- sessions, CSRF -------------------------------------------------------------------------

async def test_login_logout_and_csrf(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    await add_user(client, admin, "bob")
    bob = await login(client, "bob", USER_PASSWORD)
    tags = {"tags": ["csrf-test"]}
    machine = (await body(await client.get("/api/machines", headers=bob.headers())))["items"][0]
    url = f"/api/machines/{machine['id']}/tags"
    # A cookie-authenticated change without the CSRF token fails, with a wrong one too.
    no_token = await client.put(url, json=tags, headers=bob.headers(csrf=False))
    assert no_token.status == 403 and (await body(no_token))["detail"]["refused"] == "csrf"
    wrong = await client.put(url, json=tags, headers={**bob.headers(csrf=False),
                                                      "X-CSRF-Token": admin.csrf})
    assert wrong.status == 403
    assert (await client.put(url, json=tags, headers=bob.headers())).status == 200
    # Another site's page cannot make changes even with the token.
    cross = await client.put(url, json=tags, headers={**bob.headers(),
                                                      "Origin": "https://evil.example"})
    assert cross.status == 403 and (await body(cross))["detail"]["refused"] == "origin"
    # A Bearer token needs no CSRF token: no cookie is involved.
    token = await make_token(client, bob)
    assert (await client.put(url, json=tags, headers=token.headers())).status == 200
    # Logout ends the session server-side.
    out = await client.post("/api/auth/logout", headers=bob.headers())
    assert out.status == 200
    after = await client.get("/api/machines", headers=bob.headers())
    assert after.status == 401
    assert (await client.get("/machines", headers=bob.headers(), allow_redirects=False)
            ).headers["Location"] == "/login?next=/machines"


async def test_session_idle_and_absolute_expiry(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client, **{
        "security.session_idle_minutes": 30, "security.session_max_hours": 2})
    clock = Clock()
    auth(client).clock = clock
    admin = await setup_admin(client)

    async def alive(who: Who) -> bool:
        status = (await client.get("/api/stats", headers=who.headers())).status
        assert status in (200, 401)
        return status == 200

    assert await alive(admin)
    clock.advance(29 * 60)
    assert await alive(admin)  # activity resets the idle timer...
    clock.advance(29 * 60)
    assert await alive(admin)
    clock.advance(31 * 60)
    assert not await alive(admin)  # ...but 31 idle minutes end it
    fresh = await login(client, "admin", ADMIN_PASSWORD)
    for _ in range(4):  # busy all along (100 min), yet the 2-hour limit holds
        clock.advance(25 * 60)
        assert await alive(fresh)
    clock.advance(25 * 60)
    assert not await alive(fresh)
    # The dead session's cookie is cleared on the way out.
    response = await client.get("/api/version", headers=fresh.headers())
    assert response.status == 200


async def test_lockout_per_user_and_per_address(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client, **{
        "security.login_max_failures": 3, "security.login_max_failures_per_address": 5,
        "security.login_lockout_minutes": 10})
    clock = Clock()
    auth(client).clock = clock
    admin = await setup_admin(client)
    await add_user(client, admin, "carol")

    async def attempt(name: str, password: str, ip: str = "") -> int:
        headers = {"X-Forwarded-For": ip} if ip else {}
        response = await client.post("/api/auth/login",
                                     json={"name": name, "password": password},
                                     headers=headers)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) > 0
        return response.status

    for _ in range(3):
        assert await attempt("carol", "wrong password!") == 401
    # Locked: even the right password is refused for now.
    assert await attempt("carol", USER_PASSWORD) == 429
    clock.advance(10 * 60 + 1)
    assert await attempt("carol", USER_PASSWORD) == 200
    # Per address: failures spread over many names still stop one address.
    for i in range(5):
        assert await attempt(f"nobody{i}", "wrong password!") == 401
    assert await attempt("admin", ADMIN_PASSWORD) == 429
    clock.advance(10 * 60 + 1)
    assert await attempt("admin", ADMIN_PASSWORD) == 200
    entries = await body(await client.get("/api/audit?action=login.locked",
                                          headers=admin.headers()))
    assert {e["actor"] for e in entries} == {"carol", "admin"}
    failed = await body(await client.get("/api/audit?action=login.failed",
                                         headers=admin.headers()))
    assert len(failed) == 8 and all(e["outcome"] == "failed" for e in failed)


async def test_lockout_by_address_behind_a_trusted_proxy(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client, **{
        "security.login_max_failures": 100, "security.login_max_failures_per_address": 2,
        "security.trusted_proxies": ["127.0.0.1/32"]})
    await setup_admin(client)
    for _ in range(2):
        r = await client.post("/api/auth/login", json={"name": "admin", "password": "nope!!"},
                              headers={"X-Forwarded-For": "198.51.100.7"})
        assert r.status == 401
    r = await client.post("/api/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD},
                          headers={"X-Forwarded-For": "198.51.100.7"})
    assert r.status == 429
    # Another client behind the same proxy is not affected.
    r = await client.post("/api/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD},
                          headers={"X-Forwarded-For": "198.51.100.8"})
    assert r.status == 200


async def test_session_cookie_is_secure_only_behind_tls(aiohttp_client: Any) -> None:
    """Over plain HTTP the cookie cannot be Secure (the browser would drop it); behind a
    trusted TLS-terminating proxy it is. An untrusted client cannot claim https."""
    client = await installed_client(aiohttp_client, **{
        "security.trusted_proxies": ["127.0.0.1/32"]})
    await setup_admin(client)
    creds = {"name": "admin", "password": ADMIN_PASSWORD}
    plain = await client.post("/api/auth/login", json=creds)
    assert plain.status == 200 and not plain.cookies["dragonfly_session"]["secure"]
    proxied = await client.post("/api/auth/login", json=creds,
                                headers={"X-Forwarded-Proto": "https"})
    assert proxied.status == 200 and proxied.cookies["dragonfly_session"]["secure"]
    untrusted = await installed_client(aiohttp_client)  # no trusted proxies configured
    await setup_admin(untrusted)
    claimed = await untrusted.post("/api/auth/login", json=creds,
                                   headers={"X-Forwarded-Proto": "https"})
    assert claimed.status == 200 and not claimed.cookies["dragonfly_session"]["secure"]


async def test_lockout_counts_an_ipv6_client_by_its_64(aiohttp_client: Any) -> None:
    """A host with a /64 cannot dodge the per-address limit by changing its interface id."""
    client = await installed_client(aiohttp_client, **{
        "security.login_max_failures": 100, "security.login_max_failures_per_address": 3,
        "security.trusted_proxies": ["127.0.0.1/32"]})
    await setup_admin(client)

    async def attempt(address: str, password: str = "nope!!") -> int:
        r = await client.post("/api/auth/login", json={"name": "admin", "password": password},
                              headers={"X-Forwarded-For": address})
        return r.status

    for i in range(3):
        assert await attempt(f"2001:db8:5:6::{i + 1:x}") == 401
    assert await attempt("2001:db8:5:6:aaaa:bbbb:cccc:dddd", ADMIN_PASSWORD) == 429
    assert await attempt("2001:db8:5:7::1", ADMIN_PASSWORD) == 200  # the next /64
    # The audit keeps each full address.
    admin = await login(client, "admin", ADMIN_PASSWORD)
    failed = await body(await client.get("/api/audit?action=login.failed",
                                         headers=admin.headers()))
    assert {e["address"] for e in failed} == {f"2001:db8:5:6::{i}" for i in (1, 2, 3)}


# --- TOTP and recovery codes ----------------------------------------------------------------

async def enroll(client: Client, who: Who, clock: Clock) -> tuple[str, list[str]]:
    started = await body(await client.post("/api/account/mfa/enroll", headers=who.headers()))
    secret = started["secret"]
    assert started["qr"].startswith("data:image/svg+xml") and secret in started["uri"]
    wrong = await client.post("/api/account/mfa/confirm", json={"code": "000000"},
                              headers=who.headers())
    assert wrong.status == 400
    confirmed = await client.post("/api/account/mfa/confirm",
                                  json={"code": oathtool(secret, clock())},
                                  headers=who.headers())
    assert confirmed.status == 200
    return secret, (await body(confirmed))["recovery_codes"]


async def test_totp_login_window_replay_and_recovery(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    clock = Clock(1_800_000_010.0)
    auth(client).clock = clock
    admin = await setup_admin(client)
    secret, codes = await enroll(client, admin, clock)
    account = await body(await client.get("/api/account", headers=admin.headers()))
    assert account["mfa"] and account["recovery_codes_left"] == 10
    assert secret not in json.dumps(account)

    async def try_login(code: str | None) -> tuple[int, Any]:
        payload = {"name": "admin", "password": ADMIN_PASSWORD}
        if code is not None:
            payload["code"] = code
        response = await client.post("/api/auth/login", json=payload)
        return response.status, await body(response)

    status, data = await try_login(None)
    assert status == 401 and data["detail"]["mfa_required"]
    # The enrollment code's step is spent; the next step (+1 window) works once.
    clock.advance(1)
    status, _ = await try_login(oathtool(secret, clock()))
    assert status == 401  # same step as enrollment: a replay
    code = oathtool(secret, clock() + 30)
    assert (await try_login(code))[0] == 200
    assert (await try_login(code))[0] == 401  # replayed
    clock.advance(90)
    assert (await try_login(oathtool(secret, clock() - 30)))[0] == 200  # -1 window
    assert (await try_login(oathtool(secret, clock() - 60)))[0] == 401  # out of window
    assert (await try_login(oathtool(secret, clock() + 60)))[0] == 401
    # A recovery code works once.
    assert (await try_login(codes[0]))[0] == 200
    assert (await try_login(codes[0]))[0] == 401
    assert (await try_login(codes[1].upper()))[0] == 200
    account = await body(await client.get("/api/account", headers=admin.headers()))
    assert account["recovery_codes_left"] == 8
    used = await body(await client.get("/api/audit?action=mfa.recovery_used",
                                       headers=admin.headers()))
    assert len(used) == 2
    # Secrets appear nowhere in the audit log.
    log_text = json.dumps(await body(await client.get("/api/audit", headers=admin.headers())))
    assert secret not in log_text and codes[2] not in log_text and ADMIN_PASSWORD not in log_text


async def test_admin_resets_mfa_and_require_mfa_gate(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    clock = Clock()
    auth(client).clock = clock
    admin = await setup_admin(client)
    await add_user(client, admin, "dave")
    dave = await login(client, "dave", USER_PASSWORD)
    # Require MFA for everyone: a session without it reaches only its account page.
    r = await client.patch("/api/settings/security", json={"security.require_mfa": True},
                           headers=admin.headers())
    assert r.status == 200
    assert (await client.get("/api/users", headers=admin.headers())).status == 403
    clock.advance(30)
    await enroll(client, admin, clock)
    assert (await client.get("/api/users", headers=admin.headers())).status == 200
    blocked = await client.get("/api/machines", headers=dave.headers())
    assert blocked.status == 403 and (await body(blocked))["detail"]["refused"] == "mfa"
    page = await client.get("/machines", headers=dave.headers(), allow_redirects=False)
    assert page.headers["Location"] == "/account?mfa=required"
    secret, _ = await enroll(client, dave, clock)
    dave.label = "dave"
    # Enrolled: the same session goes on (the user dict now says mfa).
    assert (await client.get("/api/machines", headers=dave.headers())).status == 200
    off = await client.post("/api/account/mfa/disable", headers=dave.headers(),
                            json={"password": USER_PASSWORD, "code": oathtool(secret, clock())})
    assert off.status == 403  # required for everyone
    # Lost phone: the admin resets it, dave's sessions end, password alone works again.
    r = await client.post("/api/users/dave/reset-mfa", headers=admin.headers())
    assert r.status == 200 and (await body(r))["mfa"] is False
    assert (await client.get("/api/account", headers=dave.headers())).status == 401
    await login(client, "dave", USER_PASSWORD)
    # Admin-only: a user cannot reset anyone's MFA.
    dave2 = await login(client, "dave", USER_PASSWORD)
    r = await client.post("/api/users/admin/reset-mfa", headers=dave2.headers())
    assert r.status == 403


# --- tokens ---------------------------------------------------------------------------------

async def test_tokens_roles_expiry_revocation(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    clock = Clock()
    auth(client).clock = clock
    admin = await setup_admin(client)
    await add_user(client, admin, "erin")
    erin = await login(client, "erin", USER_PASSWORD)
    # A token carries its creator's role or less.
    too_much = await client.post("/api/tokens", json={"name": "x", "role": "admin"},
                                 headers=erin.headers())
    assert too_much.status == 400 and "role or less" in (await body(too_much))["error"]
    user_token = await make_token(client, erin, expires_days=1)
    viewer_token = await make_token(client, erin, role="viewer")
    admin_token = await make_token(client, admin)
    assert (await client.get("/api/users", headers=user_token.headers())).status == 403
    assert (await client.get("/api/users", headers=admin_token.headers())).status == 200
    assert (await client.get("/api/machines", headers=viewer_token.headers())).status == 200
    machine = (await body(await client.get("/api/machines", headers=admin.headers()))
               )["items"][0]["id"]
    lock = await client.put(f"/api/machines/{machine}/lock", json={},
                            headers=viewer_token.headers())
    assert lock.status == 403
    # Listing shows no secrets; users see their own tokens only.
    listed = await body(await client.get("/api/tokens", headers=erin.headers()))
    assert {t["user"] for t in listed} == {"erin"} and len(listed) == 2
    assert all("hash" not in t and "token" not in t for t in listed)
    everyone = await body(await client.get("/api/tokens", headers=admin.headers()))
    assert len(everyone) == 3
    # Tokens cannot mint tokens nor touch the account.
    r = await client.post("/api/tokens", json={"name": "child"}, headers=admin_token.headers())
    assert r.status == 403
    assert (await client.get("/api/account", headers=admin_token.headers())).status == 403
    # Expiry.
    clock.advance(86400 + 1)
    expired = await client.get("/api/machines", headers=user_token.headers())
    assert expired.status == 401 and "expired" in (await body(expired))["error"]
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/api/machines", headers=erin.headers())).status == 401  # idle
    erin = await login(client, "erin", USER_PASSWORD)
    admin = await login(client, "admin", ADMIN_PASSWORD)
    # Revocation: a user cannot revoke someone else's token, the owner can.
    other = await client.delete(f"/api/tokens/{admin_token.extra['x-id']}",
                                headers=erin.headers())
    assert other.status == 404
    r = await client.delete(f"/api/tokens/{viewer_token.extra['x-id']}", headers=erin.headers())
    assert r.status == 200
    assert (await client.get("/api/machines", headers=viewer_token.headers())).status == 401
    # Demoting the creator curbs their tokens at once; removing them kills them.
    r = await client.patch("/api/users/admin", json={"role": "user"}, headers=admin.headers())
    assert r.status == 409  # the last admin stays an admin
    await add_user(client, admin, "frank", role="admin")
    frank = await login(client, "frank", USER_PASSWORD)
    frank_token = await make_token(client, frank)
    assert (await client.get("/api/users", headers=frank_token.headers())).status == 200
    r = await client.patch("/api/users/frank", json={"role": "user"}, headers=admin.headers())
    assert r.status == 200
    assert (await client.get("/api/users", headers=frank_token.headers())).status == 403
    assert (await client.get("/api/users", headers=frank.headers())).status == 403
    r = await client.delete("/api/users/frank", headers=admin.headers())
    assert r.status == 200
    assert (await client.get("/api/machines", headers=frank_token.headers())).status == 401
    assert (await client.get("/api/machines", headers=frank.headers())).status == 401
    bad = await client.get("/api/machines", headers={"Authorization": "Bearer dft_junk"})
    assert bad.status == 401
    basic = await client.get("/api/machines", headers={"Authorization": "Basic eDp5"})
    assert basic.status == 401


# --- people ---------------------------------------------------------------------------------

async def test_people_admin_and_no_secrets(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    await add_user(client, admin, "gina")
    dup = await client.post("/api/users", json={"name": "GINA", "password": USER_PASSWORD},
                            headers=admin.headers())
    assert dup.status == 409
    for name in ("", "a b", "-x", "x" * 70, "ünï"):
        r = await client.post("/api/users", json={"name": name, "password": USER_PASSWORD},
                              headers=admin.headers())
        assert r.status == 400, name
    users = await body(await client.get("/api/users", headers=admin.headers()))
    assert {u["name"] for u in users} == {"admin", "gina"}
    text = json.dumps(users)
    assert "scrypt" not in text and "password" not in text and "totp" not in text
    gina = await login(client, "gina", USER_PASSWORD)
    # An admin resets gina's password: her sessions end.
    r = await client.patch("/api/users/gina", json={"password": "brand new pass 3"},
                           headers=admin.headers())
    assert r.status == 200
    assert (await client.get("/api/machines", headers=gina.headers())).status == 401
    gina = await login(client, "gina", "brand new pass 3")
    # Gina changes her own password: her current session survives, others end.
    other = await login(client, "gina", "brand new pass 3")
    wrong = await client.post("/api/account/password",
                              json={"current": "nope", "new": "another pass 44"},
                              headers=gina.headers())
    assert wrong.status == 401
    r = await client.post("/api/account/password",
                          json={"current": "brand new pass 3", "new": "another pass 44"},
                          headers=gina.headers())
    assert r.status == 200
    assert (await client.get("/api/machines", headers=gina.headers())).status == 200
    assert (await client.get("/api/machines", headers=other.headers())).status == 401
    assert (await client.delete("/api/users/admin", headers=admin.headers())).status == 409
    # The audit trail has the people changes, and never a password.
    entries = await body(await client.get("/api/audit?action=user", headers=admin.headers()))
    assert {e["action"] for e in entries} >= {"user.create", "user.password"}
    assert "brand new pass 3" not in json.dumps(entries)


# --- front page modes -----------------------------------------------------------------------

async def test_front_page_open_and_admin(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    await add_user(client, admin, "hank")
    hank = await login(client, "hank", USER_PASSWORD)
    assert (await client.get("/api/machines")).status == 401
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/login?next=/"
    r = await client.patch("/api/settings/security", json={"security.front_page": "open"},
                           headers=admin.headers())
    assert r.status == 200
    assert (await client.get("/api/machines")).status == 200
    assert (await client.get("/")).status == 200
    machine = (await body(await client.get("/api/machines")))["items"][0]["id"]
    assert (await client.put(f"/api/machines/{machine}/tags", json={"tags": []})).status == 401
    assert (await client.get("/api/users")).status == 401
    r = await client.patch("/api/settings/security", json={"security.front_page": "admin"},
                           headers=admin.headers())
    assert r.status == 200
    refused = await client.get("/api/machines", headers=hank.headers())
    assert refused.status == 403 and "administrators only" in (await body(refused))["error"]
    assert (await client.get("/api/machines")).status == 401
    assert (await client.get("/api/machines", headers=admin.headers())).status == 200
    page = await client.get("/machines", headers=hank.headers())
    assert page.status == 403 and "administrators only" in await page.text()
    bad = await client.patch("/api/settings/security", json={"security.front_page": "maybe"},
                             headers=admin.headers())
    assert bad.status == 400


async def test_allowlist_refuses_self_lockout(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    r = await client.patch("/api/settings/security",
                           json={"security.allowlist": ["192.0.2.0/24"]},
                           headers=admin.headers())
    assert r.status == 400 and "lock you out" in (await body(r))["error"]
    r = await client.patch("/api/settings/security", json={"security.allowlist": ["bogus"]},
                           headers=admin.headers())
    assert r.status == 400
    r = await client.patch("/api/settings/security",
                           json={"security.allowlist": ["127.0.0.0/8", "::1/128"]},
                           headers=admin.headers())
    assert r.status == 200
    settings = {s["key"]: s for s in await body(r)}
    assert settings["security.allowlist"]["value"] == ["127.0.0.0/8", "::1/128"]
    assert settings["security.allowlist"]["source"] == "panel"
    assert (await client.get("/api/machines", headers=admin.headers())).status == 200


# --- demo -----------------------------------------------------------------------------------

async def test_demo_role_switcher_is_enforced_by_the_same_rules(aiohttp_client: Any) -> None:
    from dragonfly.app import create_app
    from dragonfly.compose import demo_context

    client = await aiohttp_client(create_app(demo_context(tick=3600)))
    installed = await installed_client(aiohttp_client)
    assert (await installed.post("/api/demo/role", json={"role": "user"})).status == 403
    session = await body(await client.get("/api/auth/session"))
    assert session["user"]["role"] == "admin" and session["demo"]
    machines = (await body(await client.get("/api/machines?state=installed")))["items"]
    target = machines[0]["id"]
    r = await client.post("/api/demo/role", json={"role": "user"})
    assert r.status == 200 and "dragonfly_demo_role" in r.cookies
    session = await body(await client.get("/api/auth/session"))
    user = session["user"]
    assert user["role"] == "user" and user["csrf"] and not user["can"]["actions"]["reimage"]
    csrf = {"X-CSRF-Token": user["csrf"]}
    denied = await client.post(f"/api/machines/{target}/actions/reimage", json={},
                               headers=csrf)
    assert denied.status == 403 and (await body(denied))["detail"]["role"] == "user"
    no_csrf = await client.put(f"/api/machines/{target}/tags", json={"tags": ["x"]})
    assert no_csrf.status == 403
    assert (await client.put(f"/api/machines/{target}/tags", json={"tags": ["x"]},
                             headers=csrf)).status == 200
    await client.post("/api/demo/role", json={"role": "viewer"})
    assert (await client.get("/api/machines")).status == 200
    viewer = await body(await client.get("/api/auth/session"))
    assert viewer["user"]["role"] == "viewer" and not viewer["user"]["authenticated"]
    tags = await client.put(f"/api/machines/{target}/tags", json={"tags": []},
                            headers={"X-CSRF-Token": viewer["user"]["csrf"]})
    assert tags.status == 401
    bogus = await client.post("/api/demo/role", json={"role": "root"})
    assert bogus.status == 400
    login_page = await client.get("/login")
    assert login_page.status == 200 and "anonymous viewer" in await login_page.text()
    # Nothing of this was stored: the role lives in the browser's cookie only.
    store = ctx_of_client(client).store
    assert await store.count("session") == 0 and await store.count("user") == 0
