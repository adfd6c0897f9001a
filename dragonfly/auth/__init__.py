"""Access control: accounts, roles, sessions, MFA, tokens, allowlist, safety mode, node locks,
audit. ``install_auth`` plugs it into the application; everything is enforced by one
middleware (``dragonfly.auth.middleware``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from dragonfly.auth.guard import guard_destructive, lock_of, safety_state
from dragonfly.auth.middleware import auth_middleware, auth_of, caller_of
from dragonfly.auth.policy import SAFETY_STATE_KEY, USER_KEY
from dragonfly.auth.service import AUTH_KEY, AuthService

if TYPE_CHECKING:
    from dragonfly.app import AppContext

__all__ = ["SAFETY_STATE_KEY", "USER_KEY", "AuthService", "auth_of", "caller_of",
           "guard_destructive", "install_auth", "lock_of", "safety_state"]


def install_auth(app: web.Application, ctx: AppContext) -> None:
    """Add the auth service, its API routes and pages, and the enforcing middleware.

    Call after ``ctx.router`` is built and before its routes are registered, and before the
    panel's pages (so /login and friends are matched first)."""
    from dragonfly.auth.api import api
    from dragonfly.auth.pages import add_auth_pages

    if AUTH_KEY not in ctx.extras:
        ctx.extras[AUTH_KEY] = AuthService(ctx.store, ctx.config, demo=ctx.demo)
    ctx.router.extend(api)
    app.middlewares.append(auth_middleware)
    add_auth_pages(app)
