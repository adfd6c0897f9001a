"""Route × role matrix: every path and method of /api/openapi.json, called as anonymous, user,
admin and token callers, must be allowed or refused exactly as its declared access says, in
each front-page mode, and before first-run setup.

The expectation below is written from the documented rules, independently of
``dragonfly.auth.policy``: public < read < user < admin, "agent" routes need no login; an open
front page lets anonymous callers read; an admin front page admits admins only; lifecycle
actions need at least the role in ACTIONS; tokens cannot reach /api/account nor create tokens.
A refusal by the access rules is a 401/403 whose ``detail.refused`` is "access"; anything else
(200, 400, 404, 409, 423, a handler's own 401 for a wrong password) means the route was reached.

For the security-critical routes (CRITICAL) the expected level is not taken from the route's
declaration at all: it is written in this file, the declaration must match it, and the walk
expects it, so a route declared or enforced at the wrong level fails here.
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
ACTION_PATH = "/api/machines/{id}/actions/{action}"

# The security-critical routes and the access each must be enforced at, written down by hand.
# The walk below otherwise takes a route's level from the route's own OpenAPI declaration, so a
# route declared too low would pass it; with this table the declaration must say this, and the
# walk expects this level whatever the route declares. Lifecycle actions are one route whose
# level depends on the action: its entries are (method, path with the action filled in).
# "agent" routes are here too: declared anything else, they would escape the boot networks.
CRITICAL: dict[tuple[str, str], str] = {
    ("DELETE", "/api/machines/{id}"): "admin",
    ("POST", "/api/machines"): "admin",
    # people
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("GET", "/api/users/{name}"): "admin",
    ("PATCH", "/api/users/{name}"): "admin",
    ("DELETE", "/api/users/{name}"): "admin",
    ("POST", "/api/users/{name}/reset-mfa"): "admin",
    # API tokens (each caller sees and revokes their own; admins everyone's)
    ("GET", "/api/tokens"): "user",
    ("POST", "/api/tokens"): "user",
    ("DELETE", "/api/tokens/{id}"): "user",
    # one's own account
    ("GET", "/api/account"): "user",
    ("POST", "/api/account/password"): "user",
    ("POST", "/api/account/mfa/enroll"): "user",
    ("POST", "/api/account/mfa/confirm"): "user",
    ("POST", "/api/account/mfa/disable"): "user",
    ("POST", "/api/account/recovery-codes"): "user",
    # settings, safety mode, locks, audit
    ("GET", "/api/settings/security"): "admin",
    ("PATCH", "/api/settings/security"): "admin",
    ("GET", "/api/safety"): "read",
    ("PUT", "/api/safety"): "admin",
    ("GET", "/api/locks"): "read",
    ("GET", "/api/machines/{id}/lock"): "read",
    ("PUT", "/api/machines/{id}/lock"): "user",
    ("DELETE", "/api/machines/{id}/lock"): "admin",
    ("GET", "/api/audit"): "admin",
    # lifecycle actions
    **{("POST", ACTION_PATH.replace("{action}", a)): level for a, level in ACTIONS.items()},
    # boot and agent routes: governed by boot.allowed_networks, never public
    ("POST", "/api/agent/checkin"): "agent",
    ("POST", "/api/agent/heartbeat"): "agent",
    ("GET", "/boot/{mac}.ipxe"): "agent",
    ("GET", "/boot/discovery/vmlinuz"): "agent",
    ("GET", "/boot/discovery/initrd.img"): "agent",
    ("GET", "/boot/loaders/{loader}"): "agent",
    # deployments: the agent's side and the installed OS's phone-home (boot networks), the
    # operator's abort (admins)
    ("GET", "/api/agent/workflows/{id}/next"): "agent",
    ("POST", "/api/agent/workflows/{id}/actions/{index}"): "agent",
    ("GET", "/api/agent/workflows/{id}/seed/{name}"): "agent",
    ("POST", "/api/phone-home/{id}/{token}"): "agent",
    ("GET", "/api/tinkerbell/seed/{id}/{token}/{name}"): "agent",
    ("POST", "/api/tinkerbell/phone-home/{id}/{token}"): "agent",
    ("POST", "/api/workflows/{id}/abort"): "admin",
    # the image store: agents fetch images (boot networks); admins remove and re-verify
    ("GET", "/images/{digest}"): "agent",
    ("DELETE", "/api/images/{digest}"): "admin",
    ("POST", "/api/images/{digest}/verify"): "admin",
    # OS templates: anyone who may read lists them; admins change them and preview seeds
    ("GET", "/api/templates"): "read",
    ("GET", "/api/templates/{slug}"): "read",
    ("POST", "/api/templates"): "admin",
    ("PUT", "/api/templates/{slug}"): "admin",
    ("DELETE", "/api/templates/{slug}"): "admin",
    ("POST", "/api/templates/reload"): "admin",
    ("POST", "/api/templates/{slug}/preview"): "admin",
    # Simple mode's answer files: readers see the templates, users preview what a machine
    # would be served, admins override them
    ("GET", "/api/simple/answers/{slug}"): "read",
    ("PUT", "/api/simple/answers/{slug}/override"): "admin",
    ("DELETE", "/api/simple/answers/{slug}/override"): "admin",
    ("POST", "/api/simple/answers/{slug}/preview"): "user",
    ("GET", "/api/simple/installers"): "read",
    ("POST", "/api/simple/installers/{slug}/import"): "admin",  # reads a path on the server
    # what a machine's installer fetches and reports: boot networks, the token is the key
    ("GET", "/simple/answers/{mac}/{token}/{file}"): "agent",
    ("GET", "/simple/progress/{mac}/{token}/stage/{stage}"): "agent",
    ("POST", "/simple/progress/{mac}/{token}/stage/{stage}"): "agent",
    ("GET", "/simple/progress/{mac}/{token}/{event}"): "agent",
    ("POST", "/simple/progress/{mac}/{token}/{event}"): "agent",
    ("POST", "/simple/proxmox/answer"): "agent",  # Proxmox's installer: no login
    # power: reading state is for readers; BMC records (addresses, users) and every action
    # are for admins, actions guarded by safety mode and locks
    ("GET", "/api/power/drivers"): "read",
    ("GET", "/api/machines/{id}/power"): "read",
    ("POST", "/api/machines/{id}/power/{op}"): "admin",
    ("GET", "/api/machines/{id}/bmc"): "admin",
    ("PUT", "/api/machines/{id}/bmc"): "admin",
    ("DELETE", "/api/machines/{id}/bmc"): "admin",
    ("POST", "/api/machines/{id}/bmc/test"): "admin",
    ("POST", "/api/power/bulk/{op}"): "admin",
    ("GET", "/api/power"): "read",
    ("POST", "/api/power/adopt"): "admin",
    ("GET", "/api/power/adoptions"): "admin",
    ("GET", "/api/power/adoptions/{adoption}"): "admin",
    ("DELETE", "/api/power/adoptions/{adoption}"): "admin",
    ("GET", "/api/enclosures"): "admin",
    ("POST", "/api/enclosures"): "admin",
    ("GET", "/api/enclosures/{name}"): "admin",
    ("PUT", "/api/enclosures/{name}"): "admin",
    ("DELETE", "/api/enclosures/{name}"): "admin",
    ("GET", "/api/machines/{id}/enclosures"): "read",
    ("POST", "/api/enclosures/{name}/power/{op}"): "admin",
    # the deployment timer: figures for everyone who can read
    ("GET", "/api/deployments"): "read",
    ("GET", "/api/deployments/stats"): "read",
    # Prometheus metrics: open to the allowlist without a login (metrics.token, when set, is
    # checked by the handler: tests/test_metrics.py)
    ("GET", "/metrics"): "public",
}
# The least level any action's route may declare: the route's own floor.
ACTION_FLOOR = "user"


def critical_level(method: str, path: str, action: str) -> str | None:
    """The hand-written level of a call, or None for a route the table does not cover."""
    if path == ACTION_PATH:
        return CRITICAL.get((method, path.replace("{action}", action)))
    return CRITICAL.get((method, path))


def declaration_problems(doc: dict[str, Any]) -> list[str]:
    """Where the OpenAPI declarations disagree with CRITICAL (or a critical route is gone)."""
    declared = {(m.upper(), p): op["x-dragonfly-access"]
                for p, ops in doc["paths"].items() for m, op in ops.items()}
    problems = []
    for (method, path), level in CRITICAL.items():
        if path.startswith(ACTION_PATH.split("{action}")[0]):
            continue  # checked below, as the one action route
        got = declared.get((method, path))
        if got != level:
            problems.append(f"{method} {path} declares {got!r}, must be {level!r}")
    action_op = doc["paths"].get(ACTION_PATH, {}).get("post")
    if action_op is None:
        problems.append(f"POST {ACTION_PATH} is gone")
    else:
        if action_op["x-dragonfly-access"] != ACTION_FLOOR:
            problems.append(f"POST {ACTION_PATH} declares {action_op['x-dragonfly-access']!r}, "
                            f"must be {ACTION_FLOOR!r}")
        param = next(p for p in action_op["parameters"] if p["name"] == "action")
        if set(param["schema"]["enum"]) != set(ACTIONS):
            problems.append(f"actions {sorted(param['schema']['enum'])} differ from the table's "
                            f"{sorted(ACTIONS)}: give each new action its level here")
    return problems


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
        elif name == "id" and path.startswith(("/api/workflows/", "/api/agent/workflows/",
                                               "/api/phone-home/", "/api/tinkerbell/")):
            values[name] = [world.workflow]
        elif name == "index":
            values[name] = ["1"]
        elif name == "name" and "/seed/" in path:
            values[name] = ["meta-data"]
        elif name == "token":
            values[name] = ["0" * 32]
        elif name == "digest":
            values[name] = ["0" * 64]
        elif name == "slug":
            values[name] = ["debian-12"]
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
        elif name == "name" and path.startswith("/api/enclosures/"):
            values[name] = ["shelf-0"]
        elif name == "adoption":
            values[name] = ["0" * 12]
        elif name == "file" and path.startswith("/simple/answers/"):
            values[name] = ["preseed.cfg"]
        elif name == "stage":
            values[name] = ["partitioning"]
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
            declared = op["x-dragonfly-access"]
            streaming = "text/event-stream" in json.dumps(op["responses"])
            for url, action in concrete_paths(world, path, method.upper(), op):
                # The hand-written level where there is one: what is enforced must match it,
                # not merely what the route says of itself.
                access = critical_level(method.upper(), path, action) or declared
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


async def test_critical_routes_declare_the_expected_access(aiohttp_client: Any) -> None:
    client = await installed_client(aiohttp_client)
    doc = await (await client.get("/api/openapi.json")).json()
    problems = declaration_problems(doc)
    assert not problems, "\n".join(problems)


def test_the_critical_table_catches_a_misdeclared_route() -> None:
    """The check above fails for a route declared too low, a renamed one, or a new action."""
    def doc(**changes: str) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for (method, path), level in CRITICAL.items():
            if path.startswith("/api/machines/{id}/actions/"):
                continue
            paths.setdefault(path, {})[method.lower()] = {"x-dragonfly-access": level}
        paths[ACTION_PATH] = {"post": {"x-dragonfly-access": ACTION_FLOOR, "parameters": [
            {"name": "id"}, {"name": "action", "schema": {"enum": list(ACTIONS)}}]}}
        for key, level in changes.items():
            method, _, path = key.partition(" ")
            paths[path][method.lower()]["x-dragonfly-access"] = level
        return {"paths": paths}

    assert declaration_problems(doc()) == []
    assert declaration_problems(doc(**{"DELETE /api/users/{name}": "user"})) == [
        "DELETE /api/users/{name} declares 'user', must be 'admin'"]
    assert declaration_problems(doc(**{"GET /boot/{mac}.ipxe": "public"}))
    assert declaration_problems(doc(**{f"POST {ACTION_PATH}": "read"}))
    renamed = doc()
    renamed["paths"]["/api/audit/log"] = renamed["paths"].pop("/api/audit")
    assert declaration_problems(renamed) == ["GET /api/audit declares None, must be 'admin'"]
    more = doc()
    more["paths"][ACTION_PATH]["post"]["parameters"][1]["schema"]["enum"].append("wipe")
    assert declaration_problems(more)


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
         "/admin/audit", "/admin/security", "/enclosures", "/tinkerbell"]
PAGE_ACCESS = {"/": "read", "/machines": "read", "/tags": "read", "/docs": "public",
               "/account": "user", "/account/tokens": "user", "/admin/users": "admin",
               "/admin/audit": "admin", "/admin/security": "admin", "/enclosures": "admin",
               "/tinkerbell": "read"}


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
