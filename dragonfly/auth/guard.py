"""The molly guard: global safety mode and per-node locks.

Both block what cannot be undone: lifecycle actions that rewrite a disk (``destructive`` in the
lifecycle table), deleting a machine, and power control. The auth middleware applies
``guard_destructive`` to every such API request; other code that acts on machines (power, bulk
actions) calls it too before acting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.domain.model import DESTRUCTIVE_ACTIONS
from dragonfly.errors import Locked
from dragonfly.http.router import Route
from dragonfly.store import Store

if TYPE_CHECKING:
    from dragonfly.context import AppContext

SAFETY = "safety"
SAFETY_KEY = "global"
LOCK = "lock"


async def safety_state(store: Store) -> dict[str, Any]:
    doc = await store.get(SAFETY, SAFETY_KEY)
    if doc is None:
        return {"enabled": False, "reason": "", "by": "", "since": None}
    return {"enabled": bool(doc.data.get("enabled")), "reason": doc.data.get("reason", ""),
            "by": doc.data.get("by", ""), "since": doc.data.get("since")}


async def set_safety(store: Store, enabled: bool, reason: str, by: str, now: float
                     ) -> dict[str, Any]:
    data = {"enabled": enabled, "reason": reason if enabled else "", "by": by, "since": now}
    await store.put(SAFETY, SAFETY_KEY, data)
    return data


async def lock_of(store: Store, machine_id: str) -> dict[str, Any] | None:
    doc = await store.get(LOCK, machine_id)
    return None if doc is None else dict(doc.data)


async def all_locks(store: Store) -> dict[str, dict[str, Any]]:
    return {d.key: dict(d.data) for d in await store.list(LOCK)}


async def set_lock(store: Store, machine_id: str, reason: str, by: str, now: float
                   ) -> dict[str, Any]:
    data = {"machine": machine_id, "reason": reason, "by": by, "since": now}
    await store.put(LOCK, machine_id, data)
    return data


async def remove_lock(store: Store, machine_id: str) -> bool:
    return await store.delete(LOCK, machine_id)


async def guard_destructive(ctx: AppContext, machine_id: str, what: str) -> None:
    """Raise Locked (HTTP 423, with the reason) when safety mode or a lock forbids ``what``
    (e.g. "reimage", "delete", "power off") on ``machine_id``; return quietly otherwise."""
    safety = await safety_state(ctx.store)
    if safety["enabled"]:
        reason = safety["reason"] or "no reason given"
        raise Locked(f"safety mode is on: {what} is disabled for every machine ({reason}). "
                     "An administrator can turn safety mode off in Security.",
                     {"safety": safety, "what": what, "machine": machine_id})
    lock = await lock_of(ctx.store, machine_id)
    if lock is not None:
        reason = lock.get("reason") or "no reason given"
        raise Locked(f"machine {machine_id} is locked by {lock.get('by') or 'someone'}: {what} "
                     f"is refused until it is unlocked ({reason})",
                     {"lock": lock, "what": what, "machine": machine_id})


def destructive_request(route: Route, request: web.Request) -> tuple[str, str] | None:
    """(machine id, what) when this API request would wipe, delete or power-control a
    machine, as its route declares (``Route.guard``), else None."""
    if route.guard is None:
        return None
    what = route.guard(request)
    return None if what is None else (request.match_info.get("id", ""), what)


# Guards for routes to declare.

def guard_lifecycle_action(request: web.Request) -> str | None:
    """A lifecycle action that rewrites a disk (``destructive`` in the table)."""
    action = request.match_info.get("action", "")
    return action if action in DESTRUCTIVE_ACTIONS else None


def guard_delete(request: web.Request) -> str:
    return "delete"

