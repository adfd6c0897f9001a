"""Accounts: documents of kind ``user`` keyed by name, with roles and their second factor.

Stored secrets (password hash, TOTP secret, recovery code hashes) never leave this module's
``User`` except through ``public()``, which is what the API and the CLI show.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from dragonfly.errors import Conflict, InvalidInput, NotFound
from dragonfly.store import Delete, Put, Store

USER = "user"
ROLES = ("admin", "user")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def validate_username(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput("the account name must be a string")
    clean = name.strip().lower()
    if not _NAME.match(clean):
        raise InvalidInput("an account name is 1-64 characters: letters, digits, '.', '_' or "
                           "'-', starting with a letter or digit", {"name": name})
    return clean


def validate_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", {"role": role})
    assert isinstance(role, str)
    return role


@dataclass
class User:
    name: str
    role: str
    password: str
    created_at: float
    updated_at: float
    created_by: str = ""
    last_login: float | None = None
    totp_secret: str = ""
    totp_pending: str = ""  # an enrollment started but not confirmed with a code yet
    totp_last_step: int = 0
    recovery: list[str] = field(default_factory=list)
    rev: int = field(default=0, compare=False)  # store revision it was read at; not stored

    @property
    def mfa(self) -> bool:
        return bool(self.totp_secret)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["rev"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], rev: int = 0) -> User:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS and k != "rev"}, rev=rev)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "mfa": self.mfa,
                "recovery_codes_left": len(self.recovery) if self.mfa else 0,
                "created_at": self.created_at, "created_by": self.created_by,
                "last_login": self.last_login}


_FIELDS = set(User.__dataclass_fields__)


class Users:
    """Read-modify-write helpers over the store with compare-and-set."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, name: str) -> User | None:
        doc = await self.store.get(USER, name)
        return None if doc is None else User.from_dict(doc.data, doc.rev)

    async def require(self, name: str) -> User:
        user = await self.get(name)
        if user is None:
            raise NotFound(f"no account {name!r}")
        return user

    async def all(self) -> list[User]:
        return [User.from_dict(d.data, d.rev) for d in await self.store.list(USER)]

    async def count_admins(self) -> int:
        return sum(1 for u in await self.all() if u.role == "admin")

    async def create(self, user: User) -> User:
        try:
            await self.store.put(USER, user.name, user.to_dict(), expect_rev=0)
        except Conflict:
            raise Conflict(f"an account named {user.name!r} already exists") from None
        return user

    async def save(self, user: User, extra: list[Put | Delete] | None = None) -> User:
        """Write ``user`` back if nobody changed it since it was read (RevisionMismatch if so).

        Compare-and-set matters for the TOTP replay guard: two sign-ins racing with one code
        must not both see the old ``totp_last_step``.
        """
        changes = await self.store.commit(
            [Put(USER, user.name, user.to_dict(), expect_rev=user.rev or None),
             *(extra or [])])
        user.rev = next(c.rev for c in changes if c.kind == USER and c.key == user.name)
        return user

    async def delete(self, name: str, extra: list[Put | Delete] | None = None) -> None:
        await self.store.commit([Delete(USER, name), *(extra or [])])
