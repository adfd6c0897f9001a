"""Shared helpers for the access-control tests (this module holds no tests itself).

An installed-mode app is the demo's populated fleet with ``demo`` switched off, so every route
has real machines, tags and workflows to act on while the auth rules of an installed server
apply. Requests carry their credentials explicitly (no client cookie jar), so one test can act
as several people at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from dragonfly.app import create_app
from dragonfly.auth import firstrun
from dragonfly.auth.middleware import auth_of
from dragonfly.auth.service import AuthService
from dragonfly.compose import demo_context
from dragonfly.config import Config
from dragonfly.context import AppContext

ADMIN_PASSWORD = "admin password 1"
USER_PASSWORD = "user password 22"


class Clock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Who:
    """Credentials of one caller: a session (cookie + CSRF token), a Bearer token, or none."""

    label: str
    sid: str = ""
    csrf: str = ""
    token: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self, csrf: bool = True) -> dict[str, str]:
        h = dict(self.extra)
        if self.sid:
            h["Cookie"] = f"dragonfly_session={self.sid}"
            if csrf and self.csrf:
                h["X-CSRF-Token"] = self.csrf
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h


ANON = Who("anonymous")
Client = TestClient[web.Request, web.Application]


def installed_context(**settings: Any) -> AppContext:
    ctx = demo_context(tick=3600)
    ctx.demo = False
    overrides = {"security.login_max_failures_per_address": 1000, **settings}
    ctx.config = Config.load(None, env={}, overrides=overrides)
    return ctx


async def installed_client(aiohttp_client: Any, **settings: Any) -> Client:
    client: Client = await aiohttp_client(create_app(installed_context(**settings)),
                                              cookie_jar=DummyCookieJar())
    return client


def auth(client: Client) -> AuthService:
    from dragonfly.context import CTX

    return auth_of(client.app[CTX])


def ctx_of_client(client: Client) -> AppContext:
    from dragonfly.context import CTX

    ctx: AppContext = client.app[CTX]
    return ctx


async def login(client: Client, name: str, password: str, code: str | None = None,
                headers: dict[str, str] | None = None) -> Who:
    body = {"name": name, "password": password}
    if code is not None:
        body["code"] = code
    response = await client.post("/api/auth/login", json=body, headers=headers or {})
    data = await response.json()
    assert response.status == 200, data
    return Who(name, sid=response.cookies["dragonfly_session"].value,
               csrf=data["user"]["csrf"])


async def setup_admin(client: Client) -> Who:
    token = await firstrun.issue_token(ctx_of_client(client).store, auth(client).now())
    response = await client.post("/api/setup", json={
        "setup_token": token, "name": "admin", "password": ADMIN_PASSWORD})
    data = await response.json()
    assert response.status == 200, data
    return Who("admin", sid=response.cookies["dragonfly_session"].value,
               csrf=data["user"]["csrf"])


async def add_user(client: Client, admin: Who, name: str, role: str = "user",
                   password: str = USER_PASSWORD) -> None:
    response = await client.post("/api/users", json={"name": name, "role": role,
                                                      "password": password},
                                 headers=admin.headers())
    assert response.status == 201, await response.text()


async def make_token(client: Client, who: Who, role: str | None = None,
                     expires_days: int | None = None) -> Who:
    body: dict[str, Any] = {"name": f"{who.label}-{role or 'own'}"}
    if role:
        body["role"] = role
    if expires_days is not None:
        body["expires_days"] = expires_days
    response = await client.post("/api/tokens", json=body, headers=who.headers())
    data = await response.json()
    assert response.status == 201, data
    return Who(f"token:{who.label}:{role}", token=data["token"], extra={"x-id": data["id"]})


def oathtool(secret: str, at: float) -> str:
    """The TOTP code from oathtool, an implementation independent of ours."""
    tool = shutil.which("oathtool")
    if tool is None:
        pytest.fail("oathtool is not installed (Debian package oathtool)")
    result = subprocess.run([tool, "--totp", "-b", secret, "-N", f"@{int(at)}"],
                            capture_output=True, text=True, timeout=10, check=True,
                            env={**os.environ, "TZ": "UTC"})
    return result.stdout.strip()
