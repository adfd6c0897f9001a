"""The panel's Tinkerbell page: the cluster's state (connected, or what is wrong and what to
do), the objects Dragonfly owns there, and the deployments Tinkerbell is running.
``web/static/js/tinkerbell.js`` keeps it live from the event stream (the cluster state is a
streamed store document, ``tinkerbell_cluster``).

Imported late by ``dragonfly.panel``, as ``power`` is (``page`` comes from the access-control
middleware, which imports the panel's renderer); it never imports the backend (and so not the
Kubernetes client): the page only reads its state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth.middleware import page
from dragonfly.context import ctx_of
from dragonfly.errors import NotFound
from dragonfly.panel.render import render
from dragonfly.tinkerbell.translate import workflow_name


@page("read")
async def tinkerbell_page(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    backend = ctx.tinkerbell
    cluster: dict[str, Any] | None = backend.status() if backend is not None else None
    deployments = []
    for wf in ctx.fleet.active_workflows():
        if wf.engine != "tinkerbell":
            continue
        try:
            name = ctx.fleet.get_machine(wf.machine_id).name
        except NotFound:
            name = wf.machine_id
        deployments.append({"id": wf.id, "machine_id": wf.machine_id, "machine": name,
                            "template": wf.template, "stage": wf.stage or wf.state.value,
                            "progress": wf.progress, "state": wf.state.value,
                            "object": workflow_name(wf.id)})
    return render(request, "tinkerbell.html", cluster=cluster, deployments=deployments,
                  page_data={"page": "tinkerbell", "cluster": cluster,
                             "deployments": deployments},
                  page_title="Tinkerbell · Dragonfly")
