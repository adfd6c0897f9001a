"""The boot doctor in the API: per-MAC boot timelines and their diagnosis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.api.router import ApiRouter, Param
from dragonfly.app_key import ctx_of
from dragonfly.bootlog import BootLog
from dragonfly.errors import InvalidInput, NotFound, Unavailable
from dragonfly.model import normalise_mac

if TYPE_CHECKING:
    from dragonfly.app import AppContext

api = ApiRouter()

BootStatus = Callable[[], Awaitable[dict[str, Any]]]


def _bootlog(request: web.Request) -> BootLog:
    bootlog = ctx_of(request).bootlog
    if bootlog is None:
        raise Unavailable("the boot services are not running on this instance")
    return bootlog


async def boot_edge_status(ctx: AppContext) -> dict[str, Any] | None:
    """The boot edge's status from the composition root's ``boot.status`` (the installed
    server's ``BootEdge.status``, the demo's simulation), or None without boot services."""
    source: BootStatus | None = ctx.extras.get("boot.status")
    return None if source is None else await source()


# Declared before /api/boot/{mac}, which would take "status" for a MAC.
@api.get("/api/boot/status", "The boot edge's health: DHCP and TFTP each running, off or "
         "failed (with the reason), their addresses and counters, and what discovery still "
         "lacks (kernel, initrd, loaders)", "boot")
async def boot_status(request: web.Request) -> dict[str, Any]:
    status = await boot_edge_status(ctx_of(request))
    if status is None:
        raise Unavailable("the boot services are not running on this instance")
    return status


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
         "boot", access="agent", head=True)
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
    # EDK2's HTTP boot asks HEAD for the size first, then GETs: only the GET is the fetch.
    if mac is not None and request.method != "HEAD":
        stack.bootlog.record(mac, "http_loader", {"file": name, "bytes": size, "ip": peer})
        if stack.dhcp is not None:
            stack.dhcp.note_loader_fetched(mac, name)
    if isinstance(found, bytes):
        return web.Response(body=found, content_type="application/octet-stream")
    return web.FileResponse(found, headers={"Content-Type": "application/octet-stream"})
