"""The Store interface: documents with revisions and a change feed.

Shaped after etcd's model (keys grouped by kind, a global revision that every write bumps,
compare-and-set on a document's revision, prefix ranges, watches) so that an etcd backend is a
second implementation of this class, not a rewrite. Contract tests in ``tests/test_store.py``
run against every backend.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dragonfly.errors import Conflict


@dataclass(frozen=True, slots=True)
class Doc:
    kind: str
    key: str
    rev: int  # the global revision of the write that produced this version
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    op: Literal["put", "delete"]
    kind: str
    key: str
    rev: int
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Put:
    kind: str
    key: str
    data: dict[str, Any]
    expect_rev: int | None = None  # None: any; 0: must not exist; n: must be at revision n


@dataclass(frozen=True, slots=True)
class Delete:
    kind: str
    key: str
    expect_rev: int | None = None


Op = Put | Delete


class RevisionMismatch(Conflict):
    """A compare-and-set write lost a race: the document changed since it was read."""


class Watch:
    """One subscriber's view of the change feed.

    Bounded: a consumer that falls more than ``maxsize`` changes behind is told so through
    ``overflowed`` and should re-read its state instead of trusting the feed.
    """

    def __init__(self, store: Store, kinds: frozenset[str] | None, maxsize: int) -> None:
        self._store = store
        self.kinds = kinds
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def _offer(self, change: Change) -> None:
        if self.kinds is not None and change.kind not in self.kinds:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        self._store._watches.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Change]:
        while True:
            change = await self.queue.get()
            if change is None:
                return
            yield change


class Store(ABC):
    """Abstract document store. Every method is async; backends keep blocking I/O off the loop."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._listeners: list[Callable[[Change], None]] = []

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    async def get(self, kind: str, key: str) -> Doc | None: ...

    @abstractmethod
    async def list(self, kind: str, prefix: str = "", *, limit: int | None = None,
                   reverse: bool = False) -> builtins.list[Doc]:
        """Documents of ``kind`` whose key starts with ``prefix``, ordered by key."""

    @abstractmethod
    async def count(self, kind: str, prefix: str = "") -> int: ...

    @abstractmethod
    async def commit(self, ops: Iterable[Op]) -> builtins.list[Change]:
        """Apply all ``ops`` atomically or none (RevisionMismatch names the first that failed)."""

    async def put(self, kind: str, key: str, data: dict[str, Any], *,
                  expect_rev: int | None = None) -> Doc:
        (change,) = await self.commit([Put(kind, key, data, expect_rev)])
        assert change.data is not None
        return Doc(kind, key, change.rev, change.data)

    async def delete(self, kind: str, key: str, *, expect_rev: int | None = None) -> bool:
        changes = await self.commit([Delete(kind, key, expect_rev)])
        return bool(changes)

    def watch(self, kinds: Iterable[str] | None = None, maxsize: int = 10_000) -> Watch:
        watch = Watch(self, frozenset(kinds) if kinds is not None else None, maxsize)
        self._watches.add(watch)
        return watch

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` synchronously for every change, before ``commit`` returns.

        For in-memory mirrors that must never be staler than the writer's own next read.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Change], None]) -> None:
        self._listeners.remove(listener)

    def _publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            for listener in self._listeners:
                listener(change)
            for watch in list(self._watches):
                watch._offer(change)

    def _close_watches(self) -> None:
        for watch in list(self._watches):
            watch.close()
