"""The operator's side of the discovery agent: is one waiting on a machine, and telling it to
reboot, power off or boot the local disk.

Commands are queued (``checkin.AgentCommands``) and handed to the agent at its next check-in
or heartbeat, exactly once. Every command restarts or stops the machine, so each passes the
molly guard (safety mode, node locks: 423 with the reason) and is audited as a power action,
refusals included; only admins may give them. A machine with no live agent is a 409 that says
why (see ``checkin.agent_status``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.agent.checkin import COMMANDS, AgentCommands, agent_status
from dragonfly.auth.guard import guard_destructive
from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.context import ctx_of
from dragonfly.domain.model import Machine
from dragonfly.errors import Conflict, InvalidInput, Locked
from dragonfly.http.errors import read_object
from dragonfly.http.router import ApiRouter

if TYPE_CHECKING:
    from dragonfly.context import AppContext

api = ApiRouter()

# What each command does, in the words of the guard's refusal ("safety mode is on: {what} is
# disabled ..."), the audit action (as a power action), and the history line.
WHAT = {"reboot": "reboot", "poweroff": "power off", "localboot": "reboot to the local disk"}
AUDIT_ACTION = {"reboot": "machine.power.reboot", "poweroff": "machine.power.off",
                "localboot": "machine.power.localboot"}
LABEL = {"reboot": "Reboot", "poweroff": "Power off", "localboot": "Boot from the local disk"}


def _status(ctx: AppContext, machine: Machine) -> tuple[dict[str, Any], AgentCommands]:
    status = agent_status(machine, ctx.commands, ctx.fleet.clock(), ctx.poll_seconds,
                          ctx.fleet.active_workflow_of(machine))
    return status, ctx.commands


@api.get("/api/machines/{id}/agent", "Whether a discovery agent is waiting for orders on "
         "this machine (from its heartbeats), and the command queued for it", "machines")
async def get_agent(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    status, _ = _status(ctx, machine)
    return {"machine": machine.id, **status}


@api.post("/api/machines/{id}/agent/commands", "Tell the machine's discovery agent to "
          "reboot, power off or boot its local disk, at its next heartbeat (a power action: "
          "guarded by safety mode and node locks, admins only)", "machines", access="admin",
          status=202, body={"type": "object", "required": ["command"], "properties": {
              "command": {"type": "string", "enum": list(COMMANDS)}}})
async def queue_agent_command(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    body = await read_object(request)
    command = body.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise InvalidInput(f"command must be one of {', '.join(COMMANDS)}",
                           {"commands": list(COMMANDS)})
    auth, caller = auth_of(request), caller_of(request)
    action = AUDIT_ACTION[command]
    try:
        await guard_destructive(ctx, machine.id, WHAT[command])
    except Locked:
        await auth.audit(action, caller, machine=machine.id, outcome="denied",
                         detail={"command": command, "blocked_by": "guard"})
        raise
    status, commands = _status(ctx, machine)
    if not status["live"]:
        await auth.audit(action, caller, machine=machine.id, outcome="failed",
                         detail={"command": command, "reason": status["reason"]})
        raise Conflict(f"cannot {WHAT[command]} {machine.name} through its agent: "
                       f"{status['reason']}. Commands reach machines booted into discovery "
                       "whose agent is waiting for orders.", {"agent": status})
    now = ctx.fleet.clock()
    replaced = commands.queue(machine.id, command, by=caller.actor, at=now)
    note = f" (replaces the pending {replaced.command})" if replaced is not None \
        and replaced.command != command else ""
    await ctx.fleet.record(
        machine.id, "agent", f"{LABEL[command]} requested by {caller.actor}: the agent gets "
        f"it at its next heartbeat{note}",
        {"step": "command_queued", "action": command, "actor": caller.actor,
         "replaced": None if replaced is None else replaced.command})
    await auth.audit(action, caller, machine=machine.id,
                     detail={"command": command, "via": "agent"})
    status, _ = _status(ctx, machine)
    return {"machine": machine.id, "command": command,
            "replaced": None if replaced is None else replaced.to_dict(), "agent": status}


@api.delete("/api/machines/{id}/agent/commands", "Withdraw the command queued for the "
            "machine's agent, if it has not collected it yet", "machines", access="admin")
async def cancel_agent_command(request: web.Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    machine = ctx.fleet.get_machine(request.match_info["id"])
    order = ctx.commands.cancel(machine.id)
    if order is not None:
        caller = caller_of(request)
        await ctx.fleet.record(machine.id, "agent", f"{LABEL[order.command]} withdrawn by "
                               f"{caller.actor} before the agent collected it",
                               {"step": "command_cancelled", "action": order.command,
                                "actor": caller.actor})
        await auth_of(request).audit("machine.agent.cancel", caller, machine=machine.id,
                                     detail={"command": order.command})
    status, _ = _status(ctx, machine)
    return {"machine": machine.id, "cancelled": None if order is None else order.to_dict(),
            "agent": status}
