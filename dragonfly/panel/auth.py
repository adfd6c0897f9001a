"""The access-control pages: sign-in, first-run wizard, account, tokens, people, audit,
security. Each renders its first state on the server; ``web/static/auth.js`` sends the forms
to the JSON API (with the page's CSRF token) and shows what comes back."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth import guard
from dragonfly.auth.audit import parse_time
from dragonfly.auth.middleware import auth_of, caller_of, local_next, page
from dragonfly.auth.policy import FRONT_PAGES
from dragonfly.auth.service import DEMO_ROLES
from dragonfly.auth.settings import SECURITY_KEYS
from dragonfly.auth.tokens import TOKEN_ROLES
from dragonfly.auth.users import ROLES
from dragonfly.config import DHCP_MODES, MODES
from dragonfly.context import ctx_of
from dragonfly.errors import InvalidInput
from dragonfly.panel.render import render


def _render(request: web.Request, template: str, title: str, **context: Any
            ) -> web.Response:
    # The panel's render() gives templates the caller as ``user`` and ``me``.
    return render(request, template, page_title=f"{title} · Dragonfly",
                  page_data={"page": template.removeprefix("auth/").removesuffix(".html")},
                  **context)


@page("public")
async def login_page(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    caller = caller_of(request)
    target = local_next(request.query.get("next"))
    if caller.via == "session":
        raise web.HTTPSeeOther(target)
    if not await auth.setup_complete():
        raise web.HTTPSeeOther("/setup")
    return _render(request, "auth/login.html", "Sign in", next=target,
                   demo_roles=list(DEMO_ROLES))


@page("public")
async def setup_page(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    if await auth.setup_complete():
        raise web.HTTPSeeOther("/login")
    values = await auth.settings.values()
    return _render(request, "auth/setup.html", "First-run setup", modes=list(MODES),
                   dhcp_modes=list(DHCP_MODES), values=values)


@page("user")
async def account_page(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    caller = caller_of(request)
    user = await auth.users.get(caller.name) if caller.via == "session" else None
    security = await auth.settings.security()
    return _render(request, "auth/account.html", "Your account",
                   account=user.public() if user else None,
                   welcome=request.query.get("welcome") == "1",
                   mfa_required=security.require_mfa,
                   forced=request.query.get("mfa") == "required")


@page("user")
async def tokens_page(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    caller = caller_of(request)
    tokens = await auth.tokens.list(None if caller.role == "admin" else caller.name)
    security = await auth.settings.security()
    roles = [r for r in TOKEN_ROLES if caller.can({"viewer": "read"}.get(r, r))]
    return _render(request, "auth/tokens.html", "API tokens",
                   tokens=[t.public() for t in tokens], token_roles=roles,
                   default_days=security.token_default_days, now=auth.now())


@page("admin")
async def users_page(request: web.Request) -> web.StreamResponse:
    users = await auth_of(request).users.all()
    return _render(request, "auth/users.html", "People", users=[u.public() for u in users],
                   roles=list(ROLES))


@page("admin")
async def audit_page(request: web.Request) -> web.StreamResponse:
    q = request.query
    filters = {k: q.get(k, "")[:200] for k in ("actor", "action", "machine", "outcome",
                                                 "since", "until")}
    error = ""
    entries: list[dict[str, object]] = []
    try:
        entries = await auth_of(request).audit_log.query(
            actor=filters["actor"], action=filters["action"], machine=filters["machine"],
            outcome=filters["outcome"] if filters["outcome"] in ("ok", "denied", "failed")
            else "", since=parse_time(filters["since"], "since"),
            until=parse_time(filters["until"], "until"), limit=500)
    except InvalidInput as exc:
        error = exc.message
    return _render(request, "auth/audit.html", "Audit log", entries=entries, filters=filters,
                   error=error)


@page("admin")
async def security_page(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    auth = auth_of(request)
    settings = [s for s in await auth.settings.describe() if s["key"] in SECURITY_KEYS]
    locks = await guard.all_locks(ctx.store)
    names = {}
    for machine_id in locks:
        try:
            names[machine_id] = ctx.fleet.get_machine(machine_id).name
        except Exception:
            names[machine_id] = machine_id
    return _render(request, "auth/security.html", "Security", settings=settings,
                   safety=await guard.safety_state(ctx.store), locks=list(locks.values()),
                   names=names, front_pages=list(FRONT_PAGES),
                   client_address=caller_of(request).address)


def add_auth_pages(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_get("/setup", setup_page)
    app.router.add_get("/account", account_page)
    app.router.add_get("/account/tokens", tokens_page)
    app.router.add_get("/admin/users", users_page)
    app.router.add_get("/admin/audit", audit_page)
    app.router.add_get("/admin/security", security_page)
