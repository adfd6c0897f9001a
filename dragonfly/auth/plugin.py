"""Plugging access control into the application."""

from __future__ import annotations

from aiohttp import web

from dragonfly.auth.api import api
from dragonfly.auth.middleware import auth_middleware
from dragonfly.auth.service import AuthService
from dragonfly.context import AppContext
from dragonfly.panel.auth import add_auth_pages


def install_auth(app: web.Application, ctx: AppContext) -> None:
    """Add the auth service, its API routes and pages, and the enforcing middleware.

    Call after ``ctx.router`` is built and before its routes are registered, and before the
    panel's pages (so /login and friends are matched first)."""
    if ctx.auth is None:
        ctx.auth = AuthService(ctx.store, ctx.config, demo=ctx.demo)
    ctx.router.extend(api)
    app.middlewares.append(auth_middleware)
    add_auth_pages(app)
