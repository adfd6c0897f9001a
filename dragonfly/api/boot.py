"""The boot doctor in the API: per-MAC boot timelines and their diagnosis."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.api.router import ApiRouter, Param
from dragonfly.app_key import ctx_of
from dragonfly.bootlog import BootLog
from dragonfly.errors import InvalidInput, Unavailable
from dragonfly.model import normalise_mac

api = ApiRouter()


def _bootlog(request: web.Request) -> BootLog:
    bootlog = ctx_of(request).bootlog
    if bootlog is None:
        raise Unavailable("the boot services are not running on this instance")
    return bootlog


@api.get("/api/boot", "Machines seen booting recently, with their latest step and diagnosis",
         "boot", params=(Param("limit", type="integer"),))
async def recent_boots(request: web.Request) -> list[dict[str, Any]]:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidInput("limit must be an integer between 1 and 1000")
    return _bootlog(request).recent(int(raw))


@api.get("/api/boot/{mac}", "The boot timeline of one MAC address", "boot")
async def boot_timeline(request: web.Request) -> dict[str, Any]:
    mac = normalise_mac(request.match_info["mac"])
    return _bootlog(request).timeline(mac)


@api.get("/api/machines/{id}/boot", "Boot timelines of a machine's NICs", "boot")
async def machine_boot(request: web.Request) -> list[dict[str, Any]]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    bootlog = _bootlog(request)
    macs = dict.fromkeys([machine.mac, *machine.macs])
    return [t for t in (bootlog.timeline(mac) for mac in macs) if t["steps"]]
