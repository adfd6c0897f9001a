"""The application key for the shared context, importable without the whole app module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from dragonfly.app import AppContext

CTX: web.AppKey[AppContext] = web.AppKey("dragonfly")


def ctx_of(request: web.Request) -> AppContext:
    return request.app[CTX]
