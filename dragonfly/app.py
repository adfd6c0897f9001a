"""The aiohttp application over a context: middlewares, the declared API routes, access
control, the panel's pages, and the lifecycle of the context's services.

What the context holds (the server's store on disk and boot edge, or the demo's simulated
fleet) is decided in ``dragonfly.compose``; this module only builds the web application.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from dragonfly.agent import operator as agent_operator
from dragonfly.agent import routes as agent_routes
from dragonfly.api import locks, machines, meta
from dragonfly.auth.plugin import install_auth
from dragonfly.context import CTX, AppContext, Service
from dragonfly.edge import routes as edge_routes
from dragonfly.http.errors import error_middleware
from dragonfly.http.router import ApiRouter, Route
from dragonfly.images import routes as image_routes
from dragonfly.panel import add_panel_routes
from dragonfly.power import routes as power_routes
from dragonfly.simple import boot_routes as simple_boot_routes
from dragonfly.simple import routes as simple_routes
from dragonfly.templates import routes as template_routes
from dragonfly.timer import metrics
from dragonfly.timer import routes as timer_routes
from dragonfly.tinkerbell import routes as tinkerbell_routes
from dragonfly.workflow import routes as workflow_routes

log = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL when another waits (default 5 ms)


@web.middleware
async def server_timing(request: web.Request, handler: Any) -> web.StreamResponse:
    """Report handler time in a Server-Timing header (browser dev tools and bench/ read it)."""
    start = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    if not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1e3:.2f}"
    return response


def build_api_router() -> ApiRouter:
    """Every declared route but access control's (``install_auth`` adds those)."""
    router = ApiRouter()
    for module in (meta, machines, locks, agent_operator, edge_routes, agent_routes,
                   workflow_routes, image_routes, template_routes, power_routes, timer_routes,
                   metrics, simple_routes, simple_boot_routes, tinkerbell_routes):
        router.extend(module.api)
    return router


def create_app(ctx: AppContext) -> web.Application:
    # The boot HTTP counter sits outside the error edge: it counts the status sent.
    app = web.Application(middlewares=[server_timing, metrics.count_boot_http,
                                       error_middleware], client_max_size=8 << 20)
    app[CTX] = ctx
    metrics.install_metrics(app)
    ctx.router = build_api_router()
    install_auth(app, ctx)  # access control: its routes, pages and the enforcing middleware
    for route in ctx.router.routes:
        bound = _bind(route)
        app.router.add_route(route.method, route.path, bound)
        if route.head:
            app.router.add_route("HEAD", route.path, bound)
    add_panel_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app


def _bind(route: Route) -> Callable[[web.Request], Awaitable[Any]]:
    async def handler(request: web.Request) -> Any:
        return await route.handler(request)

    handler.__dragonfly_route__ = route  # type: ignore[attr-defined]
    handler.__name__ = route.handler.__name__
    return handler


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    await ctx.store.open()
    await ctx.fleet.start()
    ctx.events.start()
    started: list[Service] = []
    switch_interval = sys.getswitchinterval()
    try:
        for service in ctx.services:
            await service.start()
            started.append(service)
        # What the start made is long-lived (the fleet mirror, the services' state): move it
        # out of the collector's way, or every full collection walks 10,000 machines' worth
        # of objects in the middle of a request. No collection first: at start it finds next
        # to nothing and takes ~50 ms walking every imported module's objects. The command
        # line's entry (_entry) kept the collector off during the start.
        gc.freeze()
        gc.enable()
        # The loop answers a DHCP packet in tens of microseconds, but behind a worker thread
        # that holds the GIL (the store encoding a thousand boot timelines) it waits for the
        # interpreter's switch interval, 5 ms by default: the p99 of proxyDHCP answers.
        sys.setswitchinterval(SWITCH_INTERVAL)
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        gc.enable()
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        await ctx.events.stop()
        ctx.fleet.stop()
        gc.unfreeze()
        await ctx.store.close()
