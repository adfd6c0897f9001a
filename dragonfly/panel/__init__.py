"""The HTML panel: server-rendered pages over the same data the JSON API returns.

Pages render the first screenful on the server (fast first paint, works without JS) and the
scripts in ``web/static`` keep them live from ``/api/events``. Each page also embeds the data
its script needs as JSON (``page_data``), so the script never re-fetches what the server just
sent. ``render`` builds a page; ``pages`` holds the panel's own, ``power`` the power pages for
administrators, ``auth`` the access-control ones.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.panel.pages import (
    dashboard,
    docs_page,
    favicon,
    machine_page,
    machines_page,
    not_found_page,
    static_file,
    tags_page,
    templates_page,
)


def add_panel_routes(app: web.Application) -> None:
    # Late: its page declaration comes from the access-control middleware, which imports
    # this package's renderer.
    from dragonfly.panel.power import enclosures_page
    from dragonfly.panel.tinkerbell import tinkerbell_page

    app.router.add_get("/", dashboard)
    app.router.add_get("/machines", machines_page)
    app.router.add_get("/enclosures", enclosures_page)
    app.router.add_get("/tinkerbell", tinkerbell_page)
    app.router.add_get("/machines/{id}", machine_page)
    app.router.add_get("/tags", tags_page)
    app.router.add_get("/templates", templates_page)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/{page}", docs_page)
    app.router.add_get("/static/{name:.+}", static_file)
    app.router.add_get("/favicon.ico", favicon)
    app.middlewares.append(friendly_not_found)


@web.middleware
async def friendly_not_found(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown page URLs get the panel's 404 page; /api and /boot keep their JSON errors."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPNotFound:
        if request.method != "GET" or request.path.startswith(("/api/", "/boot/", "/static/")):
            raise
        return await not_found_page(request)
    return response
