"""Route × role matrix: every path and method of /api/openapi.json, called as anonymous, user,
admin and token callers, must be allowed or refused exactly as its declared access says, in
each front-page mode, and before first-run setup.

The expectation below is written from the documented rules, independently of
``dragonfly.auth.policy``: public < read < user < admin, "agent" routes need no login; an open
front page lets anonymous callers read; an admin front page admits admins only; lifecycle
actions need at least the role in ACTIONS; tokens cannot reach /api/account nor create tokens.
A refusal by the access rules is a 401/403 whose ``detail.refused`` is "access"; anything else
(200, 400, 404, 409, 423, a handler's own 401 for a wrong password) means the route was reached.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.test_auth_fixtures import (
    ANON,
    USER_PASSWORD,
    Client,
    Who,
    add_user,
    auth,
    ctx_of_client,
    installed_client,
    login,
    make_token,
    setup_admin,
)

RANK = {"anonymous": 0, "viewer": 1, "user": 2, "admin": 3}
LEVEL = {"public": 0, "read": 1, "user": 2, "admin": 3}
ACTIONS = {"adopt": "user", "deploy": "admin", "reimage": "admin", "release": "admin",
           "maintenance": "admin", "resume": "admin"}


@dataclass
class Caller:
    label: str
    kind: str  # anonymous | session | token
    role: str
    who: Who
    password: str = ""


@dataclass
class World:
    client: Client
    callers: list[Caller]
    machine: str
    doomed_machine: str
    workflow: str
    tag: str
    victim: str
    token_id: str
    mac: str


async def build_world(client: Client, front_page: str) -> World:
    admin = await setup_admin(client)
    await add_user(client, admin, "matrix-user")
    await add_user(client, admin, "victim")
    user = await login(client, "matrix-user", USER_PASSWORD)
    callers = [
        Caller("anonymous", "anonymous", "anonymous", ANON),
        Caller("user", "session", "user", user, USER_PASSWORD),
        Caller("admin", "session", "admin", admin, "admin password 1"),
        Caller("user-token", "token", "user", await make_token(client, user)),
        Caller("viewer-token", "token", "viewer", await make_token(client, user, "viewer")),
        Caller("admin-token", "token", "admin", await make_token(client, admin)),
    ]
    throwaway = await make_token(client, admin, "viewer")
    machines = (await (await client.get("/api/machines?limit=100&sort=name",
                                        headers=admin.headers())).json())["items"]
    workflows = await (await client.get("/api/workflows", headers=admin.headers())).json()
    tags = await (await client.get("/api/tags", headers=admin.headers())).json()
    if front_page != "login":
        r = await client.patch("/api/settings/security",
                               json={"security.front_page": front_page},
                               headers=admin.headers())
        assert r.status == 200
    return World(client, callers, machines[0]["id"], machines[-1]["id"], workflows[0]["id"],
                 tags[0]["name"], "victim", throwaway.extra["x-id"], machines[0]["mac"])


def concrete_paths(world: World, path: str, method: str, op: dict[str, Any]
                   ) -> list[tuple[str, str]]:
    """(url, action) for each way to fill the path's parameters with real values."""
    values: dict[str, list[str]] = {}
    for name in re.findall(r"{([^}]+)}", path):
        param = next(p for p in op.get("parameters", []) if p["name"] == name)
        enum = param.get("schema", {}).get("enum")
        if enum:
            values[name] = list(enum)
        elif name == "id" and path.startswith("/api/machines/"):
            values[name] = [world.doomed_machine if method == "DELETE"
                            and path == "/api/machines/{id}" else world.machine]
        elif name == "id" and path.startswith("/api/workflows/"):
            values[name] = [world.workflow]
        elif name == "id" and path.startswith("/api/tokens/"):
            values[name] = [world.token_id]
        elif name == "tag":
            values[name] = [world.tag]
        elif name == "name" and path.startswith("/api/users/"):
            values[name] = [world.victim]
        elif name == "mac":
            values[name] = [world.mac]
        elif name == "loader":
            values[name] = ["undionly.kpxe"]
        else:
            pytest.fail(f"the role matrix cannot fill {{{name}}} in {method} {path}: teach "
                        "concrete_paths() a real value for it")
    urls = [(path, "")]
    for name, options in values.items():
        urls = [(url.replace(f"{{{name}}}", value), value if name == "action" else action)
                for url, action in urls for value in options]
    return urls


def expected_allowed(access: str, action: str, caller: Caller, front_page: str, method: str,
                     path: str) -> bool:
    if access == "agent":
        return True
    level = LEVEL[access]
    if action:
        level = max(level, LEVEL[ACTIONS[action]])
    if level == 0:
        return True
    role = caller.role
    if role == "anonymous" and front_page == "open":
        role = "viewer"
    if front_page == "admin" and role != "admin":
        return False
    if RANK[role] < level:
        return False
    return not (caller.kind == "token" and (
        path.startswith("/api/account") or (method, path) == ("POST", "/api/tokens")))


async def call(client: Client, method: str, url: str, who: Who, has_body: bool,
               streaming: bool) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": who.headers()}
    if has_body:
        kwargs["json"] = {}
    async with client.request(method, url, **kwargs) as response:
        if streaming and response.status == 200:
            return 200, None  # an event stream: the headers are the answer
        text = await response.text()
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return response.status, data


def refused_by_access(status: int, data: Any) -> bool:
    return status in (401, 403) and isinstance(data, dict) and \
        isinstance(data.get("detail"), dict) and data["detail"].get("refused") == "access"


async def walk(world: World, front_page: str) -> list[str]:
    client = world.client
    doc = await (await client.get("/api/openapi.json")).json()
    problems: list[str] = []
    calls = 0
    for path, ops in sorted(doc["paths"].items()):
        for method, op in sorted(ops.items()):
            access = op["x-dragonfly-access"]
            streaming = "text/event-stream" in json.dumps(op["responses"])
            for url, action in concrete_paths(world, path, method.upper(), op):
                for caller in world.callers:
                    status, data = await call(client, method.upper(), url, caller.who,
                                              "requestBody" in op, streaming)
                    calls += 1
                    want = expected_allowed(access, action, caller, front_page,
                                            method.upper(), path)
                    refused = refused_by_access(status, data)
                    # 503: a capability this test instance lacks (no boot services), past the
                    # access check all the same.
                    if (status >= 500 and status != 503) or refused == want:
                        problems.append(f"{front_page}: {method.upper()} {url} as "
                                        f"{caller.label}: expected "
                                        f"{'allowed' if want else 'refused'}, got {status} "
                                        f"{str(data)[:160]}")
                    if path == "/api/auth/logout" and caller.kind == "session":
                        caller.who = await login(client, caller.who.label, caller.password)
    assert calls > 100
    return problems


async def test_openapi_lists_every_api_route(aiohttp_client: Any) -> None:
    """The matrix walks the OpenAPI document: it must hold every declared route, and every
    route the app serves under /api must be declared (so none escapes the matrix)."""
    client = await installed_client(aiohttp_client)
    ctx = ctx_of_client(client)
    doc = await (await client.get("/api/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    declared = {(r.method, r.path) for r in ctx.router.routes}
    served = {(route.method, route.resource.canonical)
              for route in client.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api/")
              and route.method != "HEAD"}
    assert documented == declared
    assert served <= declared


@pytest.mark.parametrize("front_page", ["login", "open", "admin"])
async def test_route_role_matrix(aiohttp_client: Any, front_page: str) -> None:
    client = await installed_client(aiohttp_client)
    world = await build_world(client, front_page)
    problems = await walk(world, front_page)
    assert not problems, "\n".join(problems)


async def test_matrix_before_setup(aiohttp_client: Any) -> None:
    """Until setup completes every route answers 403 (setup), except the setup endpoints,
    public reads and static assets."""
    client = await installed_client(aiohttp_client)
    doc = await (await client.get("/api/openapi.json")).json()
    problems = []
    world = World(client, [], "m", "m", "w", "t", "v", "x", "00:00:00:00:00:00")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for url, _ in concrete_paths(world, path, method.upper(), op):
                status, data = await call(client, method.upper(), url, ANON,
                                          "requestBody" in op, False)
                open_before = path == "/api/setup" or (
                    op["x-dragonfly-access"] == "public" and method.upper() == "GET")
                detail = data.get("detail") if isinstance(data, dict) else None
                gated = status == 403 and isinstance(detail, dict) \
                    and detail.get("refused") == "setup"
                if gated == open_before or status >= 500:
                    problems.append(f"{method.upper()} {url}: {status} {str(data)[:120]}")
    assert not problems, "\n".join(problems)
    assert not await auth(client).setup_complete()


PAGES = ["/", "/machines", "/tags", "/docs", "/account", "/account/tokens", "/admin/users",
         "/admin/audit", "/admin/security"]
PAGE_ACCESS = {"/": "read", "/machines": "read", "/tags": "read", "/docs": "public",
               "/account": "user", "/account/tokens": "user", "/admin/users": "admin",
               "/admin/audit": "admin", "/admin/security": "admin"}


async def test_pages_by_role(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    world = await build_world(client, "login")
    for caller in world.callers:
        if caller.kind == "token":
            continue
        for page in [*PAGES, f"/machines/{world.machine}"]:
            access = PAGE_ACCESS.get(page, "read")
            response = await client.get(page, headers=caller.who.headers(),
                                        allow_redirects=False)
            want = expected_allowed(access, "", caller, "login", "GET", page)
            if want:
                assert response.status == 200, (page, caller.label, response.status)
            elif caller.kind == "anonymous":
                assert response.status == 303, (page, caller.label)
                assert response.headers["Location"].startswith("/login?next=")
            else:
                assert response.status == 403, (page, caller.label, response.status)
                assert "Not allowed" in await response.text()
