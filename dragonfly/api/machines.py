"""Machines, tags, workflows and history: the JSON API the panel is built on."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth.guard import (
    all_locks,
    guard_delete,
    guard_lifecycle_action,
    lock_of,
    remove_lock,
)
from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.context import ctx_of
from dragonfly.domain.fleet import SORT_KEYS, summary
from dragonfly.domain.model import (
    ACTION_ACCESS,
    OPERATOR_ACTIONS,
    Machine,
    State,
    allowed_transitions,
    new_id,
    normalise_mac,
    validate_tags,
)
from dragonfly.domain.naming import memorable_name
from dragonfly.errors import Conflict, InvalidInput, Unavailable
from dragonfly.http.errors import int_query, json_response, read_object
from dragonfly.http.router import ApiRouter, Param

api = ApiRouter()

_TAG_LIST = {"type": "array", "items": {"type": "string", "maxLength": 64}}


def _actor(request: web.Request) -> str:
    """Who is acting, for history lines ("alice", "token:ci", "demo:admin" ...)."""
    return caller_of(request).actor


@api.get("/api/machines", "List and search machines", "machines", params=(
    Param("q", help="Search words matched against name, tags, MACs, IP, serial, vendor, model"),
    Param("state", enum=tuple(s.value for s in State)),
    Param("tag", help="Only machines carrying this tag"),
    Param("sort", enum=tuple(SORT_KEYS)),
    Param("order", enum=("asc", "desc")),
    Param("limit", type="integer"), Param("offset", type="integer")))
async def list_machines(request: web.Request) -> dict[str, Any]:
    q = request.query
    page = ctx_of(request).fleet.list_machines(
        q=q.get("q", ""), state=q.get("state", ""), tag=q.get("tag", ""),
        sort=q.get("sort", "name"), order=q.get("order", "asc"),
        limit=int_query(request, "limit", 100, 1, 10_000),
        offset=int_query(request, "offset", 0, 0, 10_000_000))
    # Locks are their own documents: each row carries its machine's (None when unlocked).
    locks = await all_locks(ctx_of(request).store)
    return {"items": [{**summary(m), "lock": locks.get(m.id)} for m in page.items],
            "total": page.total, "states": page.states}


@api.post("/api/machines", "Register a machine by MAC before it boots (for selective DHCP "
          "mode and pre-staged tags)", "machines", access="admin", status=201,
          body={"type": "object", "required": ["mac"], "properties": {
              "mac": {"type": "string"}, "name": {"type": "string"}, "tags": _TAG_LIST,
              "role": {"type": "string"}, "bmc": {"type": "object"}}})
async def register_machine(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await read_object(request)
    raw_mac = body.get("mac")
    if not isinstance(raw_mac, str):
        raise InvalidInput("mac is required, e.g. \"52:54:00:12:34:56\"")
    mac = normalise_mac(raw_mac)
    existing = ctx.fleet.find_machine([mac])
    if existing is not None:
        raise Conflict(f"{mac} already belongs to {existing.name}", {"id": existing.id})
    name = body.get("name") or memorable_name(mac)
    role = body.get("role", "")
    for field, value in (("name", name), ("role", role)):
        if not isinstance(value, str) or len(value) > 63 or not value.isprintable():
            raise InvalidInput(f"{field} must be printable text of at most 63 characters")
    machine = Machine(id=new_id(), name=name.strip(), state=State.DISCOVERED, mac=mac,
                      macs=[mac], tags=validate_tags(body.get("tags", [])), role=role.strip())
    machine = await ctx.fleet.add_machine(
        machine, f"Registered by {_actor(request) or 'an operator'} before first boot")
    return json_response(summary(machine), status=201)


@api.get("/api/machines/{id}", "One machine with its full inventory", "machines")
async def get_machine(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    data = machine.to_dict()
    data["actions"] = allowed_transitions(machine.state)
    data["lock"] = await lock_of(ctx.store, machine.id)
    return data


@api.delete("/api/machines/{id}", "Delete a machine from the inventory (guarded)", "machines",
            access="admin", guard=guard_delete)
async def delete_machine(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine_id = request.match_info["id"]
    await ctx.fleet.delete_machine(machine_id)
    await remove_lock(ctx.store, machine_id)
    ctx.commands.forget(machine_id)  # no order waits for a machine that is gone
    if ctx.power is not None:
        await ctx.power.delete_bmc(machine_id)  # its record (and encrypted password) too
    return {"ok": True, "id": machine_id}


@api.patch("/api/machines/{id}", "Rename a machine or set its role", "machines", access="user",
           body={"type": "object", "properties": {"name": {"type": "string"},
                                                  "role": {"type": "string"}}})
async def patch_machine(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    unknown = set(body) - {"name", "role"}
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} here")
    changes: dict[str, str] = {}
    for field in ("name", "role"):
        if field in body:
            value = body[field]
            if not isinstance(value, str) or len(value) > 63 or not value.isprintable():
                raise InvalidInput(f"{field} must be printable text of at most 63 characters")
            if field == "name" and not value.strip():
                raise InvalidInput("name cannot be empty")
            changes[field] = value.strip()

    def mutate(machine: Any) -> Any:
        for key, value in changes.items():
            setattr(machine, key, value)
        return None
    machine = await ctx_of(request).fleet.update_machine(request.match_info["id"], mutate)
    return summary(machine)


@api.put("/api/machines/{id}/tags", "Replace a machine's tags", "tags", access="user",
         body={"type": "object", "required": ["tags"], "properties": {"tags": _TAG_LIST}})
async def put_tags(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    if "tags" not in body:
        raise InvalidInput("expected {\"tags\": [...]}")
    machine = await ctx_of(request).fleet.set_tags(request.match_info["id"], body["tags"],
                                                   _actor(request))
    return summary(machine)


@api.post("/api/machines/bulk/tags", "Add and remove tags on many machines", "tags",
          access="user", body={"type": "object", "required": ["ids"], "properties": {
              "ids": {"type": "array", "items": {"type": "string"}},
              "add": _TAG_LIST, "remove": _TAG_LIST}})
async def bulk_tags(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    machines = await ctx_of(request).fleet.bulk_tags(
        body.get("ids"), body.get("add", []), body.get("remove", []), _actor(request))
    return {"updated": len(machines), "items": [summary(m) for m in machines]}


def _action_access(request: web.Request) -> str:
    return ACTION_ACCESS.get(request.match_info.get("action", ""), "admin")


@api.post("/api/machines/{id}/actions/{action}", "Move a machine through its lifecycle "
          "(users may adopt; the rest is for admins)", "machines", access="user",
          access_for=_action_access, guard=guard_lifecycle_action, params=(
              Param("action", "path", required=True, enum=OPERATOR_ACTIONS),),
          body={"type": "object", "properties": {
              "template": {"type": "string"}, "reason": {"type": "string"},
              "options": {"type": "object", "description": "deploy and reimage: hostname, "
                          "ssh_keys (list), user_data (cloud-config text), disk (/dev path, "
                          "serial:..., wwn:...), network", "properties": {
                              "hostname": {"type": "string"},
                              "ssh_keys": {"type": "array", "items": {"type": "string"}},
                              "user_data": {"type": "string"}, "disk": {"type": "string"},
                              "network": {"type": "object"}}}}})
async def machine_action(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    action = request.match_info["action"]
    if action not in OPERATOR_ACTIONS:
        raise InvalidInput(f"{action!r} is not an action an operator can take",
                           {"actions": list(OPERATOR_ACTIONS)})
    body = await read_object(request) if request.can_read_body else {}
    machine = ctx.fleet.get_machine(request.match_info["id"])
    if action in ("deploy", "reimage"):
        slug = body.get("template")
        if not isinstance(slug, str) or not slug:
            raise InvalidInput("template is required: the slug of an OS template "
                               "(GET /api/templates)")
        if ctx.runner is None:
            raise Unavailable("this instance has no deployment engine: machines can be "
                              "discovered and tagged, not deployed")
        await ctx.runner.start_deployment(machine, action, slug, actor=_actor(request),
                                          options=body.get("options"))
        power = await _reimage_through_bmc(request, machine.id) if action == "reimage" else None
        machine = ctx.fleet.get_machine(machine.id)
        if power is not None:
            data = machine.to_dict()
            data["actions"] = allowed_transitions(machine.state)
            data["bmc_boot"] = power
            return data
    else:
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise InvalidInput("reason must be text of at most 500 characters")
        machine = await ctx.fleet.transition(machine.id, action, reason, actor=_actor(request))
    data = machine.to_dict()
    data["actions"] = allowed_transitions(machine.state)
    return data


async def _reimage_through_bmc(request: web.Request, machine_id: str) -> dict[str, Any]:
    """An Installed machine sits in its OS: one-time PXE and a power cycle through its BMC
    make the deployment run unattended. Without a capable BMC the deployment waits for the
    machine's next network boot, and the answer says so."""
    ctx = ctx_of(request)
    if ctx.power is None:
        return {"attempted": False, "ok": False, "ops": [],
                "error": "power control is not available: boot the machine from the network"}
    result = await ctx.power.boot_into_pxe(machine_id)
    if result["attempted"]:
        await auth_of(request).audit(
            "machine.power.reimage", caller_of(request), machine=machine_id,
            outcome="ok" if result["ok"] else "failed",
            detail={"ops": result["ops"], "error": result["error"]})
    message = (f"Reimage: one-time network boot and {result['ops'][-1]} through the BMC"
               if result["ok"] else f"Reimage: {result['error']}")
    await ctx.fleet.record(machine_id, "power", message, {"actor": _actor(request), **result})
    return result


@api.get("/api/machines/{id}/history", "A machine's event history, newest first", "machines",
         params=(Param("limit", type="integer"),))
async def machine_history(request: web.Request) -> list[dict[str, Any]]:
    limit = int_query(request, "limit", 200, 1, 1000)
    events = await ctx_of(request).fleet.history(request.match_info["id"], limit)
    return [e.to_dict() for e in events]


@api.get("/api/machines/{id}/workflows", "A machine's workflows, newest first", "workflows")
async def machine_workflows(request: web.Request) -> list[dict[str, Any]]:
    fleet = ctx_of(request).fleet
    fleet.get_machine(request.match_info["id"])
    return [w.to_dict() for w in await fleet.list_workflows(request.match_info["id"])]


@api.get("/api/tags", "Every tag in use, with how many machines carry it", "tags")
async def list_tags(request: web.Request) -> list[dict[str, Any]]:
    return ctx_of(request).fleet.tag_counts()


@api.put("/api/tags/{tag}", "Rename a tag on every machine", "tags", access="user",
         body={"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})
async def rename_tag(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    count = await ctx_of(request).fleet.rename_tag(request.match_info["tag"], body.get("name"),
                                                   _actor(request))
    return {"updated": count}


@api.delete("/api/tags/{tag}", "Remove a tag from every machine", "tags", access="user")
async def delete_tag(request: web.Request) -> dict[str, Any]:
    count = await ctx_of(request).fleet.delete_tag(request.match_info["tag"], _actor(request))
    return {"updated": count}


@api.get("/api/workflows", "Workflows, newest first", "workflows", params=(
    Param("machine"), Param("state", enum=("pending", "running", "succeeded", "failed")),
    Param("limit", type="integer")))
async def list_workflows(request: web.Request) -> list[dict[str, Any]]:
    fleet = ctx_of(request).fleet
    machine = request.query.get("machine", "")
    if machine:
        fleet.get_machine(machine)
    flows = await fleet.list_workflows(machine, request.query.get("state", ""),
                                       int_query(request, "limit", 100, 1, 1000))
    return [w.to_dict() for w in flows]


@api.get("/api/workflows/{id}", "One workflow with its actions", "workflows")
async def get_workflow(request: web.Request) -> dict[str, Any]:
    return (await ctx_of(request).fleet.get_workflow(request.match_info["id"])).to_dict()
