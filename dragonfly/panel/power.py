"""The panel's power pages for administrators: the OpenJBOD enclosures (register, edit,
attach machines, remove). ``web/static/js/enclosures.js`` sends the forms to the JSON API
(``/api/enclosures``); the password is write-only there, as everywhere.

Not imported by ``dragonfly.panel`` itself: ``page`` comes from the access-control
middleware, which imports the panel's renderer (``add_panel_routes`` imports this late)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth.middleware import page
from dragonfly.context import ctx_of
from dragonfly.panel.pages import machine_names
from dragonfly.panel.render import render


@page("admin")
async def enclosures_page(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    power = ctx.power
    enclosures: list[dict[str, Any]] = []
    if power is not None:
        enclosures = [power.enclosures.public(n) for n in power.enclosures.names()]
    attached = list(dict.fromkeys(m for e in enclosures for m in e["machines"]))
    names = machine_names(ctx, attached)
    return render(request, "enclosures.html", enclosures=enclosures, names=names,
                  power_enabled=power is not None,
                  page_data={"page": "enclosures", "enclosures": enclosures, "names": names,
                             "power_enabled": power is not None},
                  page_title="Enclosures · Dragonfly")
