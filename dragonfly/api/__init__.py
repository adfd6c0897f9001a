"""The JSON API under /api."""

from __future__ import annotations

from dragonfly.api.router import ApiRouter


def build_api_router() -> ApiRouter:
    from dragonfly.api import machines, meta

    router = ApiRouter()
    for module in (meta, machines):
        router.extend(module.api)
    return router
