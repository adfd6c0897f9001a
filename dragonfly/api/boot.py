"""The boot doctor in the API: per-MAC boot timelines and their diagnosis."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dragonfly.api.router import ApiRouter, Param
from dragonfly.app_key import ctx_of
from dragonfly.bootlog import BootLog
from dragonfly.errors import InvalidInput, NotFound, Unavailable
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
    fleet = ctx_of(request).fleet
    rows = _bootlog(request).recent(int(raw))
    for row in rows:
        machine = fleet.find_machine([row["mac"]])
        row["machine"] = None if machine is None else {"id": machine.id, "name": machine.name}
    return rows


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


@api.get("/boot/loaders/{loader}", "An iPXE loader over HTTP (UEFI HTTP boot, chainloading)",
         "boot", access="agent")
async def loader_over_http(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    edge = ctx.extras.get("boot.edge")
    stack = edge.stack if edge is not None else None
    if stack is None:
        raise Unavailable("the boot services are not running on this instance"
                          + (f": {edge.error}" if edge is not None and edge.error else ""))
    name = request.match_info["loader"]
    found = await asyncio.to_thread(stack.loader_file, name)
    if found is None:
        raise NotFound(f"no loader {name!r}: known loaders are "
                       f"{', '.join(sorted(stack.registry.loaders))}")
    peer = request.remote or ""
    mac = stack.bootlog.mac_for_ip(peer)
    size = len(found) if isinstance(found, bytes) else (await asyncio.to_thread(found.stat)).st_size
    if mac is not None:
        stack.bootlog.record(mac, "http_loader", {"file": name, "bytes": size, "ip": peer})
        if stack.dhcp is not None:
            stack.dhcp.note_loader_fetched(mac, name)
    if isinstance(found, bytes):
        return web.Response(body=found, content_type="application/octet-stream")
    return web.FileResponse(found, headers={"Content-Type": "application/octet-stream"})
