"""The change feed as server-sent events.

Every panel tab holds one ``/api/events`` stream. Each stream is its own bounded watch on the
store, so a slow browser never holds back a fast one; a stream that falls too far behind is told
to reload (``event: resync``) instead of being fed a partial picture.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from dragonfly.boot.log import BOOT
from dragonfly.domain.fleet import HISTORY, MACHINE, WORKFLOW, summary
from dragonfly.domain.model import Machine
from dragonfly.images.model import DOWNLOAD, IMAGE
from dragonfly.power.service import POWER
from dragonfly.store import Change, Store, Watch

# Only what every reader may see. Never users, sessions, tokens, audit, settings or setup.
STREAM_KINDS = (MACHINE, WORKFLOW, HISTORY, BOOT, "lock", "safety", "boot_edge", IMAGE,
                DOWNLOAD, POWER, "tinkerbell_cluster")
HEARTBEAT_SECONDS = 15.0


class EventHub:
    def __init__(self, store: Store, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.store = store
        self.heartbeat = heartbeat
        self._watches: set[Watch] = set()
        self._stopping = False

    def start(self) -> None:
        self._stopping = False

    async def stop(self) -> None:
        self._stopping = True
        for watch in list(self._watches):
            watch.close()
        self._watches.clear()

    @property
    def subscribers(self) -> int:
        return len(self._watches)

    async def stream(self) -> AsyncIterator[bytes]:
        """SSE frames for one client, until the hub stops or the client goes away."""
        watch = self.store.watch(STREAM_KINDS, maxsize=2000)
        self._watches.add(watch)
        try:
            yield b"retry: 2000\nevent: hello\ndata: {}\n\n"
            while not self._stopping:
                try:
                    change = await asyncio.wait_for(watch.queue.get(), self.heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if change is None:
                    return
                if watch.overflowed:
                    yield b"event: resync\ndata: {}\n\n"
                    return
                yield encode_change(change)
        finally:
            self._watches.discard(watch)
            watch.close()


def encode_change(change: Change) -> bytes:
    payload: dict[str, Any] = {"op": change.op, "id": change.key, "rev": change.rev}
    if change.data is not None:
        if change.kind == MACHINE:
            payload["data"] = summary(Machine.from_dict(change.data))
        else:
            payload["data"] = change.data
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {change.kind}\nid: {change.rev}\ndata: {body}\n\n".encode()
