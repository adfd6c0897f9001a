"""Contract tests for the Store interface, run against every backend (sqlite file and memory).

A future etcd backend joins the ``store`` fixture's parameters and must pass the same tests.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dragonfly.store import Change, Delete, Put, RevisionMismatch, SqliteStore, Store
from dragonfly.store.migrations import LATEST, MIGRATIONS, migrate


@pytest.fixture(params=["memory", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = SqliteStore(":memory:" if request.param == "memory" else tmp_path / "t.db")
    await backend.open()
    yield backend
    await backend.close()


async def test_put_get_and_revisions(store: Store) -> None:
    first = await store.put("machine", "a", {"n": 1})
    second = await store.put("machine", "b", {"n": 2})
    assert second.rev == first.rev + 1
    got = await store.get("machine", "a")
    assert got is not None and got.data == {"n": 1} and got.rev == first.rev
    assert await store.get("machine", "zzz") is None
    assert await store.get("other", "a") is None


async def test_compare_and_set(store: Store) -> None:
    doc = await store.put("machine", "a", {"v": 1}, expect_rev=0)
    with pytest.raises(RevisionMismatch):
        await store.put("machine", "a", {"v": 2}, expect_rev=0)
    with pytest.raises(RevisionMismatch):
        await store.put("machine", "a", {"v": 2}, expect_rev=doc.rev + 100)
    updated = await store.put("machine", "a", {"v": 2}, expect_rev=doc.rev)
    assert updated.rev > doc.rev
    current = await store.get("machine", "a")
    assert current is not None and current.data == {"v": 2}


async def test_commit_is_atomic(store: Store) -> None:
    await store.put("machine", "a", {"v": 1})
    with pytest.raises(RevisionMismatch):
        await store.commit([Put("machine", "b", {"v": 1}), Put("machine", "a", {"v": 9},
                                                              expect_rev=0)])
    assert await store.get("machine", "b") is None
    current = await store.get("machine", "a")
    assert current is not None and current.data == {"v": 1}


async def test_prefix_scan_order_limit_reverse(store: Store) -> None:
    for key in ["m1.3", "m1.1", "m2.1", "m1.2", "m10.1", "m1%.1"]:
        await store.put("history", key, {"k": key})
    keys = [d.key for d in await store.list("history", "m1.")]
    assert keys == ["m1.1", "m1.2", "m1.3"]
    assert [d.key for d in await store.list("history", "m1.", reverse=True, limit=2)] == [
        "m1.3", "m1.2"]
    assert await store.count("history", "m1.") == 3
    assert await store.count("history") == 6
    # Prefix matching is literal: % and _ are not wildcards.
    assert [d.key for d in await store.list("history", "m1%")] == ["m1%.1"]


async def test_delete(store: Store) -> None:
    doc = await store.put("machine", "a", {})
    assert not await store.delete("machine", "missing")
    with pytest.raises(RevisionMismatch):
        await store.delete("machine", "a", expect_rev=doc.rev + 1)
    assert await store.delete("machine", "a", expect_rev=doc.rev)
    assert await store.get("machine", "a") is None


async def test_watch_and_listeners(store: Store) -> None:
    seen: list[Change] = []
    store.add_listener(seen.append)
    watch = store.watch(["machine"])
    await store.put("machine", "a", {"x": 1})
    await store.put("workflow", "w", {"x": 2})  # filtered out of this watch
    await store.commit([Delete("machine", "a")])
    received = [await asyncio.wait_for(watch.queue.get(), 1) for _ in range(2)]
    assert [(c.op, c.kind, c.key) for c in received if c] == [
        ("put", "machine", "a"), ("delete", "machine", "a")]
    assert watch.queue.empty()
    # Listeners run synchronously, before commit returns, for every kind.
    assert [(c.op, c.kind) for c in seen] == [("put", "machine"), ("put", "workflow"),
                                             ("delete", "machine")]
    store.remove_listener(seen.append)
    watch.close()


async def test_watch_overflow_is_reported(store: Store) -> None:
    watch = store.watch(maxsize=2)
    for i in range(5):
        await store.put("machine", str(i), {})
    assert watch.overflowed
    watch.close()


async def test_file_store_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    first = SqliteStore(path)
    await first.open()
    doc = await first.put("machine", "a", {"name": "kept"})
    await first.close()
    second = SqliteStore(path)
    await second.open()
    again = await second.get("machine", "a")
    assert again is not None and again.data == {"name": "kept"} and again.rev == doc.rev
    nxt = await second.put("machine", "b", {})
    assert nxt.rev == doc.rev + 1  # the revision counter survives restarts too
    assert second.schema_version == LATEST
    await second.close()


def test_migrations_upgrade_old_database_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    migrate(db, target=1)
    db.execute("INSERT INTO docs (kind, key, rev, data) VALUES ('machine', 'a', 1, '{}')")
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    applied = migrate(db)
    assert applied == list(range(2, LATEST + 1))
    assert db.execute("SELECT count(*) FROM docs").fetchone()[0] == 1
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "docs_rev" in indexes
    assert migrate(db) == []  # idempotent
    db.close()


def test_migrations_refuse_a_newer_database(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this Dragonfly"):
        migrate(db)
    db.close()


async def test_concurrent_readers_and_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    await asyncio.gather(*(store.put("machine", f"m{i}", {"i": i}) for i in range(50)),
                         *(store.list("machine") for _ in range(20)))
    assert await store.count("machine") == 50
    await store.close()
