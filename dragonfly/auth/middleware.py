"""The one enforcement point: every request passes here before its handler.

In order: classify the route (declared API access, page access, static, agent); agent and boot
routes check the boot networks and first-run setup and stop there; every other route checks
the IP allowlist, the Origin of unsafe requests, first-run setup, who is calling (Bearer token,
session cookie, demo role, or nobody), the access level against the caller's role and the
front-page mode, token-only limits, required MFA, CSRF for cookie-authenticated changes, and
the molly guard for destructive machine actions. API callers get JSON errors (401, 403, 423);
pages redirect to the sign-in or setup page or show a refusal.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from dragonfly.auth.allowlist import allowed, parse_address
from dragonfly.auth.guard import destructive_request, guard_destructive, safety_state
from dragonfly.auth.policy import (
    CALLER_KEY,
    CLEAR_SESSION_KEY,
    CSRF_EXEMPT,
    MFA_ENROLL_PATHS,
    SAFETY_STATE_KEY,
    Caller,
    decide,
    effective_access,
    effective_caller,
    session_only,
    set_caller,
)
from dragonfly.auth.service import AuthService
from dragonfly.auth.sessions import COOKIE
from dragonfly.context import ctx_of
from dragonfly.errors import Locked
from dragonfly.http.errors import error_response, json_response
from dragonfly.http.router import Route, route_of
from dragonfly.panel.render import render

log = logging.getLogger(__name__)

PAGE_ACCESS_ATTR = "__dragonfly_page_access__"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SETUP_PATHS = frozenset({"/setup", "/api/setup"})
CSRF_HEADER = "X-CSRF-Token"
_SETUP_MESSAGE = ("first-run setup is not complete: open /setup and create the administrator "
                  "account with the setup token printed by `dragonfly serve`")
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(access: str) -> Callable[[PageHandler], PageHandler]:
    """Declare the access level of an HTML page handler (pages are not API routes)."""
    def mark(handler: PageHandler) -> PageHandler:
        setattr(handler, PAGE_ACCESS_ATTR, access)
        return handler
    return mark


def auth_of(request_or_ctx: Any) -> AuthService:
    ctx = ctx_of(request_or_ctx) if isinstance(request_or_ctx, web.Request) else request_or_ctx
    service = ctx.auth
    if service is None:
        raise RuntimeError("the application was built without access control")
    return service


def caller_of(request: web.Request) -> Caller:
    return request.get(CALLER_KEY) or Caller()


def classify(request: web.Request, route: Route | None) -> str:
    """The access level of this request: a route's declared one, else by page and path."""
    if route is not None:
        return route.access
    path = request.path
    if path.startswith("/static/") or path == "/favicon.ico":
        return "static"
    if path.startswith("/boot/"):
        return "agent"  # undeclared boot files: governed by the boot networks, like agents
    handler = getattr(request.match_info.route, "handler", None)
    declared = getattr(handler, PAGE_ACCESS_ATTR, None)
    if isinstance(declared, str):
        return declared
    if path == "/docs" or path.startswith("/docs/"):
        return "public"
    return "read"


def _is_api(request: web.Request) -> bool:
    """A declared route (the JSON API, boot files, images) or any /api or /boot path."""
    return route_of(request) is not None or request.path.startswith(("/api/", "/boot/"))


def _cross_site(request: web.Request) -> bool:
    """An unsafe request sent by a page of another origin (browsers say so)."""
    if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if not origin:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != request.host.lower()


def local_next(value: str | None) -> str:
    """A redirect target only within this site (no //host or scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _deny(request: web.Request, status: int, message: str, *, redirect: str = "",
          plain: bool = False, headers: dict[str, str] | None = None,
          detail: dict[str, Any] | None = None) -> web.StreamResponse:
    """Refuse: JSON for the API (``detail.refused`` names the rule), a redirect or a page for
    a browser."""
    if _is_api(request) or request.method not in SAFE_METHODS:
        return error_response(status, message, detail, headers)
    if redirect:
        raise web.HTTPSeeOther(redirect)
    if plain:
        return web.Response(status=status, content_type="text/html", text=(
            "<!doctype html><meta charset=utf-8><title>Refused</title>"
            f"<p>{message}</p>"))
    return render(request, "auth/denied.html", status=status, message=message,
                  page_title="Not allowed · Dragonfly")


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    ctx = ctx_of(request)
    auth = auth_of(ctx)
    route = route_of(request)
    access = classify(request, route)
    security = await auth.settings.security()
    address = auth.address_of(request, security)
    if access == "agent":
        # Machines booting and checking in: governed by the boot networks alone, never by
        # logins or the panel's allowlist (and the boot networks open nothing else); but
        # nothing boots before the operator finished setup.
        if not allowed(security.boot_networks, parse_address(address)):
            _note_boot_refusal(request, address)
            return _deny(request, 403, f"your address {address or '(unknown)'} is not in "
                         "this Dragonfly's boot networks (boot.allowed_networks)",
                         detail={"refused": "boot_networks", "address": address})
        if not await auth.setup_complete():
            return _deny(request, 403, _SETUP_MESSAGE, detail={"refused": "setup"})
        set_caller(request, Caller(via="agent", address=address))
        return await _call(request, handler, route, None)

    if not allowed(security.allowlist, parse_address(address)):
        return _deny(request, 403, f"your address {address or '(unknown)'} is not in this "
                     "Dragonfly's allowlist (security.allowlist)", plain=True,
                     detail={"refused": "allowlist", "address": address})
    unsafe = request.method not in SAFE_METHODS
    if unsafe and _cross_site(request):
        return _deny(request, 403, "cross-site request refused: changes must come from this "
                     "Dragonfly's own pages", detail={"refused": "origin"})
    if not await auth.setup_complete() and not (
            access == "static" or request.path in SETUP_PATHS
            or (access == "public" and not unsafe)):
        return _deny(request, 403, _SETUP_MESSAGE, redirect="/setup",
                     detail={"refused": "setup"})
    if access == "static":
        set_caller(request, Caller(address=address))
        return await _call(request, handler, route, None)

    if route is not None and route.own_credentials:
        caller, problem = Caller(), ""  # the handler checks the header itself
    else:
        caller, problem = await auth.identify(request, security)
    caller.address = address
    front_page = "open" if auth.demo else security.front_page
    set_caller(request, effective_caller(caller, front_page))
    if problem:
        return _deny(request, 401, problem, detail={"refused": "credentials"},
                     headers={"WWW-Authenticate": 'Bearer realm="dragonfly"'})

    needed = effective_access(route, access, request)
    denial = decide(caller, needed, front_page)
    if denial is not None:
        if unsafe and caller.authenticated:
            await auth.audit("access.denied", caller, outcome="denied",
                             detail={"method": request.method, "path": request.path})
        target = quote(request.path_qs, safe="/")  # the whole path and query, one parameter
        return _deny(request, denial.status, denial.message,
                     redirect=f"/login?next={target}" if denial.status == 401 else "",
                     detail={"refused": "access", "access": needed, "role": caller.role,
                             "front_page": front_page})
    path = route.path if route is not None else request.path
    if caller.via == "token" and session_only(request.method, path):
        return _deny(request, 403, "API tokens cannot do this: sign in to the panel",
                     detail={"refused": "access", "access": "session", "role": caller.role})
    if (security.require_mfa and caller.via == "session" and not caller.mfa
            and needed != "public" and not request.path.startswith(MFA_ENROLL_PATHS)):
        return _deny(request, 403, "two-factor authentication is required here: enroll it on "
                     "your account page first", redirect="/account?mfa=required",
                     detail={"refused": "mfa"})
    if unsafe and caller.csrf and (request.method, path) not in CSRF_EXEMPT \
            and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), caller.csrf):
        return _deny(request, 403, f"missing or wrong CSRF token: send the {CSRF_HEADER} "
                     "header your page was given (API scripts use a Bearer token instead)",
                     detail={"refused": "csrf"})
    if route is None and not unsafe and not _is_api(request):
        request[SAFETY_STATE_KEY] = await safety_state(ctx.store)  # for the pages' banner
    destructive = destructive_request(route, request) if route is not None else None
    if destructive is not None:
        machine_id, what = destructive
        try:
            await guard_destructive(ctx, machine_id, what)
        except Locked:
            await auth.audit(f"machine.{what.replace(' ', '.')}", caller, machine=machine_id,
                             outcome="denied", detail={"blocked_by": "guard"})
            raise
    return await _call(request, handler, route, destructive)


def _note_boot_refusal(request: web.Request, address: str) -> None:
    """Log a refused boot request, and tell the boot doctor when DHCP already tied the address
    to a MAC (never a MAC the refused client names itself: outsiders write no timelines)."""
    log.debug("boot request %s %s from %s refused: outside boot.allowed_networks",
             request.method, request.path, address or "(unknown)")
    bootlog = ctx_of(request).bootlog
    if bootlog is not None and address:
        bootlog.record_by_ip(address, "boot_refused", {"ip": address, "path": request.path})


async def _call(request: web.Request, handler: Any, route: Route | None,
                destructive: tuple[str, str] | None) -> web.StreamResponse:
    result = await handler(request)
    if destructive is not None:
        machine_id, what = destructive
        await auth_of(request).audit(f"machine.{what.replace(' ', '.')}", caller_of(request),
                                     machine=machine_id)
    if isinstance(result, web.StreamResponse):
        response = result
    else:  # plain data: JSON here already, so the headers below can be added
        response = json_response(result, route.status if route is not None else 200)
    if not response.prepared:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.get(CLEAR_SESSION_KEY):
            response.del_cookie(COOKIE, path="/")
    return response

