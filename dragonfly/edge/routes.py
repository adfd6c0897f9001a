"""The boot edge over HTTP: what booting machines fetch (their per-MAC iPXE script, the
discovery kernel and initrd, iPXE loaders for UEFI HTTP boot), and the boot doctor's API
(``/api/boot``: the edge's health and per-MAC boot timelines)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from dragonfly.agent import checkin, initramfs
from dragonfly.boot.discovery import HOW_TO_OBTAIN, discovery_dir
from dragonfly.boot.log import BootLog
from dragonfly.boot.scripts import ipxe_script
from dragonfly.config import Config
from dragonfly.context import AppContext, ctx_of
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, normalise_mac
from dragonfly.errors import InvalidInput, NotFound, Unavailable
from dragonfly.http.router import ApiRouter, Param

log = logging.getLogger(__name__)

api = ApiRouter()

CHUNK = 256 * 1024
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
NOT_RUNNING = "the boot services are not running on this instance"


def base_url(request: web.Request, config: Config) -> str:
    """How booting machines reach this server: ``server.public_url``, else the Host they used
    (validated: it ends up on a kernel command line), else the local socket address."""
    public = str(config["server.public_url"] or "").rstrip("/")
    if public:
        return public
    host = request.headers.get("Host", "")
    if not _HOST.match(host):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return "http://127.0.0.1"
        addr, port = sockname[0], sockname[1]
        host = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    return f"http://{host}"


def _record(ctx: AppContext, mac: str, step: str, detail: dict[str, Any]) -> None:
    """Tell the boot doctor of a boot step (nothing to tell without a MAC or a boot log)."""
    if ctx.bootlog is not None and mac:
        ctx.bootlog.record(mac, step, detail)


def _mac_query(request: web.Request) -> str:
    raw = request.query.get("mac", "")
    try:
        return checkin.parse_mac(raw, "mac") if raw else ""
    except Exception:
        return ""


# --- the boot doctor ---------------------------------------------------------------------------

def _bootlog(request: web.Request) -> BootLog:
    bootlog = ctx_of(request).bootlog
    if bootlog is None:
        raise Unavailable(NOT_RUNNING)
    return bootlog


def recent_boots(bootlog: BootLog, fleet: Fleet, limit: int) -> list[dict[str, Any]]:
    """The MACs seen booting most recently with their latest step, each with the machine it
    belongs to (None: a MAC that boots but never registered)."""
    rows = bootlog.recent(limit)
    for row in rows:
        machine = fleet.find_machine([row["mac"]])
        row["machine"] = None if machine is None else {"id": machine.id, "name": machine.name}
    return rows


def machine_timelines(bootlog: BootLog, machine: Machine) -> list[dict[str, Any]]:
    """The boot timelines of a machine's NICs that have one."""
    macs = dict.fromkeys([machine.mac, *machine.macs])
    return [t for t in (bootlog.timeline(mac) for mac in macs) if t["steps"]]


async def boot_edge_status(ctx: AppContext) -> dict[str, Any] | None:
    """The boot edge's status (the installed server's DHCP and TFTP, the demo's simulation),
    or None on an instance without boot services."""
    return None if ctx.edge is None else await ctx.edge.status()


# Declared before /api/boot/{mac}, which would take "status" for a MAC.
@api.get("/api/boot/status", "The boot edge's health: DHCP and TFTP each running, off or "
         "failed (with the reason), their addresses and counters, and what discovery still "
         "lacks (kernel, initrd, loaders)", "boot")
async def boot_status(request: web.Request) -> dict[str, Any]:
    status = await boot_edge_status(ctx_of(request))
    if status is None:
        raise Unavailable(NOT_RUNNING)
    return status


@api.get("/api/boot", "Machines seen booting recently, with their latest step and diagnosis",
         "boot", params=(Param("limit", type="integer"),))
async def recent_boots_api(request: web.Request) -> list[dict[str, Any]]:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidInput("limit must be an integer between 1 and 1000")
    return recent_boots(_bootlog(request), ctx_of(request).fleet, int(raw))


@api.get("/api/boot/{mac}", "The boot timeline of one MAC address", "boot")
async def boot_timeline(request: web.Request) -> dict[str, Any]:
    mac = normalise_mac(request.match_info["mac"])
    return _bootlog(request).timeline(mac)


@api.get("/api/machines/{id}/boot", "Boot timelines of a machine's NICs", "boot")
async def machine_boot(request: web.Request) -> list[dict[str, Any]]:
    machine = ctx_of(request).fleet.get_machine(request.match_info["id"])
    return machine_timelines(_bootlog(request), machine)


# --- what booting machines fetch ---------------------------------------------------------------

@api.get("/boot/loaders/{loader}", "An iPXE loader over HTTP (UEFI HTTP boot, chainloading)",
         "boot", access="agent", head=True)
async def loader_over_http(request: web.Request) -> web.StreamResponse:
    edge = ctx_of(request).edge
    if edge is None:
        raise Unavailable(NOT_RUNNING)
    # EDK2's HTTP boot asks HEAD for the size first, then GETs: only the GET is the fetch.
    found = await edge.loader(request.match_info["loader"], request.remote or "",
                              fetching=request.method != "HEAD")
    if isinstance(found, bytes):
        return web.Response(body=found, content_type="application/octet-stream")
    return web.FileResponse(found, headers={"Content-Type": "application/octet-stream"})


@api.get("/boot/{mac}.ipxe", "The iPXE script for one MAC: discovery or local boot", "boot",
         access="agent", params=(Param("mac", "path", required=True,
                                       help="aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff"),))
async def boot_script(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = checkin.parse_mac(request.match_info["mac"], "the MAC in the URL")
    machine = ctx.fleet.find_machine([mac])
    if machine is not None and ctx.identity is not None:
        # Every boot re-reads the machine's name, tags and role from DNS (bounded wait).
        machine = await ctx.identity.refresh(ctx.fleet, machine, request.remote)
    workflow = ctx.fleet.active_workflow_of(machine) if machine is not None else None
    base = base_url(request, ctx.config)
    script = None
    if machine is not None and workflow is not None and ctx.simple is not None:
        # Simple mode: the distribution's installer, until it says it is done.
        script = await ctx.simple.boot_script(machine, workflow, base)
    if script is None:
        script = ipxe_script(machine, workflow, mac, base)
    _record(ctx, mac, "ipxe_script", {"machine_id": machine.id if machine else None,
                                      "state": machine.state.value if machine else None,
                                      "ip": request.remote})
    return web.Response(text=script, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


def _missing(path: Path, what: str, config: Config) -> NotFound:
    d = discovery_dir(config)
    return NotFound(f"the discovery {what} is missing: {path} does not exist",
                    {"missing": str(path), "how_to_obtain": HOW_TO_OBTAIN.format(dir=d)})


def _open(path: Path) -> tuple[IO[bytes], os.stat_result]:
    fh = open(path, "rb")  # noqa: SIM115 - closed by the handler after streaming
    try:
        st = os.fstat(fh.fileno())
    except OSError:
        fh.close()
        raise
    return fh, st


@api.get("/boot/discovery/vmlinuz", "The discovery kernel", "boot", access="agent",
         streaming=True)
async def discovery_kernel(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    path = discovery_dir(ctx.config) / "vmlinuz"
    if not await asyncio.to_thread(path.is_file):
        raise _missing(path, "kernel", ctx.config)
    _record(ctx, _mac_query(request), "kernel", {"ip": request.remote})
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


@api.get("/boot/discovery/initrd.img", "The discovery initrd: the stock initrd with the "
         "agent overlay appended", "boot", access="agent", streaming=True)
async def discovery_initrd(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    path = discovery_dir(ctx.config) / "initrd.img"
    try:
        fh, st = await asyncio.to_thread(_open, path)
    except FileNotFoundError:
        raise _missing(path, "initrd", ctx.config) from None
    try:
        overlay = initramfs.cached_overlay(ctx.agent_settings)
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}-{overlay.etag.strip(chr(34))}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        _record(ctx, _mac_query(request), "initrd", {"ip": request.remote})
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "ETag": etag,
            "Cache-Control": "no-cache"})
        response.content_length = initramfs.appended_size(st.st_size, overlay)
        await response.prepare(request)
        remaining = st.st_size
        while remaining > 0:
            chunk = await asyncio.to_thread(fh.read, min(CHUNK, remaining))
            if not chunk:
                # The file shrank under us: the promised length cannot be met; drop the
                # connection rather than end a corrupt initrd cleanly.
                log.error("%s shrank while being served; closing the connection", path)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write(initramfs.padding_after(st.st_size) + overlay.data)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(fh.close)
