"""Tinkerbell mode over HTTP: the cluster's state for the panel's Tinkerbell page, and the
seed and one-time phone-home of deployments Tinkerbell runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.context import ctx_of
from dragonfly.errors import InvalidInput, Unavailable
from dragonfly.http.router import ApiRouter

if TYPE_CHECKING:  # the backend pulls in the Kubernetes client: only Tinkerbell mode loads it
    from dragonfly.tinkerbell.backend import TinkerbellBackend

api = ApiRouter()

MAX_FORM_BYTES = 64 * 1024


def backend_of(request: web.Request) -> TinkerbellBackend:
    backend = ctx_of(request).tinkerbell
    if backend is None:
        raise Unavailable("this server does not run in Tinkerbell mode (server.mode = "
                          f"{ctx_of(request).config['server.mode']})")
    return backend


@api.get("/api/tinkerbell", "Tinkerbell mode: the cluster's state (connected, or what is wrong "
         "and what to do), the namespace and the objects Dragonfly owns there", "tinkerbell")
async def tinkerbell_status(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    if ctx.tinkerbell is None:
        return {"mode": ctx.config["server.mode"], "enabled": False}
    return {"mode": ctx.config["server.mode"], "enabled": True,
            "power": ctx.config["tinkerbell.power"], **ctx.tinkerbell.status()}


@api.get("/api/tinkerbell/seed/{id}/{token}/{name}", "A file of a Tinkerbell deployment's "
         "cloud-init NoCloud seed (the installed OS follows seedfrom here)", "agent",
         access="agent")
async def seed_file(request: web.Request) -> web.Response:
    m = request.match_info
    text = await backend_of(request).seed_file(m["id"], m["token"], m["name"])
    return web.Response(text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


@api.post("/api/tinkerbell/phone-home/{id}/{token}", "The OS a Tinkerbell deployment installed "
          "reports its first boot (cloud-init phone_home); one-time", "agent", access="agent")
async def phone_home(request: web.Request) -> dict[str, Any]:
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise InvalidInput("the phone-home form is too large")
    backend = backend_of(request)
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await backend.phone_home(request.match_info["id"], request.match_info["token"],
                                    fields)
