"""Power over the API: a machine's power status and actions, its BMC record (the password is
write-only), "test connection", and bulk actions. Power actions are admin-only, refused with
423 under safety mode or a node lock (the route's guard), and audited as
``machine.power.<op>`` (the middleware audits what it lets through and what the guard stops;
these handlers add the failures, and bulk actions audit each machine)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dragonfly.auth.guard import guard_destructive
from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.context import ctx_of
from dragonfly.errors import DragonflyError, InvalidInput, Locked, NotFound, Unavailable
from dragonfly.http.errors import read_object
from dragonfly.http.router import ApiRouter, Param
from dragonfly.power import PowerControl
from dragonfly.power.drivers import ACTIONS
from dragonfly.power.drivers.base import PowerError

api = ApiRouter()

_STR = {"type": "string"}
MAX_BULK = 10_000
OP = Param("op", "path", required=True, enum=ACTIONS,
           help="on, off (hard), soft_off (ACPI), reset, cycle, boot_pxe, boot_disk (once)")
BMC_BODY: dict[str, Any] = {"type": "object", "properties": {
    "driver": {"type": "string", "enum": ["ipmi", "redfish", "wol", "openjbod", "fake"]},
    "address": _STR, "port": {"type": "integer", "minimum": 0, "maximum": 65535},
    "user": _STR, "password": {"type": "string", "writeOnly": True},
    "system": _STR, "ca_pem": _STR, "insecure": {"type": "boolean"},
    "mac": _STR, "broadcast": _STR, "enclosure": _STR}}


def guard_power(request: web.Request) -> str:
    """The molly guard's name for a power action: "power on", "power cycle" ..."""
    return f"power {request.match_info.get('op', '')}"


def power_of(request: web.Request) -> PowerControl:
    power = ctx_of(request).power
    if power is None:
        raise Unavailable("power control is not available on this instance")
    return power


def _machine(request: web.Request) -> str:
    return ctx_of(request).fleet.get_machine(request.match_info["id"]).id


@api.get("/api/power/drivers", "The power drivers and what each supports", "power")
async def list_drivers(request: web.Request) -> list[dict[str, Any]]:
    return power_of(request).drivers()


@api.get("/api/power", "Power status of every machine with a BMC (the list's power column)",
         "power")
async def list_power(request: web.Request) -> list[dict[str, Any]]:
    return await power_of(request).all_status()


@api.get("/api/machines/{id}/power", "A machine's power: state, supported operations, last poll",
         "power")
async def get_power(request: web.Request) -> dict[str, Any]:
    return await power_of(request).status(_machine(request))


@api.post("/api/machines/{id}/power/{op}", "Power action through the machine's BMC", "power",
          params=(OP,), access="admin", guard=guard_power)
async def post_power(request: web.Request) -> dict[str, Any]:
    power = power_of(request)
    machine, op = _machine(request), request.match_info["op"]
    try:
        return await power.act(machine, op)
    except PowerError as exc:
        await auth_of(request).audit(f"machine.power.{op}", caller_of(request), machine=machine,
                                     outcome="failed", detail={"reason": exc.reason,
                                                               "error": exc.message})
        raise


@api.get("/api/machines/{id}/bmc", "A machine's BMC record (never its password); without "
         "one, ``configured`` is false and ``suggested`` holds the BMC its agent reported",
         "power", access="admin")
async def get_bmc(request: web.Request) -> dict[str, Any]:
    power = power_of(request)
    machine = ctx_of(request).fleet.get_machine(request.match_info["id"])
    try:
        return {**await power.get_bmc(machine.id), "configured": True}
    except NotFound:
        pass
    reported = machine.bmc or {}
    kind = str(reported.get("type", "")).lower()
    suggested = ({"driver": "redfish" if kind == "redfish" else "ipmi",
                  "address": str(reported["ip"])} if reported.get("ip") else {})
    return {"machine": machine.id, "configured": False, "suggested": suggested}


@api.put("/api/machines/{id}/bmc", "Set a machine's BMC record (the password is write-only)",
         "power", access="admin", body=BMC_BODY)
async def put_bmc(request: web.Request) -> dict[str, Any]:
    power = power_of(request)
    machine = _machine(request)
    record = await power.set_bmc(machine, await read_object(request))
    await auth_of(request).audit("bmc.set", caller_of(request), machine=machine, detail={
        "driver": record["driver"], "address": record["address"],
        "password_set": record["has_password"]})
    return record


@api.delete("/api/machines/{id}/bmc", "Remove a machine's BMC record", "power", access="admin")
async def delete_bmc(request: web.Request) -> dict[str, Any]:
    power = power_of(request)
    machine = _machine(request)
    if await power.delete_bmc(machine):
        await auth_of(request).audit("bmc.delete", caller_of(request), machine=machine)
    return {"machine": machine, "configured": False}


@api.post("/api/machines/{id}/bmc/test", "Test the connection to a machine's BMC", "power",
          access="admin")
async def test_bmc(request: web.Request) -> dict[str, Any]:
    return await power_of(request).test_bmc(_machine(request))


@api.get("/api/power/adoptions", "Adoptions from a BMC: waiting, linked or failed", "power",
         access="admin")
async def list_adoptions(request: web.Request) -> list[dict[str, Any]]:
    return power_of(request).adoptions.all()


@api.post("/api/power/adopt", "Adopt a machine never seen from its BMC: one-time PXE and power "
          "on; the agent's reported BMC address links the record to the machine", "power",
          access="admin", body=BMC_BODY)
async def adopt(request: web.Request) -> dict[str, Any]:
    adoptions = power_of(request).adoptions
    body = await read_object(request)
    try:
        result = await adoptions.adopt(body)
    except DragonflyError as exc:
        await auth_of(request).audit("bmc.adopt", caller_of(request), outcome="failed",
                                     detail={"address": str(body.get("address", ""))[:255],
                                             "error": exc.message})
        raise
    await auth_of(request).audit(
        "bmc.adopt", caller_of(request), outcome="ok" if result["state"] != "failed"
        else "failed", detail={"adoption": result["id"], "driver": result["driver"],
                               "address": result["address"], "error": result["reason"]})
    if result["state"] == "failed":
        reason = str(result["steps"][-1].get("reason", "protocol")) if result["steps"] else ""
        raise PowerError(f"cannot power on the BMC at {result['address']}: {result['reason']}",
                         reason, {"reason": reason, "adoption": result})
    return result


@api.get("/api/power/adoptions/{adoption}", "One adoption from a BMC", "power",
         access="admin")
async def get_adoption(request: web.Request) -> dict[str, Any]:
    return power_of(request).adoptions.get(request.match_info["adoption"])


@api.delete("/api/power/adoptions/{adoption}", "Forget an adoption (the BMC record it made "
            "for a machine stays)", "power", access="admin")
async def delete_adoption(request: web.Request) -> dict[str, Any]:
    adoption = request.match_info["adoption"]
    await power_of(request).adoptions.remove(adoption)
    await auth_of(request).audit("bmc.adopt.delete", caller_of(request),
                                 detail={"adoption": adoption})
    return {"id": adoption, "deleted": True}


@api.post("/api/power/bulk/{op}", "A power action on many machines, each guarded on its own",
          "power", params=(OP,), access="admin",
          body={"type": "object", "required": ["machines"],
                "properties": {"machines": {"type": "array", "items": _STR}}})
async def bulk_power(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    power = power_of(request)
    op = request.match_info["op"]
    if op not in ACTIONS:
        raise InvalidInput(f"unknown power operation {op!r}: one of {', '.join(ACTIONS)}")
    body = await read_object(request)
    machines = body.get("machines")
    if (not isinstance(machines, list) or not all(isinstance(m, str) for m in machines)
            or not 0 < len(machines) <= MAX_BULK):
        raise InvalidInput(f"machines must be a list of 1 to {MAX_BULK} machine ids")
    auth, caller = auth_of(request), caller_of(request)
    action, what = f"machine.power.{op}", f"power {op}"
    slots = asyncio.Semaphore(16)

    async def one(machine: str) -> dict[str, Any]:
        async with slots:
            try:
                ctx.fleet.get_machine(machine)
                await guard_destructive(ctx, machine, what)
            except Locked as exc:
                await auth.audit(action, caller, machine=machine, outcome="denied",
                                 detail={"blocked_by": "guard", "bulk": True})
                return {"machine": machine, "ok": False, "status": exc.status,
                        "error": exc.message}
            except DragonflyError as exc:
                return {"machine": machine, "ok": False, "status": exc.status,
                        "error": exc.message}
            try:
                await power.act(machine, op)
            except DragonflyError as exc:
                await auth.audit(action, caller, machine=machine, outcome="failed",
                                 detail={"error": exc.message, "bulk": True})
                return {"machine": machine, "ok": False, "status": exc.status,
                        "error": exc.message}
            await auth.audit(action, caller, machine=machine, detail={"bulk": True})
            return {"machine": machine, "ok": True, "status": 200, "error": ""}

    results = await asyncio.gather(*(one(m) for m in dict.fromkeys(machines)))
    return {"op": op, "ok": sum(r["ok"] for r in results), "failed":
            sum(not r["ok"] for r in results), "results": list(results)}


# --- OpenJBOD enclosures -----------------------------------------------------------------------

ENCLOSURE_BODY: dict[str, Any] = {"type": "object", "properties": {
    "name": _STR, "address": _STR, "port": {"type": "integer", "minimum": 0, "maximum": 65535},
    "user": _STR, "password": {"type": "string", "writeOnly": True}, "ca_pem": _STR,
    "insecure": {"type": "boolean"}, "machines": {"type": "array", "items": _STR}}}
ENCLOSURE_OP = Param("op", "path", required=True, enum=("on", "off", "cycle"),
                     help="switch the enclosure's power supply")


@api.get("/api/enclosures", "OpenJBOD enclosures (never their passwords)", "power",
         access="admin")
async def list_enclosures(request: web.Request) -> list[dict[str, Any]]:
    enclosures = power_of(request).enclosures
    return [enclosures.public(name) for name in enclosures.names()]


@api.post("/api/enclosures", "Register an OpenJBOD enclosure and attach machines to it",
          "power", access="admin", body=ENCLOSURE_BODY)
async def create_enclosure(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidInput("name is required: the enclosure's name, e.g. shelf-1")
    made = await power_of(request).enclosures.put(name, body, create=True)
    await auth_of(request).audit("enclosure.set", caller_of(request), detail={
        "enclosure": name, "address": made["address"], "machines": made["machines"]})
    return made


@api.get("/api/enclosures/{name}", "One enclosure's record (never its password)", "power",
         access="admin")
async def get_enclosure(request: web.Request) -> dict[str, Any]:
    return power_of(request).enclosures.public(request.match_info["name"])


@api.put("/api/enclosures/{name}", "Change an enclosure (the password is write-only) or the "
         "machines attached to it", "power", access="admin", body=ENCLOSURE_BODY)
async def put_enclosure(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    made = await power_of(request).enclosures.put(name, await read_object(request),
                                                  create=False)
    await auth_of(request).audit("enclosure.set", caller_of(request), detail={
        "enclosure": name, "address": made["address"], "machines": made["machines"]})
    return made


@api.delete("/api/enclosures/{name}", "Forget an enclosure", "power", access="admin")
async def delete_enclosure(request: web.Request) -> dict[str, Any]:
    name = request.match_info["name"]
    await power_of(request).enclosures.remove(name)
    await auth_of(request).audit("enclosure.delete", caller_of(request),
                                 detail={"enclosure": name})
    return {"name": name, "deleted": True}


@api.get("/api/machines/{id}/enclosures", "The enclosures a machine is attached to, with their "
         "state and health asked of their controllers now", "power")
async def machine_enclosures(request: web.Request) -> list[dict[str, Any]]:
    enclosures = power_of(request).enclosures
    names = enclosures.of_machine(_machine(request))
    return list(await asyncio.gather(*(enclosures.status(n) for n in names)))


@api.post("/api/enclosures/{name}/power/{op}", "Switch an enclosure's power; refused with 423 "
          "when safety mode is on or any attached machine is locked", "power",
          params=(ENCLOSURE_OP,), access="admin")
async def enclosure_power(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    enclosures = power_of(request).enclosures
    name, op = request.match_info["name"], request.match_info["op"]
    machines = enclosures.machines(name)
    auth, caller = auth_of(request), caller_of(request)
    action = f"enclosure.power.{op}"
    try:
        for machine in machines or [""]:
            await guard_destructive(ctx, machine, f"enclosure {name} power {op}")
    except Locked:
        await auth.audit(action, caller, outcome="denied",
                         detail={"enclosure": name, "machines": machines})
        raise
    try:
        result = await enclosures.act(name, op)
    except DragonflyError as exc:
        await auth.audit(action, caller, outcome="failed",
                         detail={"enclosure": name, "error": exc.message})
        raise
    await auth.audit(action, caller, detail={"enclosure": name, "machines": machines})
    return result
