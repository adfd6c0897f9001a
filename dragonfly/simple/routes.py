"""Simple mode over the JSON API: each OS template's answer file (the built-in template, the
operator's override), and the preview of what a machine would be served."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.context import ctx_of
from dragonfly.errors import InvalidInput, NotFound, Unavailable
from dragonfly.http.errors import read_object
from dragonfly.http.router import ApiRouter
from dragonfly.simple.names import ANSWER_FILES, KINDS, OPTION_KEYS
from dragonfly.templates.model import OsTemplate

# The answer files' renderer and checks, the install spec and the installers' table are
# imported by the handlers that use them: the app's start only registers these routes.

api = ApiRouter()

PREVIEW_CALLBACK = "/simple/progress/preview"


async def _template(request: web.Request) -> OsTemplate:
    from dragonfly.simple.installers import iso_template

    catalog = ctx_of(request).templates
    template = iso_template(request.match_info["slug"])  # Proxmox VE: not in the catalog
    if template is None:
        if catalog is None:
            raise Unavailable("this instance has no template catalog")
        template = await catalog.get(request.match_info["slug"])
    if template.family not in ANSWER_FILES:
        raise NotFound(f"{template.slug} is a {template.family} template: Simple mode has "
                       f"answer files for {', '.join(ANSWER_FILES)}")
    return template


@api.get("/api/simple/answers/{slug}", "The answer-file template of an OS template "
         "(preseed, autoinstall or kickstart): built-in text and the override, if any",
         "simple")
async def get_answer_template(request: web.Request) -> dict[str, Any]:
    from dragonfly.simple.overrides import get_override
    from dragonfly.simple.render import builtin_template

    template = await _template(request)
    override = await get_override(ctx_of(request).store, template.slug)
    return {"slug": template.slug, "family": template.family, "kind": KINDS[template.family],
            "file": ANSWER_FILES[template.family], "builtin": builtin_template(template.family),
            "override": override, "options": list(OPTION_KEYS)}


@api.put("/api/simple/answers/{slug}/override", "Replace an OS template's answer file with a "
         "jinja2 template of your own (checked; never a plaintext password)", "simple",
         access="admin", body={"type": "object", "required": ["text"],
                               "properties": {"text": {"type": "string"}}})
async def put_answer_override(request: web.Request) -> dict[str, Any]:
    from dragonfly.simple.overrides import set_override

    template = await _template(request)
    body = await read_object(request)
    ctx = ctx_of(request)
    data = await set_override(ctx.store, template.slug, template.family, body.get("text"),
                              caller_of(request).actor)
    await auth_of(request).audit("simple.answer.override", caller_of(request),
                                 detail={"slug": template.slug, "chars": len(data["text"])})
    return {"slug": template.slug, "override": data}


@api.delete("/api/simple/answers/{slug}/override", "Go back to the built-in answer file",
            "simple", access="admin")
async def delete_answer_override(request: web.Request) -> dict[str, Any]:
    from dragonfly.simple.overrides import delete_override

    template = await _template(request)
    removed = await delete_override(ctx_of(request).store, template.slug)
    if removed:
        await auth_of(request).audit("simple.answer.override.delete", caller_of(request),
                                     detail={"slug": template.slug})
    return {"slug": template.slug, "removed": removed}


@api.post("/api/simple/answers/{slug}/preview", "The answer file a machine would be served "
          "for this template and these install options (``text`` previews an unsaved "
          "override)", "simple", access="user", body={
              "type": "object", "required": ["machine_id"], "properties": {
                  "machine_id": {"type": "string"}, "text": {"type": "string"},
                  "options": {"type": "object", "description": "install options: "
                              + ", ".join(OPTION_KEYS)}}})
async def preview_answer(request: web.Request) -> dict[str, Any]:
    from dragonfly.simple.overrides import get_override
    from dragonfly.simple.render import render_answer
    from dragonfly.simple.spec import build_spec

    template = await _template(request)
    body = await read_object(request)
    unknown = sorted(set(body) - {"machine_id", "options", "text"})
    if unknown:
        raise InvalidInput(f"unknown field{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}; expected machine_id, options and text")
    machine_id = body.get("machine_id")
    if not isinstance(machine_id, str) or not machine_id:
        raise InvalidInput("machine_id is required: the machine to preview the answer for")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("options must be an object")
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(machine_id)
    text = body.get("text")
    if text is None:
        saved = await get_override(ctx.store, template.slug)
        text = saved["text"] if saved else None
    mirror = ctx.simple.mirror_for(template.slug, template.family) if ctx.simple else ""
    spec = build_spec(machine, template.family, template.version, options,
                      callback=f"{request.url.origin()}{PREVIEW_CALLBACK}", preview=True,
                      default_mirror=mirror)
    return {"slug": template.slug, "kind": KINDS[template.family],
            "file": ANSWER_FILES[template.family], "override": text is not None,
            "text": render_answer(spec, text if isinstance(text, str) else None)}
