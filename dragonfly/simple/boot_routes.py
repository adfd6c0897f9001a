"""What a machine's installer fetches and reports in Simple mode (boot networks, no login;
the one-time answer token and the progress token in the URL are the credentials), and the
installer files' import."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.agent.checkin import parse_mac
from dragonfly.context import ctx_of
from dragonfly.edge.routes import base_url
from dragonfly.errors import InvalidInput, Unavailable
from dragonfly.http.errors import read_object
from dragonfly.http.router import ApiRouter, Param

if TYPE_CHECKING:
    from dragonfly.simple.engine import SimpleInstaller

# The engine, the installers' table and the package importer (tarfile, configparser) are
# imported by the handlers that use them: the app's start registers these routes only.

api = ApiRouter()

MAX_EVENT_BYTES = 64 * 1024
_MAC = Param("mac", "path", required=True, help="aa:bb:cc:dd:ee:ff")


def _engine(request: web.Request) -> SimpleInstaller:
    simple = ctx_of(request).simple
    if simple is None:
        raise Unavailable("this instance runs no Simple-mode installs")
    return simple


def _sent_macs(request: web.Request) -> list[str]:
    """The MACs anaconda sends with ``inst.ks.sendmac`` (``X-RHN-Provisioning-MAC-0: eth0
    52:54:00:12:34:56``)."""
    macs = []
    for name, value in request.headers.items():
        if name.lower().startswith("x-rhn-provisioning-mac-"):
            try:
                macs.append(parse_mac(value.split()[-1], name))
            except Exception:
                continue
    return macs


@api.get("/simple/answers/{mac}/{token}/{file}", "A machine's answer file (preseed.cfg, "
         "ks.cfg, user-data; meta-data for Ubuntu's seed): served once, to that machine",
         "simple", access="agent", params=(_MAC,))
async def answer_file(request: web.Request) -> web.Response:
    mac = parse_mac(request.match_info["mac"], "the MAC in the URL")
    ctx = ctx_of(request)
    text = await _engine(request).answer(mac, request.match_info["token"],
                                         request.match_info["file"],
                                         base_url(request, ctx.config), _sent_macs(request))
    if ctx.bootlog is not None:
        ctx.bootlog.record(mac, "answer_file", {"file": request.match_info["file"],
                                                "ip": request.remote})
    return web.Response(text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


MAX_SYSINFO_BYTES = 256 * 1024


@api.post("/simple/proxmox/answer", "Proxmox VE's automated installer (ISO prepared with "
          "--fetch-from http --url pointing here) POSTs its system information; the machine "
          "named by its NICs' MACs gets its answer.toml, once", "simple", access="agent")
async def proxmox_answer(request: web.Request) -> web.Response:
    sysinfo = await read_object(request, MAX_SYSINFO_BYTES)
    ctx = ctx_of(request)
    text = await _engine(request).proxmox_answer(sysinfo, base_url(request, ctx.config))
    return web.Response(text=text, content_type="application/toml",
                        headers={"Cache-Control": "no-store"})


async def _progress(request: web.Request, event: str) -> dict[str, Any]:
    from dragonfly.simple.engine import check_event

    mac = parse_mac(request.match_info["mac"], "the MAC in the URL")
    body: dict[str, Any] | None = None
    if request.method == "POST" and event == "events":
        body = await read_object(request, MAX_EVENT_BYTES)
    return await _engine(request).progress(mac, request.match_info["token"],
                                           check_event(event), body)


@api.get("/simple/progress/{mac}/{token}/stage/{stage}", "An installer reports a stage "
         "(preseed and kickstart commands)", "simple", access="agent", params=(_MAC,))
async def progress_stage_get(request: web.Request) -> dict[str, Any]:
    return await _progress(request, f"stage/{request.match_info['stage']}")


@api.post("/simple/progress/{mac}/{token}/stage/{stage}", "An installer reports a stage",
          "simple", access="agent", params=(_MAC,))
async def progress_stage_post(request: web.Request) -> dict[str, Any]:
    return await _progress(request, f"stage/{request.match_info['stage']}")


_EVENT = Param("event", "path", required=True, enum=("done", "failed", "booted", "events"))


@api.get("/simple/progress/{mac}/{token}/{event}", "An installer reports done or failed; "
         "the installed OS its first boot", "simple", access="agent", params=(_MAC, _EVENT))
async def progress_event_get(request: web.Request) -> dict[str, Any]:
    return await _progress(request, request.match_info["event"])


@api.post("/simple/progress/{mac}/{token}/{event}", "The same, posted; ``events`` is "
          "subiquity's reporting webhook (curtin-format JSON events)", "simple",
          access="agent", params=(_MAC, _EVENT))
async def progress_event_post(request: web.Request) -> dict[str, Any]:
    return await _progress(request, request.match_info["event"])


@api.get("/api/simple/installers", "The distribution installers Simple mode knows, and "
         "whether their kernel and initrd are in the image store", "simple")
async def list_installers(request: web.Request) -> list[dict[str, Any]]:
    from dragonfly.simple.installers import INSTALLERS

    images = ctx_of(request).images
    out = []
    for installer in INSTALLERS.values():
        files = {}
        for file in installer.files:
            image = None if images is None else \
                await images.for_template(installer.image_key(file.role))
            files[file.role] = {"url": file.url,
                                "digest": image.digest if image is not None else None}
        out.append({"slug": installer.slug, "family": installer.family,
                    "repo": installer.repo, "package": installer.package,
                    "memory_note": installer.memory_note, "files": files,
                    "network_boot": installer.network_boot, "iso": installer.iso})
    return out


@api.post("/api/simple/installers/{slug}/import", "Import an installer's kernel and initrd "
          "offline from its Debian package (a .deb path on this server)", "simple",
          access="admin", body={"type": "object", "required": ["path"],
                                "properties": {"path": {"type": "string"}}})
async def import_installer(request: web.Request) -> dict[str, Any]:
    from dragonfly.simple.importer import import_package
    from dragonfly.simple.installers import installer_for

    ctx = ctx_of(request)
    if ctx.images is None:
        raise Unavailable("this instance has no image store")
    body = await read_object(request)
    path = body.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInput("path must be the absolute path of a .deb on this server")
    installer = installer_for(request.match_info["slug"])
    return {"slug": installer.slug,
            "files": await import_package(ctx.images, installer, Path(path))}
