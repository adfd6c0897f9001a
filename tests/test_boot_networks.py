"""The boot networks (``boot.allowed_networks``): who may boot and check in, enforced in the one
middleware for every agent and boot route, separate from the panel's allowlist both ways, and
changed, shown and audited where the other security settings are.

The test client always connects from 127.0.0.1; other client addresses come in through
X-Forwarded-For from a trusted proxy, the same path a real deployment behind a proxy takes.
(tests/test_auth_allowlist_lab.py does the same with real addresses in a network namespace.)
"""

from __future__ import annotations

from typing import Any

import pytest

from dragonfly.auth.allowlist import allowed, parse_address, parse_networks
from dragonfly.auth.settings import RUNTIME_KEYS, SECURITY_KEYS
from dragonfly.boot.log import diagnose
from dragonfly.config import SETTINGS_BY_KEY, Config
from dragonfly.edge.service import BOOT_KEYS
from dragonfly.edge.settings import boot_networks
from dragonfly.errors import InvalidInput
from tests.test_agent_checkin import report_body
from tests.test_auth_fixtures import (
    Client,
    Who,
    auth,
    ctx_of_client,
    installed_client,
    make_token,
    setup_admin,
)

MAC = "52:54:00:12:34:56"
INSIDE, OUTSIDE = "192.0.2.10", "198.51.100.7"
# Every agent and boot route, with a body where it takes one. Undeclared /boot/ paths are
# classified as boot routes too, so one is here.
BOOT_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/agent/checkin", report_body()),
    ("POST", "/api/agent/heartbeat", {"machine_id": "nope"}),
    ("GET", f"/boot/{MAC}.ipxe", None),
    ("GET", f"/boot/discovery/vmlinuz?mac={MAC}", None),
    ("GET", f"/boot/discovery/initrd.img?mac={MAC}", None),
    ("GET", "/boot/loaders/undionly.kpxe", None),
    ("GET", "/boot/not-declared-anywhere", None),
]


def via(address: str, who: Who | None = None) -> dict[str, str]:
    """Headers of a request that the trusted proxy at 127.0.0.1 forwards for ``address``."""
    return {**(who.headers() if who else {}), "X-Forwarded-For": address}


async def call(client: Client, method: str, path: str, body: Any, headers: dict[str, str]
               ) -> tuple[int, Any]:
    async with client.request(method, path, json=body, headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.read()


def refused(status: int, data: Any, rule: str) -> bool:
    return status == 403 and isinstance(data, dict) and \
        isinstance(data.get("detail"), dict) and data["detail"].get("refused") == rule


async def proxied_client(aiohttp_client: Any) -> Client:
    return await installed_client(aiohttp_client,
                                  **{"security.trusted_proxies": ["127.0.0.1/32"]})


# --- the setting ----------------------------------------------------------------------------

def test_setting_is_declared_validated_and_runtime_changeable() -> None:
    setting = SETTINGS_BY_KEY["boot.allowed_networks"]
    assert setting.type is list and setting.default == []  # empty: any address, as before
    assert "security.allowlist" in setting.help and "Empty" in setting.help
    assert "boot.allowed_networks" in SECURITY_KEYS and "boot.allowed_networks" in RUNTIME_KEYS
    assert "boot.allowed_networks" in BOOT_KEYS  # a change rebuilds DHCP and TFTP
    config = Config.load(None, env={"DRAGONFLY_BOOT_ALLOWED_NETWORKS":
                                    "10.0.0.0/24, fd00:1::/64"})
    assert config["boot.allowed_networks"] == ["10.0.0.0/24", "fd00:1::/64"]
    with pytest.raises(InvalidInput, match="boot.allowed_networks.*not a CIDR"):
        Config.load(None, env={}, overrides={"boot.allowed_networks": ["10.0.0.0/33"]})
    assert [str(n) for n in boot_networks(config.as_dict())] == ["10.0.0.0/24", "fd00:1::/64"]


def test_the_check_itself() -> None:
    nets = parse_networks(["192.0.2.0/24", "2001:db8:5::/48"])
    assert allowed(nets, parse_address(INSIDE))
    assert allowed(nets, parse_address(f"::ffff:{INSIDE}"))  # dual-stack socket view
    assert allowed(nets, parse_address("2001:db8:5:1::9"))
    assert not allowed(nets, parse_address(OUTSIDE))
    assert not allowed(nets, parse_address("2001:db8:6::1"))
    assert not allowed(nets, None)  # no address at all is never inside
    assert allowed([], parse_address(OUTSIDE))  # empty: any address


def test_boot_doctor_explains_a_refusal() -> None:
    steps = [{"at": 1.0, "last_at": 1.0, "step": "boot_refused", "count": 1,
              "label": "Refused (boot networks)",
              "detail": {"ip": OUTSIDE, "path": f"/boot/{MAC}.ipxe"}}]
    reason = diagnose(steps, 2.0)
    assert reason is not None and OUTSIDE in reason and "boot.allowed_networks" in reason


# --- enforcement ----------------------------------------------------------------------------

async def test_empty_boot_networks_admit_any_address(aiohttp_client: Any) -> None:
    client = await proxied_client(aiohttp_client)
    await setup_admin(client)
    for method, path, body in BOOT_REQUESTS:
        status, data = await call(client, method, path, body, via(OUTSIDE))
        assert not refused(status, data, "boot_networks"), (path, status, data)
        assert status < 500 or status == 503, (path, status, data)


async def test_outside_address_is_refused_on_every_boot_route(aiohttp_client: Any) -> None:
    client = await proxied_client(aiohttp_client)
    await setup_admin(client)
    await auth(client).settings.set({"boot.allowed_networks": ["192.0.2.0/24"]}, by="test")
    for method, path, body in BOOT_REQUESTS:
        status, data = await call(client, method, path, body, via(OUTSIDE))
        assert refused(status, data, "boot_networks"), (path, status, data)
        assert data["detail"]["address"] == OUTSIDE
        assert OUTSIDE in data["error"] and "boot.allowed_networks" in data["error"]
        status, data = await call(client, method, path, body, via(INSIDE))
        assert not refused(status, data, "boot_networks"), (path, status, data)
    # No forwarded header: the peer itself (127.0.0.1) is outside too.
    status, data = await call(client, "POST", "/api/agent/checkin", report_body(), {})
    assert refused(status, data, "boot_networks") and data["detail"]["address"] == "127.0.0.1"


async def test_inside_check_in_creates_the_machine(aiohttp_client: Any) -> None:
    client = await proxied_client(aiohttp_client)
    await setup_admin(client)
    await auth(client).settings.set({"boot.allowed_networks": ["192.0.2.0/24"]}, by="test")
    body = report_body(boot_mac="52:54:00:aa:bb:01",
                       nics=[{"name": "eth0", "mac": "52:54:00:aa:bb:01"}])
    status, data = await call(client, "POST", "/api/agent/checkin", body, via(OUTSIDE))
    assert refused(status, data, "boot_networks")
    fleet = ctx_of_client(client).fleet
    assert fleet.find_machine(["52:54:00:aa:bb:01"]) is None  # nothing was created
    status, data = await call(client, "POST", "/api/agent/checkin", body, via(INSIDE))
    assert status == 200, data
    assert fleet.find_machine(["52:54:00:aa:bb:01"]) is not None


async def test_boot_networks_and_allowlist_are_separate(aiohttp_client: Any) -> None:
    """The panel allowlist never blocks boot routes; the boot networks never open the panel."""
    client = await proxied_client(aiohttp_client)
    admin = await setup_admin(client)
    token = await make_token(client, admin)
    await auth(client).settings.set({"security.allowlist": [f"{OUTSIDE}/32", "127.0.0.1/32"],
                                     "boot.allowed_networks": ["192.0.2.0/24"]}, by="test")
    # The boot address: every boot route works, yet the panel and API stay shut.
    for method, path, body in BOOT_REQUESTS:
        status, data = await call(client, method, path, body, via(INSIDE))
        assert not refused(status, data, "boot_networks"), (path, status, data)
        assert not refused(status, data, "allowlist"), (path, status, data)
    for path in ("/api/machines", "/api/settings/security", "/api/openapi.json"):
        status, data = await call(client, "GET", path, None, via(INSIDE, token))
        assert refused(status, data, "allowlist"), (path, status, data)
    page = await client.get("/machines", headers=via(INSIDE, admin), allow_redirects=False)
    assert page.status == 403
    # The panel address: the API works, but it may not boot.
    status, _ = await call(client, "GET", "/api/machines", None, via(OUTSIDE, token))
    assert status == 200
    for method, path, body in BOOT_REQUESTS:
        status, data = await call(client, method, path, body, via(OUTSIDE, token))
        assert refused(status, data, "boot_networks"), (path, status, data)


async def test_outside_address_learns_nothing_before_setup(aiohttp_client: Any) -> None:
    client = await proxied_client(aiohttp_client)
    await auth(client).settings.set({"boot.allowed_networks": ["192.0.2.0/24"]}, by="test")
    status, data = await call(client, "GET", f"/boot/{MAC}.ipxe", None, via(OUTSIDE))
    assert refused(status, data, "boot_networks")
    status, data = await call(client, "GET", f"/boot/{MAC}.ipxe", None, via(INSIDE))
    assert refused(status, data, "setup")


async def test_refusal_reaches_the_boot_doctor_only_for_a_known_address(aiohttp_client: Any
                                                                      ) -> None:
    client = await proxied_client(aiohttp_client)
    await setup_admin(client)
    await auth(client).settings.set({"boot.allowed_networks": ["192.0.2.0/24"]}, by="test")
    bootlog = ctx_of_client(client).bootlog
    assert bootlog is not None
    # An address no DHCP exchange tied to a MAC: nothing is written, whatever MAC it names.
    await call(client, "GET", "/boot/52:54:00:66:66:66.ipxe", None, via(OUTSIDE))
    assert bootlog.timeline("52:54:00:66:66:66")["steps"] == []
    bootlog.learn_ip("198.51.100.8", "52:54:00:77:77:77")
    await call(client, "GET", "/boot/52:54:00:77:77:77.ipxe", None, via("198.51.100.8"))
    timeline = bootlog.timeline("52:54:00:77:77:77")
    assert timeline["steps"][-1]["step"] == "boot_refused"
    assert "boot.allowed_networks" in timeline["diagnosis"]


# --- where it is changed ----------------------------------------------------------------------

async def test_security_api_changes_and_audits_the_boot_networks(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    r = await client.get("/api/settings/security", headers=admin.headers())
    listed = {s["key"]: s for s in await r.json()}
    assert listed["boot.allowed_networks"]["value"] == []
    assert listed["boot.allowed_networks"]["source"] == "config"
    bad = await client.patch("/api/settings/security",
                             json={"boot.allowed_networks": ["10.0.0.0/33"]},
                             headers=admin.headers())
    assert bad.status == 400 and "not a CIDR" in (await bad.json())["error"]
    other = await client.patch("/api/settings/security", json={"boot.dhcp_mode": "off"},
                               headers=admin.headers())
    assert other.status == 400
    # Boot networks that exclude the admin's own address do not lock the admin out.
    r = await client.patch("/api/settings/security",
                           json={"boot.allowed_networks": ["10.20.0.0/16", "fd00:20::/64"]},
                           headers=admin.headers())
    assert r.status == 200, await r.text()
    listed = {s["key"]: s for s in await r.json()}
    assert listed["boot.allowed_networks"]["value"] == ["10.20.0.0/16", "fd00:20::/64"]
    assert listed["boot.allowed_networks"]["source"] == "panel"
    assert (await client.get("/api/machines", headers=admin.headers())).status == 200
    status, data = await call(client, "GET", f"/boot/{MAC}.ipxe", None, {})
    assert refused(status, data, "boot_networks")
    entries = await (await client.get("/api/audit?action=settings",
                                      headers=admin.headers())).json()
    change = entries[0]
    assert change["action"] == "settings.change" and change["actor"] == "admin"
    assert change["detail"]["changes"] == {
        "boot.allowed_networks": ["10.20.0.0/16", "fd00:20::/64"]}
    # The Security page shows it in its form.
    page = await client.get("/admin/security", headers=admin.headers())
    text = await page.text()
    assert 'name="boot.allowed_networks"' in text and "fd00:20::/64" in text


async def test_boot_stack_hands_the_networks_to_dhcp_and_tftp(tmp_path: Any) -> None:
    """Built, never started (binding UDP 67 here would answer the host's real network)."""
    from dragonfly.boot.loaders import Loaders
    from dragonfly.boot.log import BootLog
    from dragonfly.domain.fleet import Fleet
    from dragonfly.edge.service import build_boot_stack
    from dragonfly.store import SqliteStore

    store = SqliteStore(":memory:")
    await store.open()
    try:
        def stack(networks: list[str]) -> Any:
            config = Config.load(None, env={}, overrides={
                "server.state_dir": str(tmp_path), "boot.dhcp_mode": "auto",
                "boot.interface": "lo", "boot.address": "192.0.2.1",
                "boot.allowed_networks": networks})
            return build_boot_stack(config.as_dict(), store, Fleet(store), BootLog(store),
                                    Loaders(tmp_path))

        open_stack = stack([])
        assert open_stack.tftp.allow_client is None
        assert open_stack.dhcp.responder.relay_networks == []  # every relay answered
        closed = stack(["10.0.0.0/24", "fd00::/64"])
        assert closed.tftp.allow_client("10.0.0.9") and closed.tftp.allow_client("fd00::9")
        assert not closed.tftp.allow_client("10.0.1.9")
        relays = closed.dhcp.responder.relay_networks
        assert relays == parse_networks(["10.0.0.0/24", "fd00::/64"])
        assert allowed(relays, parse_address("10.0.0.1"))
        assert not allowed(relays, parse_address("10.0.1.1"))
    finally:
        await store.close()
