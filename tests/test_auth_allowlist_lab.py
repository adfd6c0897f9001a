"""The IP allowlist and the boot networks against real client addresses: a network namespace
joined to the host by a veth pair (IPv4 and IPv6), the app listening on the host side, curl
running inside the namespace. Needs root; fails (never skips) without it unless
DRAGONFLY_SKIP_LAB=1."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dragonfly.app import create_app
from dragonfly.auth import accounts, firstrun
from dragonfly.auth.middleware import auth_of
from dragonfly.auth.policy import Caller
from tests.test_agent_checkin import report_body
from tests.test_auth_fixtures import ADMIN_PASSWORD, installed_context

pytestmark = pytest.mark.lab


def _require() -> None:
    if os.environ.get("DRAGONFLY_SKIP_LAB") == "1":
        pytest.skip("lab tests disabled by DRAGONFLY_SKIP_LAB=1")
    if os.geteuid() != 0:
        pytest.fail("the allowlist lab test needs root (network namespaces); set "
                    "DRAGONFLY_SKIP_LAB=1 to skip it")
    missing = [t for t in ("ip", "curl") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (apt-get install iproute2 curl)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@dataclass
class Link:
    ns: str
    host4: str
    client4: str
    host6: str
    client6: str


@pytest.fixture
def link() -> Iterator[Link]:
    _require()
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"dfauth{tag}", f"dfh{tag}", f"dfn{tag}"
    octet = int(tag[:2], 16) % 250 + 1
    # Canonical text (a group "0024" is written "24"), as the server reports addresses.
    net = Link(ns, f"10.251.{octet}.1", f"10.251.{octet}.2",
               str(ipaddress.ip_address(f"fd5a:{tag[:4]}::1")),
               str(ipaddress.ip_address(f"fd5a:{tag[:4]}::2")))
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{net.host4}/30", "dev", host_if)
        _ip("-6", "addr", "add", f"{net.host6}/64", "dev", host_if, "nodad")
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{net.client4}/30", "dev", ns_if)
        _ip("-n", ns, "-6", "addr", "add", f"{net.client6}/64", "dev", ns_if, "nodad")
        _ip("-n", ns, "link", "set", ns_if, "up")
        yield net
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


async def curl_in(ns: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    """GET ``url`` (POST ``body`` as JSON when given) from inside the namespace; (status,
    parsed body)."""
    post = [] if body is None else ["-H", "Content-Type: application/json", "--data-binary",
                                    json.dumps(body)]
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "curl", "-sS", "-m", "10", "-g", "-H",
        f"Authorization: Bearer {token}", *post, "-w", "\n%{http_code}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text, _, code = out.decode().rpartition("\n")
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    return int(code), data


@dataclass
class Served:
    ctx: Any
    url4: str
    url6: str
    token: str


@contextlib.asynccontextmanager
async def serve(link: Link) -> AsyncIterator[Served]:
    """The app on the host side of the link (IPv4 and IPv6), set up, with an admin token."""
    ctx = installed_context()
    app = create_app(ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    site4 = web.TCPSite(runner, link.host4, 0)
    site6 = web.TCPSite(runner, link.host6, 0)
    await site4.start()
    await site6.start()
    try:
        port4 = site4._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port6 = site6._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        auth = auth_of(ctx)
        token = await firstrun.issue_token(ctx.store, 0)
        await auth.complete_setup(
            {"setup_token": token, "name": "admin", "password": ADMIN_PASSWORD}, link.host4)
        secret, _ = await accounts.create_token(
            auth, Caller(name="admin", role="admin", via="cli"), "lab", None, 1)
        yield Served(ctx, f"http://{link.host4}:{port4}", f"http://[{link.host6}]:{port6}",
                     secret)
    finally:
        await runner.cleanup()


async def test_allowlist_refuses_a_namespace_client(link: Link) -> None:
    async with serve(link) as served:
        ctx, secret = served.ctx, served.token
        auth = auth_of(ctx)
        url4 = f"{served.url4}/api/machines?limit=1"
        url6 = f"{served.url6}/api/machines?limit=1"

        status, data = await curl_in(link.ns, url4, secret)
        assert status == 200 and data["total"] > 0  # no allowlist: everyone
        await auth.settings.set({"security.allowlist": [f"{link.host4}/32", "::1/128"]},
                                by="test")
        status, data = await curl_in(link.ns, url4, secret)
        assert status == 403, data
        assert data["detail"] == {"refused": "allowlist", "address": link.client4}
        assert link.client4 in data["error"]
        status, data = await curl_in(link.ns, url6, secret)
        assert status == 403 and data["detail"]["address"] == link.client6
        # Agent and boot endpoints are governed by the boot networks, not the allowlist.
        async with aiohttp.ClientSession() as http, http.get(
                f"{served.url4}/api/openapi.json") as response:
            doc = await response.json()
        agent_gets = [p for p, ops in doc["paths"].items()
                      if ops.get("get", {}).get("x-dragonfly-access") == "agent"
                      and "{" not in p]
        for path in agent_gets:
            status, data = await curl_in(link.ns, f"{served.url4}{path}", "")
            assert not (status == 403 and isinstance(data, dict)
                        and data.get("detail", {}).get("refused") == "allowlist"), path
        # Admit the namespace's IPv4 network: v4 passes, v6 still refused.
        await auth.settings.set({"security.allowlist": [f"{link.client4}/30"]}, by="test")
        status, data = await curl_in(link.ns, url4, secret)
        assert status == 200, data
        status, _ = await curl_in(link.ns, url6, secret)
        assert status == 403
        await auth.settings.set({"security.allowlist": [f"{link.client4}/30",
                                                        f"{link.client6[:-1]}/64"]}, by="test")
        status, _ = await curl_in(link.ns, url6, secret)
        assert status == 200



async def test_boot_networks_govern_namespace_check_ins(link: Link) -> None:
    """A check-in from an address outside boot.allowed_networks is refused and one inside
    succeeds, over IPv4 and IPv6, while the panel allowlist shuts the same client out of the
    panel: neither list governs the other's routes."""
    mac = "52:54:00:5a:00:01"
    body = report_body(boot_mac=mac, ip=link.client4,
                       nics=[{"name": "eth0", "mac": mac, "ip": link.client4}])
    async with serve(link) as served:
        auth = auth_of(served.ctx)
        await auth.settings.set({"security.allowlist": [f"{link.host4}/32", "::1/128"],
                                 "boot.allowed_networks": [f"{link.host4}/32"]}, by="test")
        for base, client in ((served.url4, link.client4), (served.url6, link.client6)):
            status, data = await curl_in(link.ns, f"{base}/api/agent/checkin", "", body)
            assert status == 403, data
            assert data["detail"] == {"refused": "boot_networks", "address": client}
            assert client in data["error"] and "boot.allowed_networks" in data["error"]
            status, data = await curl_in(link.ns, f"{base}/boot/{mac}.ipxe", "")
            assert status == 403 and data["detail"]["refused"] == "boot_networks"
        assert served.ctx.fleet.find_machine([mac]) is None

        # Admit the namespace's networks for booting: check-in, heartbeat and script pass,
        # although the panel allowlist still refuses this client.
        await auth.settings.set({"boot.allowed_networks": [
            f"{link.client4}/30", f"{link.client6[:-1]}/64"]}, by="test")
        status, answer = await curl_in(link.ns, f"{served.url4}/api/agent/checkin", "", body)
        assert status == 200, answer
        machine = served.ctx.fleet.find_machine([mac])
        assert machine is not None and machine.id == answer["machine_id"]
        assert machine.ip == link.client4  # the real peer address
        status, beat = await curl_in(link.ns, f"{served.url6}/api/agent/heartbeat", "",
                                     {"machine_id": machine.id, "mac": mac})
        assert status == 200 and beat["action"], beat
        status, script = await curl_in(link.ns, f"{served.url6}/boot/{mac}.ipxe", "")
        assert status == 200 and str(script).startswith("#!ipxe"), script
        for base, client in ((served.url4, link.client4), (served.url6, link.client6)):
            status, data = await curl_in(link.ns, f"{base}/api/machines?limit=1",
                                         served.token)
            assert status == 403 and data["detail"] == {"refused": "allowlist",
                                                        "address": client}
