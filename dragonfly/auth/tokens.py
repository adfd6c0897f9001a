"""API tokens for automation: documents of kind ``token``.

A token reads ``dft_<id>_<secret>``: the id finds the document, the secret is checked against
its SHA-256 (256 random bits: a plain hash is enough at rest). The full token is shown once, at
creation. A token's role is its creator's role or less, fixed at creation and capped again at
every use by the creator's current role, so demoting or removing a person also curbs their
tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dragonfly.errors import InvalidInput, NotFound
from dragonfly.store import Delete, Store

TOKEN = "token"
PREFIX = "dft_"
TOKEN_ROLES = ("admin", "user", "viewer")
_RANK = {"viewer": 1, "user": 2, "admin": 3}
_SHAPE = re.compile(r"^dft_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
TOUCH_EVERY = 600.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class ApiToken:
    id: str
    name: str
    role: str
    user: str
    created_at: float
    expires_at: float | None
    hash: str
    last_used: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiToken:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def public(self) -> dict[str, Any]:
        data = self.to_dict()
        del data["hash"]
        return data

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


_FIELDS = set(ApiToken.__dataclass_fields__)


def capped_role(token_role: str, creator_role: str) -> str:
    """The lower of the two roles."""
    return token_role if _RANK[token_role] <= _RANK.get(creator_role, 0) else creator_role


class Tokens:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def create(self, user: str, user_role: str, name: object, role: object,
                     expires_days: object) -> tuple[str, ApiToken]:
        if not isinstance(name, str) or not name.strip() or len(name) > 100 \
                or not name.isprintable():
            raise InvalidInput("a token needs a name: printable text of at most 100 characters")
        if role in (None, ""):
            role = user_role
        if role not in TOKEN_ROLES:
            raise InvalidInput(f"token role must be one of {', '.join(TOKEN_ROLES)}")
        assert isinstance(role, str)
        if _RANK[role] > _RANK.get(user_role, 0):
            raise InvalidInput(f"a {user_role} cannot create a token with the {role} role: a "
                               "token carries its creator's role or less")
        if isinstance(expires_days, bool) or not isinstance(expires_days, int) \
                or not 0 <= expires_days <= 3650:
            raise InvalidInput("expires_days must be a whole number of days from 0 (never) to "
                               "3650")
        now = self.clock()
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        token = ApiToken(token_id, name.strip(), role, user, now,
                         now + expires_days * 86400 if expires_days else None, _digest(secret))
        await self.store.put(TOKEN, token_id, token.to_dict(), expect_rev=0)
        return f"{PREFIX}{token_id}_{secret}", token

    async def authenticate(self, presented: str) -> ApiToken | None:
        """The live token for the presented string, or None (malformed, unknown, expired)."""
        match = _SHAPE.match(presented.strip())
        if match is None:
            return None
        token_id, secret = match.groups()
        doc = await self.store.get(TOKEN, token_id)
        if doc is None:
            return None
        token = ApiToken.from_dict(doc.data)
        if not hmac.compare_digest(token.hash, _digest(secret)):
            return None
        now = self.clock()
        if token.expired(now):
            return None
        if token.last_used is None or now - token.last_used >= TOUCH_EVERY:
            token.last_used = now
            await self.store.put(TOKEN, token.id, token.to_dict())
        return token

    async def get(self, token_id: str) -> ApiToken:
        doc = await self.store.get(TOKEN, token_id)
        if doc is None:
            raise NotFound(f"no token {token_id!r}")
        return ApiToken.from_dict(doc.data)

    async def list(self, user: str | None = None) -> list[ApiToken]:
        tokens = [ApiToken.from_dict(d.data) for d in await self.store.list(TOKEN)]
        if user is not None:
            tokens = [t for t in tokens if t.user == user]
        return sorted(tokens, key=lambda t: t.created_at)

    async def revoke(self, token_id: str) -> ApiToken:
        token = await self.get(token_id)
        await self.store.delete(TOKEN, token_id)
        return token

    async def delete_for_user(self, user: str) -> int:
        doomed = [t.id for t in await self.list(user)]
        if doomed:
            await self.store.commit([Delete(TOKEN, i) for i in doomed])
        return len(doomed)
