"""Composition root: builds the store, services and web application for a mode.

The demo is this same application with a simulated fleet and fake drivers plugged in.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from dragonfly import __version__
from dragonfly.api import build_api_router
from dragonfly.api.errors import error_middleware
from dragonfly.api.router import ApiRouter, Route
from dragonfly.app_key import CTX
from dragonfly.bootlog import BootLog
from dragonfly.config import Config
from dragonfly.events import EventHub
from dragonfly.fleet import Fleet
from dragonfly.model import Machine, Workflow
from dragonfly.store import Store

log = logging.getLogger(__name__)


class Service(Protocol):
    """A background part of the appliance (simulator, DHCP, TFTP ...), started with the app."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class WorkflowRunner(Protocol):
    """Executes deployments. The demo has a simulated one; the agent engine is another."""

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str) -> Workflow: ...


@dataclass
class AppContext:
    config: Config
    store: Store
    fleet: Fleet
    events: EventHub
    demo: bool
    services: list[Service] = field(default_factory=list)
    runner: WorkflowRunner | None = None
    bootlog: BootLog | None = None
    started_at: float = field(default_factory=time.time)
    version: str = __version__
    router: ApiRouter = field(default_factory=ApiRouter)
    extras: dict[str, Any] = field(default_factory=dict)



AppHook = Callable[[web.Application, AppContext], None]


@web.middleware
async def server_timing(request: web.Request, handler: Any) -> web.StreamResponse:
    """Report handler time in a Server-Timing header (browser dev tools and bench/ read it)."""
    start = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    if not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1e3:.2f}"
    return response


def create_app(ctx: AppContext, hooks: tuple[AppHook, ...] = ()) -> web.Application:
    app = web.Application(middlewares=[server_timing, error_middleware],
                          client_max_size=8 << 20)
    app[CTX] = ctx
    ctx.router = build_api_router()
    from dragonfly.auth import install_auth

    install_auth(app, ctx)  # access control: its routes, pages and the enforcing middleware
    for hook in hooks:
        hook(app, ctx)
    for route in ctx.router.routes:
        bound = _bind(route)
        app.router.add_route(route.method, route.path, bound)
        if route.head:
            app.router.add_route("HEAD", route.path, bound)
    from dragonfly.panel import add_panel_routes

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
    # The fleet mirror is long-lived: move it out of the collector's way, or every full
    # collection walks 10,000 machines' worth of objects in the middle of a request.
    gc.collect()
    gc.freeze()
    ctx.events.start()
    started: list[Service] = []
    try:
        for service in ctx.services:
            await service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        await ctx.events.stop()
        ctx.fleet.stop()
        gc.unfreeze()
        await ctx.store.close()
