"""The JSON API under /api."""

from __future__ import annotations

from dragonfly.api.router import ApiRouter


def build_api_router() -> ApiRouter:
    from dragonfly.agent import routes as agent_routes
    from dragonfly.api import agent, boot, machines, meta

    router = ApiRouter()
    for module in (meta, machines, agent, boot, agent_routes):
        router.extend(module.api)
    return router
