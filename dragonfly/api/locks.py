"""Node locks over the API: lock a machine so nothing rewrites, deletes or powers it until
it is unlocked (the molly guard in ``auth.guard`` enforces them)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth import guard
from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.context import ctx_of
from dragonfly.http.errors import read_object, reason_of
from dragonfly.http.router import ApiRouter

api = ApiRouter()

_STR = {"type": "string"}


@api.get("/api/locks", "Every locked machine", "machines")
async def list_locks(request: web.Request) -> list[dict[str, Any]]:
    return list((await guard.all_locks(ctx_of(request).store)).values())


@api.get("/api/machines/{id}/lock", "A machine's lock (null when unlocked)", "machines")
async def get_lock(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    ctx.fleet.get_machine(request.match_info["id"])
    return {"lock": await guard.lock_of(ctx.store, request.match_info["id"])}


@api.put("/api/machines/{id}/lock", "Lock a machine: no reimage, delete or power actions",
         "machines", access="user", body={"type": "object", "properties": {"reason": _STR}})
async def put_lock(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    body = await read_object(request) if request.can_read_body else {}
    reason = reason_of(body)
    caller = caller_of(request)
    lock = await guard.set_lock(ctx.store, machine.id, reason, caller.actor,
                                auth_of(request).now())
    await ctx.fleet.record(machine.id, "lock", f"Locked by {caller.actor}"
                           + (f": {reason}" if reason else ""), {"actor": caller.actor})
    await auth_of(request).audit("lock", caller, machine=machine.id, detail={"reason": reason})
    return {"lock": lock}


@api.delete("/api/machines/{id}/lock", "Unlock a machine", "machines", access="admin")
async def delete_lock(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    caller = caller_of(request)
    if await guard.remove_lock(ctx.store, machine.id):
        await ctx.fleet.record(machine.id, "lock", f"Unlocked by {caller.actor}",
                               {"actor": caller.actor})
        await auth_of(request).audit("unlock", caller, machine=machine.id)
    return {"lock": None}
