"""First-run setup: is it done, and the one-time setup token that proves who runs the server.

``dragonfly serve`` issues a fresh token at every start while setup is incomplete and prints it;
only its SHA-256 is stored. The first-run wizard must present it to create the first admin.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from dragonfly.config import Config
from dragonfly.store import Put, Store, open_store

SETUP = "setup"
STATE_KEY = "state"
TOKEN_KEY = "token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


async def is_complete(store: Store) -> bool:
    doc = await store.get(SETUP, STATE_KEY)
    return doc is not None and bool(doc.data.get("complete"))


async def issue_token(store: Store, now: float) -> str:
    token = secrets.token_hex(16)  # 128 bits, easy to read out and paste
    await store.put(SETUP, TOKEN_KEY, {"hash": _digest(token), "issued_at": now})
    return token


async def token_matches(store: Store, presented: object) -> bool:
    if not isinstance(presented, str) or not presented.strip():
        return False
    doc = await store.get(SETUP, TOKEN_KEY)
    if doc is None:
        return False
    return hmac.compare_digest(str(doc.data.get("hash", "")), _digest(presented))


def completion_ops(by: str, now: float, via: str, first: bool = False) -> list[Put]:
    """The writes that mark setup complete and retire the token (commit with the admin).
    ``first``: fail (RevisionMismatch) if another request completed setup meanwhile."""
    return [Put(SETUP, STATE_KEY, {"complete": True, "at": now, "by": by, "via": via},
                expect_rev=0 if first else None),
            Put(SETUP, TOKEN_KEY, {"hash": "", "used_at": now})]


async def _issue_for(config: Config) -> str | None:
    store = open_store(config.state_dir)
    await store.open()
    try:
        if await is_complete(store):
            return None
        return await issue_token(store, time.time())
    finally:
        await store.close()


def setup_banner(config: Config, url: str) -> str:
    """Text for ``dragonfly serve`` to print at start: the setup token while setup is
    incomplete, nothing after. Runs its own short event loop: call it before the server's."""
    token = asyncio.run(_issue_for(config))
    if token is None:
        return ""
    return (f"First-run setup is not complete. Open {url.rstrip('/')}/setup and enter this "
            f"one-time setup token:\n\n    Setup token: {token}\n\n"
            "(A new token is issued at every start until setup is done.)\n")

