"""HTTP surface of the boot path and the agent: check-in, heartbeat, per-MAC iPXE script, and
the discovery kernel and initrd (the stock initrd with the agent overlay appended on the fly).

Settings the composition root may put in ``AppContext.extras`` (all optional):
  ``agent.poll_seconds``  int, how long a waiting agent sleeps between heartbeats (default 30)
  ``agent.settings``      ``initramfs.AgentSettings`` written into the overlay
  ``agent.resolve_name``  ``checkin.ResolveName``; default: PTR lookup, else a memorable name
  ``agent.commands``      ``checkin.AgentCommands``; created on first use
  ``boot.observer``       ``BootObserver``, told of every boot step (for the boot doctor)
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.agent import checkin, initramfs
from dragonfly.api.errors import read_json
from dragonfly.api.router import ApiRouter, Param
from dragonfly.app_key import ctx_of
from dragonfly.config import Config
from dragonfly.errors import NotFound
from dragonfly.model import Machine
from dragonfly.naming import machine_name

if TYPE_CHECKING:
    from dragonfly.app import AppContext

log = logging.getLogger(__name__)

api = ApiRouter()

MAX_REPORT_BYTES = 256 * 1024
CHUNK = 256 * 1024
KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 panic=30"
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")

# (mac, step, detail): "ipxe_script", "kernel", "initrd", "checkin", "heartbeat".
BootObserver = Callable[[str, str, dict[str, Any]], None]

HOW_TO_OBTAIN = (
    "Build them offline from Debian packages with `dragonfly discovery build --out {dir}` "
    "(run `apt-get update` first), or download a distro netboot kernel and its "
    "busybox initramfs into {dir}/vmlinuz and {dir}/initrd.img (see the script's --help).")


# --- shared helpers ------------------------------------------------------------------------------

def discovery_dir(config: Config) -> Path:
    return config.state_dir / "discovery"


def discovery_status(config: Config) -> dict[str, Any]:
    """What `dragonfly serve` should say at start: which discovery files exist, how to get the
    missing ones. Blocking (stat): call it from a thread or before the loop runs."""
    d = discovery_dir(config)
    missing = [str(d / n) for n in ("vmlinuz", "initrd.img") if not (d / n).is_file()]
    return {"dir": str(d), "ready": not missing, "missing": missing,
            "how_to_obtain": HOW_TO_OBTAIN.format(dir=d) if missing else ""}


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


def _observe(request: web.Request, mac: str, step: str, detail: dict[str, Any]) -> None:
    observer = ctx_of(request).extras.get("boot.observer")
    if observer is None:
        return
    try:
        observer(mac, step, detail)
    except Exception:
        log.exception("boot observer failed on %s for %s", step, mac)


def _mac_query(request: web.Request) -> str:
    raw = request.query.get("mac", "")
    try:
        return checkin.parse_mac(raw, "mac") if raw else ""
    except Exception:
        return ""


def agent_settings(ctx: AppContext) -> tuple[int, checkin.AgentCommands]:
    """The agents' poll interval and the one command queue, shared by the agent routes and
    the operator's agent commands (``dragonfly.api.agent``)."""
    extras = ctx.extras
    poll = int(extras.get("agent.poll_seconds", checkin.POLL_DEFAULT))
    commands = extras.get("agent.commands")
    if not isinstance(commands, checkin.AgentCommands):
        commands = extras["agent.commands"] = checkin.AgentCommands()
    return poll, commands


def _extras(request: web.Request) -> tuple[int, checkin.AgentCommands]:
    return agent_settings(ctx_of(request))


# --- agent API -----------------------------------------------------------------------------------

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
    poll, commands = _extras(request)
    resolve: checkin.ResolveName = ctx.extras.get("agent.resolve_name") or machine_name
    answer = await checkin.handle_checkin(ctx.fleet, report, request.remote, resolve,
                                          poll_seconds=poll, commands=commands)
    _observe(request, report.boot_mac, "checkin",
             {"machine_id": answer["machine_id"], "ip": request.remote,
              "action": answer["action"]})
    return answer


@api.post("/api/agent/heartbeat", "A waiting agent is alive; answers its next step", "agent",
          access="agent", body={"type": "object", "required": ["machine_id"], "properties": {
              "machine_id": {"type": "string"}, "mac": {"type": "string"},
              "uptime_seconds": {"type": "integer"}, "status": {"type": "string"}}})
async def agent_heartbeat(request: web.Request) -> dict[str, Any]:
    beat = checkin.parse_heartbeat(await read_json(request, 16 * 1024))
    poll, commands = _extras(request)
    answer = await checkin.handle_heartbeat(ctx_of(request).fleet, beat, request.remote,
                                            poll_seconds=poll, commands=commands)
    _observe(request, beat.mac, "heartbeat", {"machine_id": beat.machine_id,
                                              "action": answer["action"]})
    return answer


# --- iPXE script ---------------------------------------------------------------------------------

def discovery_script(mac: str, base: str) -> str:
    q = f"?mac={mac}"
    return (
        "#!ipxe\n"
        f"echo Dragonfly: {mac} boots the discovery environment\n"
        f"kernel {base}/boot/discovery/vmlinuz{q} initrd=initrd.img "
        f"dragonfly.url={base} dragonfly.mac={mac} {KERNEL_ARGS}\n"
        f"initrd --name initrd.img {base}/boot/discovery/initrd.img{q}\n"
        "boot\n"
    )


def local_boot_script(machine: Machine) -> str:
    # UEFI: leave iPXE so the firmware tries its next boot entry (the installed OS).
    # BIOS: boot the first hard disk directly; if that fails, leave to the next device.
    return (
        "#!ipxe\n"
        f"echo Dragonfly: {machine.name} is {machine.state.value}; booting the local disk\n"
        "iseq ${platform} efi && exit ||\n"
        "sanboot --no-describe --drive 0x80 || exit\n"
    )


def ipxe_script(machine: Machine | None, mac: str, base: str) -> str:
    """The decision per MAC. Unknown and discovered machines (and any not yet running an OS)
    boot discovery; deploying and installed ones boot their disk. Later: install, utilities."""
    if machine is not None and machine.state in checkin.LOCALBOOT_IN:
        return local_boot_script(machine)
    return discovery_script(mac, base)


@api.get("/boot/{mac}.ipxe", "The iPXE script for one MAC: discovery or local boot", "boot",
         access="agent", params=(Param("mac", "path", required=True,
                                       help="aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff"),))
async def boot_script(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    mac = checkin.parse_mac(request.match_info["mac"], "the MAC in the URL")
    machine = ctx.fleet.find_machine([mac])
    script = ipxe_script(machine, mac, base_url(request, ctx.config))
    _observe(request, mac, "ipxe_script", {"machine_id": machine.id if machine else None,
                                           "state": machine.state.value if machine else None,
                                           "ip": request.remote})
    return web.Response(text=script, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


# --- kernel and initrd ---------------------------------------------------------------------------

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
    _observe(request, _mac_query(request), "kernel", {"ip": request.remote})
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
        settings = ctx.extras.get("agent.settings")
        overlay = initramfs.cached_overlay(
            settings if isinstance(settings, initramfs.AgentSettings) else None)
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}-{overlay.etag.strip(chr(34))}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        _observe(request, _mac_query(request), "initrd", {"ip": request.remote})
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
