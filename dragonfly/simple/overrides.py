"""Operators' overrides of an OS template's answer file: the whole jinja2 text, kept in the
store per template slug, checked before it is kept (syntax) and whenever it is rendered
(strict facts, no plaintext password)."""

from __future__ import annotations

import time
from typing import Any

from dragonfly.simple.render import check_override
from dragonfly.store import Store

KIND = "answer_override"


async def get_override(store: Store, slug: str) -> dict[str, Any] | None:
    doc = await store.get(KIND, slug)
    return None if doc is None else dict(doc.data)


async def set_override(store: Store, slug: str, family: str, text: object, by: str
                       ) -> dict[str, Any]:
    data = {"text": check_override(family, text), "by": by, "at": time.time()}
    await store.put(KIND, slug, data)
    return data


async def delete_override(store: Store, slug: str) -> bool:
    return await store.delete(KIND, slug)
