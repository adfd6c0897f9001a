"""OS templates over the JSON API: list, read, create, replace, delete, reload the files, and
preview the cloud-init seed a deployment of a template would write for a machine."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.context import ctx_of
from dragonfly.errors import InvalidInput, Unavailable
from dragonfly.http.errors import json_response, read_object
from dragonfly.http.router import ApiRouter
from dragonfly.templates.model import FORMATS, parse_template
from dragonfly.templates.registry import TemplateCatalog

api = ApiRouter()

_TEMPLATE_BODY: dict[str, Any] = {
    "type": "object", "required": ["slug", "name", "family"],
    "properties": {
        "slug": {"type": "string"}, "name": {"type": "string"},
        "family": {"type": "string"}, "version": {"type": "string"},
        "arch": {"type": "string"}, "url": {"type": "string"},
        "local_path": {"type": "string"},
        "format": {"type": "string", "enum": list(FORMATS)},
        "checksum": {"type": "string"}, "checksum_url": {"type": "string"},
        "checksum_algorithm": {"type": "string", "enum": ["sha256", "sha512"]},
        "checksum_name": {"type": "string"}, "root_label": {"type": "string"},
        "root_parttype": {"type": "string"}, "root_fstype": {"type": "string"},
        "uefi_loader": {"type": "string"}, "default_user": {"type": "string"},
        "ssh_keys": {"type": "array", "items": {"type": "string"}},
        "kernel_args": {"type": "string"}, "user_data": {"type": "string"},
        "phone_home_timeout": {"type": "integer"}, "image_bytes": {"type": "integer"},
        "min_disk_bytes": {"type": "integer"}, "description": {"type": "string"}}}

# The token a preview's phone-home URL carries: never a real deployment's.
PREVIEW_ID = "preview"


def _catalog(request: web.Request) -> TemplateCatalog:
    catalog = ctx_of(request).templates
    if catalog is None:
        raise Unavailable("this instance has no template catalog")
    return catalog


@api.get("/api/templates", "OS templates that can be deployed: built-in, from files in the "
         "state dir, and custom ones", "templates")
async def list_templates(request: web.Request) -> list[dict[str, Any]]:
    return [t.to_dict() for t in await _catalog(request).list()]


@api.get("/api/templates/{slug}", "One OS template", "templates")
async def get_template(request: web.Request) -> dict[str, Any]:
    return (await _catalog(request).get(request.match_info["slug"])).to_dict()


@api.post("/api/templates", "Create a custom OS template (validated)", "templates",
          access="admin", status=201, body=_TEMPLATE_BODY)
async def create_template(request: web.Request) -> web.Response:
    template = parse_template(await read_object(request))
    await _catalog(request).create(template)
    return json_response(template.to_dict(), status=201)


@api.put("/api/templates/{slug}", "Create or replace a custom OS template (built-in and file "
         "templates are read-only)", "templates", access="admin", body=_TEMPLATE_BODY)
async def put_template(request: web.Request) -> dict[str, Any]:
    template = parse_template(await read_object(request), slug=request.match_info["slug"])
    return (await _catalog(request).put(template)).to_dict()


@api.delete("/api/templates/{slug}", "Delete a custom OS template", "templates",
            access="admin")
async def delete_template(request: web.Request) -> dict[str, Any]:
    slug = request.match_info["slug"]
    await _catalog(request).delete(slug)
    return {"ok": True, "slug": slug}


@api.post("/api/templates/reload", "Read the template files in <state dir>/templates again",
          "templates", access="admin")
async def reload_templates(request: web.Request) -> dict[str, Any]:
    return await _catalog(request).reload()


@api.post("/api/templates/{slug}/preview", "The cloud-init seed (meta-data, user-data, "
          "network-config) a deployment of this template would write for a machine",
          "templates", access="admin", body={
              "type": "object", "required": ["machine_id"], "properties": {
                  "machine_id": {"type": "string"},
                  "options": {"type": "object", "description": "the deploy options: hostname, "
                              "ssh_keys, user_data, network (and disk, not used here)"}}})
async def preview_seed(request: web.Request) -> dict[str, str]:
    """Answers {"meta-data": ..., "user-data": ..., "network-config": ...}, the files'
    text, with a placeholder deployment id and phone-home token ("preview")."""
    from dragonfly.templates.seed import parse_deploy_options, render_seed  # not at start

    ctx = ctx_of(request)
    template = await _catalog(request).get(request.match_info["slug"])
    body = await read_object(request)
    unknown = sorted(set(body) - {"machine_id", "options"})
    if unknown:
        raise InvalidInput(f"unknown field{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}; expected machine_id and options")
    machine_id = body.get("machine_id")
    if not isinstance(machine_id, str) or not machine_id:
        raise InvalidInput("machine_id is required: the machine to preview the seed for")
    options = parse_deploy_options(body.get("options") or {})
    machine = ctx.fleet.get_machine(machine_id)
    phone_home = f"{request.url.origin()}/api/phone-home/{PREVIEW_ID}"
    return render_seed(template, machine, options, deployment_id=PREVIEW_ID,
                       phone_home_url=phone_home)
