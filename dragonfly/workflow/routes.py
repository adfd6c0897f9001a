"""Deployments over HTTP: the agent's side of the protocol (next action, reports, the seed),
the installed OS's one-time phone-home, and the operator's abort."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.auth.middleware import caller_of
from dragonfly.context import ctx_of
from dragonfly.edge.routes import base_url
from dragonfly.errors import InvalidInput, Unavailable
from dragonfly.http.errors import read_object
from dragonfly.http.router import ApiRouter

if TYPE_CHECKING:  # the engine is the server's (ctx.deployments): the demo runs none
    from dragonfly.workflow.engine import DeploymentEngine

api = ApiRouter()

MAX_FORM_BYTES = 64 * 1024


def _engine(request: web.Request) -> DeploymentEngine:
    engine = ctx_of(request).deployments
    if engine is None:
        raise Unavailable("this instance runs no deployment engine (the demo simulates "
                          "deployments)")
    return engine


@api.get("/api/agent/workflows/{id}/next", "The discovery agent's next deployment action "
         "(flat JSON; docs/deployment-protocol.md)", "agent", access="agent")
async def next_action(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    return await _engine(request).next_for_agent(request.match_info["id"],
                                                 base_url(request, ctx.config))


@api.post("/api/agent/workflows/{id}/actions/{index}", "The agent reports an action's "
          "progress, success or failure", "agent", access="agent",
          body={"type": "object", "required": ["state"], "properties": {
              "state": {"type": "string", "enum": ["running", "succeeded", "failed"]},
              "message": {"type": "string"}, "log": {"type": "string"},
              "bytes_done": {"type": "integer"}, "bytes_total": {"type": "integer"},
              "rate": {"type": "number"}}})
async def report_action(request: web.Request) -> dict[str, Any]:
    raw = request.match_info["index"]
    if not raw.isdigit():
        raise InvalidInput("the action index must be a number")
    body = await read_object(request)
    return await _engine(request).report(request.match_info["id"], int(raw), body)


@api.get("/api/agent/workflows/{id}/seed/{name}", "A file of the deployment's cloud-init "
         "NoCloud seed (meta-data, user-data, network-config)", "agent", access="agent")
async def seed_file(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    text = await _engine(request).seed_file(request.match_info["id"], request.match_info["name"],
                                            base_url(request, ctx.config))
    return web.Response(text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


@api.post("/api/phone-home/{id}/{token}", "The installed OS reports its first boot (cloud-init "
          "phone_home: form fields hostname, fqdn, instance_id, pub_key_*); one-time",
          "agent", access="agent")
async def phone_home(request: web.Request) -> dict[str, Any]:
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise InvalidInput("the phone-home form is too large")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await _engine(request).phone_home(request.match_info["id"],
                                             request.match_info["token"], fields)


@api.post("/api/workflows/{id}/abort", "Abort a running deployment: the machine is Failed "
          "with 'aborted by ...'", "workflows", access="admin")
async def abort_workflow(request: web.Request) -> dict[str, Any]:
    if request.can_read_body:
        await read_object(request)
    ctx = ctx_of(request)
    workflow_id, actor = request.match_info["id"], caller_of(request).actor
    if ctx.tinkerbell is not None and (await ctx.fleet.get_workflow(workflow_id)).engine \
            == "tinkerbell":
        return (await ctx.tinkerbell.abort(workflow_id, actor)).to_dict()  # deletes the Workflow
    if ctx.simple is not None and (await ctx.fleet.get_workflow(workflow_id)).engine \
            == "simple":
        return (await ctx.simple.abort(workflow_id, actor)).to_dict()
    wf = await _engine(request).abort(workflow_id, actor)
    return wf.to_dict()
