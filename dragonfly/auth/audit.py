"""The audit log: append-only documents of kind ``audit``, keyed by time.

Keys are nanosecond timestamps in fixed-width hex, so the store returns them in time order and
the newest page is a reverse range read with a limit. Nothing updates or deletes an entry
through the API. Entries name who did what, from where, to what, and how it ended; they never
hold secrets (passwords, tokens, TOTP codes).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dragonfly.errors import InvalidInput
from dragonfly.store import Store

AUDIT = "audit"
OUTCOMES = ("ok", "denied", "failed")


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._last = 0

    def _key(self, at: float) -> str:
        # Increasing within this process even if the clock repeats; the random tail keeps two
        # processes (server and CLI) writing in the same nanosecond apart.
        ns = max(int(at * 1e9), self._last + 1)
        self._last = ns
        return f"{ns:016x}-{secrets.token_hex(2)}"

    async def record(self, action: str, *, actor: str = "", role: str = "", via: str = "",
                     address: str = "", machine: str = "", target: str = "",
                     outcome: str = "ok", detail: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
        at = self.clock()
        entry = {"at": at, "action": action, "actor": actor, "role": role, "via": via,
                 "address": address, "machine": machine, "target": target,
                 "outcome": outcome if outcome in OUTCOMES else "failed",
                 "detail": detail or {}}
        key = self._key(at)
        entry["id"] = key
        await self.store.put(AUDIT, key, entry)
        return entry

    async def query(self, *, actor: str = "", action: str = "", machine: str = "",
                    outcome: str = "", since: float | None = None,
                    until: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first. ``action`` matches itself and its sub-actions ("login" matches
        "login.failed")."""
        filtered = any((actor, action, machine, outcome, since is not None, until is not None))
        docs = await self.store.list(AUDIT, reverse=True, limit=None if filtered else limit)
        out: list[dict[str, Any]] = []
        for doc in docs:
            e = doc.data
            if actor and e.get("actor") != actor:
                continue
            if action and not (e.get("action") == action
                               or str(e.get("action", "")).startswith(action + ".")):
                continue
            if machine and e.get("machine") != machine:
                continue
            if outcome and e.get("outcome") != outcome:
                continue
            if since is not None and e.get("at", 0) < since:
                continue
            if until is not None and e.get("at", 0) > until:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out


def parse_time(value: str, name: str) -> float | None:
    """Unix seconds or ISO 8601 (naive means UTC); empty means no bound."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be Unix seconds or an ISO 8601 time, got {value!r}"
                           ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
