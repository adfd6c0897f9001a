"""The deployment timer over the API: the history of finished deployments and the figures
the dashboard's Deployed card and charts show."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.context import ctx_of
from dragonfly.errors import Unavailable
from dragonfly.http.errors import int_query
from dragonfly.http.router import ApiRouter, Param
from dragonfly.timer.history import DeploymentHistory

api = ApiRouter()
MAX_LIMIT = 1000


def history_of(request: web.Request) -> DeploymentHistory:
    history = ctx_of(request).timer
    if history is None:
        raise Unavailable("this instance keeps no deployment history")
    return history


@api.get("/api/deployments", "Finished deployments, newest first: template, hardware class, "
         "stages with their times and bytes, result and reason", "deployments", params=(
             Param("template"), Param("result", enum=("succeeded", "failed")),
             Param("machine"), Param("limit", type="integer")))
async def list_deployments(request: web.Request) -> list[dict[str, Any]]:
    history = history_of(request)
    await history.ready()
    limit = int_query(request, "limit", 100, 1, MAX_LIMIT)
    template, result = request.query.get("template", ""), request.query.get("result", "")
    machine = request.query.get("machine", "")
    out: list[dict[str, Any]] = []
    for record in reversed(history.records):
        if template and record.template != template or result and record.result != result \
                or machine and record.machine_id != machine:
            continue
        out.append(record.to_dict())
        if len(out) >= limit:
            break
    return out


@api.get("/api/deployments/stats", "The Deployed card and charts: totals, average time, the "
         "last 24 h, the last 100, time and outcome by template, hardware, day and hour",
         "deployments", params=(Param("tz_offset", type="integer",
                                      help="minutes east of UTC for the by-day and by-hour "
                                           "views (the browser's)"),))
async def deployment_stats(request: web.Request) -> dict[str, Any]:
    offset = int_query(request, "tz_offset", 0, -14 * 60, 14 * 60)
    history = history_of(request)
    await history.ready()
    return history.stats(tz_offset_minutes=offset)
