"""Version, dashboard stats, the OpenAPI document and the live event stream."""

from __future__ import annotations

import platform
import time
from typing import Any

from aiohttp import web

from dragonfly import __version__
from dragonfly.context import ctx_of
from dragonfly.http.openapi import openapi_document
from dragonfly.http.router import ApiRouter

api = ApiRouter()


@api.get("/api/version", "Version and mode of this instance", "meta", access="public")
async def version(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {"version": __version__, "demo": ctx.demo, "mode": ctx.config["server.mode"],
            "python": platform.python_version(), "uptime_seconds": time.time() - ctx.started_at}


@api.get("/api/stats", "Counts by state, active deployments, recently seen machines",
         "meta")
async def stats(request: web.Request) -> dict[str, Any]:
    return ctx_of(request).fleet.stats()


@api.get("/api/openapi.json", "This document", "meta", access="public")
async def openapi(request: web.Request) -> dict[str, Any]:
    return openapi_document(ctx_of(request).router.routes)


@api.get("/api/events", "Live changes as server-sent events (machine, workflow, history)",
         "meta", streaming=True)
async def events(request: web.Request) -> web.StreamResponse:
    hub = ctx_of(request).events
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        async for frame in hub.stream():
            await response.write(frame)
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away; its watch is closed by the stream's finally
    return response
