"""Server-side panel sessions: documents of kind ``session``.

The browser holds a random 256-bit id in an HttpOnly cookie; the store holds only its SHA-256,
so a copy of the database does not let anyone ride live sessions. Each session has its own CSRF
token. Expiry is checked on every lookup: idle (no request for a while) and absolute (hours
since sign-in). ``seen_at`` is written back at most once a minute, not on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dragonfly.store import Delete, Store

SESSION = "session"
COOKIE = "dragonfly_session"
TOUCH_EVERY = 60.0


def session_key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Session:
    key: str
    user: str
    created_at: float
    seen_at: float
    csrf: str
    address: str = ""
    agent: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})


_FIELDS = set(Session.__dataclass_fields__)


class Sessions:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def create(self, user: str, address: str = "", agent: str = "") -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(session_key(sid), user, now, now, secrets.token_urlsafe(24), address,
                          agent[:200])
        await self.store.put(SESSION, session.key, session.to_dict(), expect_rev=0)
        return sid, session

    async def lookup(self, sid: str, idle: float, max_age: float) -> Session | None:
        """The live session for cookie value ``sid``, or None (unknown, idle or too old)."""
        if not sid or len(sid) > 100:
            return None
        key = session_key(sid)
        doc = await self.store.get(SESSION, key)
        if doc is None:
            return None
        session = Session.from_dict(doc.data)
        now = self.clock()
        if now - session.seen_at > idle or now - session.created_at > max_age:
            await self.store.delete(SESSION, key)
            return None
        if now - session.seen_at >= TOUCH_EVERY:
            session.seen_at = now
            await self.store.put(SESSION, key, session.to_dict())
        return session

    async def delete(self, key: str) -> None:
        await self.store.delete(SESSION, key)

    async def for_user(self, user: str) -> list[Session]:
        return [s for s in (Session.from_dict(d.data) for d in await self.store.list(SESSION))
                if s.user == user]

    async def delete_for_user(self, user: str, keep: str = "") -> int:
        doomed = [s.key for s in await self.for_user(user) if s.key != keep]
        if doomed:
            await self.store.commit([Delete(SESSION, key) for key in doomed])
        return len(doomed)

    async def purge_expired(self, idle: float, max_age: float) -> int:
        now = self.clock()
        doomed = [d.key for d in await self.store.list(SESSION)
                  if now - d.data.get("seen_at", 0) > idle
                  or now - d.data.get("created_at", 0) > max_age]
        if doomed:
            await self.store.commit([Delete(SESSION, key) for key in doomed])
        return len(doomed)
