"""The agent's HTTP surface: check-in with the hardware inventory, and the heartbeat of an
agent waiting for orders. (The boot files it runs from are the boot edge's: ``edge.routes``.)"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from dragonfly.agent import checkin
from dragonfly.context import ctx_of
from dragonfly.http.errors import read_json
from dragonfly.http.router import ApiRouter

log = logging.getLogger(__name__)

api = ApiRouter()

MAX_REPORT_BYTES = 256 * 1024

_REPORT_SCHEMA: dict[str, Any] = {

    "type": "object",
    "properties": {
        "agent_version": {"type": "string"}, "boot_mac": {"type": "string"},
        "ip": {"type": "string"}, "memory_bytes": {"type": "integer"},
        "cpu": {"type": "object", "properties": {
            "model": {"type": "string"}, "arch": {"type": "string"},
            "sockets": {"type": "integer"}, "cores": {"type": "integer"},
            "threads": {"type": "integer"}, "mhz": {"type": "integer"}}},
        "disks": {"type": "array", "maxItems": checkin.MAX_DISKS, "items": {
            "type": "object", "required": ["name", "size_bytes"], "properties": {
                "name": {"type": "string"}, "size_bytes": {"type": "integer"},
                "model": {"type": "string"}, "vendor": {"type": "string"},
                "serial": {"type": "string"}, "wwn": {"type": "string"},
                "rotational": {"type": "boolean"}, "removable": {"type": "boolean"}}}},
        "nics": {"type": "array", "maxItems": checkin.MAX_NICS, "items": {
            "type": "object", "required": ["mac"], "properties": {
                "name": {"type": "string"}, "mac": {"type": "string"},
                "speed_mbps": {"type": "integer"}, "link": {"type": "boolean"},
                "driver": {"type": "string"}, "ip": {"type": "string"}}}},
        "dmi": {"type": "object", "properties": {
            "vendor": {"type": "string"}, "product": {"type": "string"},
            "serial": {"type": "string"}, "uuid": {"type": "string"}}},
        "bmc": {"type": "object", "properties": {
            "present": {"type": "boolean"}, "interface": {"type": "string"},
            "ip": {"type": "string"}, "mac": {"type": "string"},
            "ip_source": {"type": "string", "enum": list(checkin.BMC_IP_SOURCES)}}},
        "virtualization": {"type": "string"},
    },
}


@api.post("/api/agent/checkin", "Discovery agent check-in with the hardware inventory",
          "agent", access="agent", body=_REPORT_SCHEMA)
async def agent_checkin(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    report = checkin.parse_report(await read_json(request, MAX_REPORT_BYTES))
    answer = await checkin.handle_checkin(ctx.fleet, report, request.remote, ctx.resolve_name,
                                          poll_seconds=ctx.poll_seconds, commands=ctx.commands)
    if ctx.identity is not None:
        # A machine first seen at this check-in had no record when it fetched its iPXE
        # script: its DNS identity is read now (answers are cached, so usually free).
        machine = ctx.fleet.lookup(answer["machine_id"])
        if machine is not None:
            await ctx.identity.refresh(ctx.fleet, machine, request.remote)
    if ctx.bootlog is not None:
        ctx.bootlog.record(report.boot_mac, "checkin",
                           {"machine_id": answer["machine_id"], "ip": request.remote,
                            "action": answer["action"]})
    return answer


@api.post("/api/agent/heartbeat", "A waiting agent is alive; answers its next step", "agent",
          access="agent", body={"type": "object", "required": ["machine_id"], "properties": {
              "machine_id": {"type": "string"}, "mac": {"type": "string"},
              "uptime_seconds": {"type": "integer"}, "status": {"type": "string"}}})
async def agent_heartbeat(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    beat = checkin.parse_heartbeat(await read_json(request, 16 * 1024))
    answer = await checkin.handle_heartbeat(ctx.fleet, beat, request.remote,
                                            poll_seconds=ctx.poll_seconds, commands=ctx.commands)
    if ctx.bootlog is not None:
        ctx.bootlog.record(beat.mac, "heartbeat", {"machine_id": beat.machine_id,
                                                   "action": answer["action"]})
    return answer
