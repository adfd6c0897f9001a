"""The JSON API under /api."""

from __future__ import annotations

from dragonfly.api.router import ApiRouter


def build_api_router() -> ApiRouter:
    from dragonfly.api import boot, machines, meta

    router = ApiRouter()
    for module in (meta, machines, boot):
        router.extend(module.api)
    return router
