"""The embedded sqlite backend of ``Store`` (a file in WAL mode, or ``:memory:`` for the demo).

All sqlite calls run off the event loop: writes on one dedicated writer thread (sqlite allows
one writer at a time anyway), reads on a small pool of reader threads with their own
connections. An in-memory database has a single connection, so there everything runs on the
writer thread.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from dragonfly.store.base import Change, Delete, Doc, Op, Put, RevisionMismatch, Store
from dragonfly.store.migrations import current_version, migrate

T = TypeVar("T")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_UPSERT = ("INSERT INTO docs (kind, key, rev, data) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (kind, key) DO UPDATE SET rev = excluded.rev, data = excluded.data")


class SqliteStore(Store):
    def __init__(self, path: str | Path = ":memory:", readers: int = 2, *,
                 readonly: bool = False) -> None:
        super().__init__()
        self.path = str(path)
        self.memory = self.path == ":memory:"
        # Read-only: no file is created, nothing migrated or written (``dragonfly status``).
        self.readonly = readonly and not self.memory
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="dragonfly-sqlite-w")
        self._readers = (
            self._writer if self.memory
            else ThreadPoolExecutor(readers, thread_name_prefix="dragonfly-sqlite-r")
        )
        self._local = threading.local()
        self._write_db: sqlite3.Connection | None = None
        self._reader_dbs: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._version = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._version = await self._run(self._writer, self._open_writer)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                 isolation_level=None)
            db.execute("PRAGMA busy_timeout = 5000")
            return db
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 5000")
        if not self.memory:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _open_writer(self) -> int:
        db = self._connect()
        if self.readonly:
            self._write_db = db  # never written through: commit() refuses below
            return current_version(db)
        # Autocommit (isolation_level=None) everywhere else; migrations want ``with db`` blocks.
        db.isolation_level = "DEFERRED"
        migrate(db)
        db.isolation_level = None
        self._write_db = db
        return current_version(db)

    async def close(self) -> None:
        self._close_watches()
        await self._run(self._writer, self._close_writer)
        if not self.memory:
            for db in self._reader_dbs:
                await self._run(self._readers, db.close)
            self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._write_db is not None:
            self._write_db.close()
            self._write_db = None

    @property
    def schema_version(self) -> int:
        return self._version

    # --- plumbing ----------------------------------------------------------------------------

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _reader(self) -> sqlite3.Connection:
        if self.memory:
            assert self._write_db is not None, "store is not open"
            return self._write_db
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._reader_lock:
                self._reader_dbs.append(db)
        return db

    # --- reads -------------------------------------------------------------------------------

    async def get(self, kind: str, key: str) -> Doc | None:
        return await self._run(self._readers, self._get, kind, key)

    def _get(self, kind: str, key: str) -> Doc | None:
        row = self._reader().execute(
            "SELECT rev, data FROM docs WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else Doc(kind, key, row[0], json.loads(row[1]))

    async def list(self, kind: str, prefix: str = "", *, limit: int | None = None,
                   reverse: bool = False) -> builtins.list[Doc]:
        return await self._run(self._readers, self._list, kind, prefix, limit, reverse)

    def _list(self, kind: str, prefix: str, limit: int | None, reverse: bool) -> builtins.list[Doc]:
        sql = "SELECT key, rev, data FROM docs WHERE kind = ?"
        args: builtins.list[Any] = [kind]
        if prefix:
            # A range scan on the primary key, not LIKE: keys may contain % and _.
            sql += " AND key >= ? AND key < ?"
            args += [prefix, prefix + "\U0010ffff"]
        sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        loads = json.loads
        return [Doc(kind, key, rev, loads(data))
                for key, rev, data in self._reader().execute(sql, args)]

    async def count(self, kind: str, prefix: str = "") -> int:
        return await self._run(self._readers, self._count, kind, prefix)

    def _count(self, kind: str, prefix: str) -> int:
        if prefix:
            row = self._reader().execute(
                "SELECT count(*) FROM docs WHERE kind = ? AND key >= ? AND key < ?",
                (kind, prefix, prefix + "\U0010ffff")).fetchone()
        else:
            row = self._reader().execute(
                "SELECT count(*) FROM docs WHERE kind = ?", (kind,)).fetchone()
        return int(row[0])

    # --- writes ------------------------------------------------------------------------------

    async def commit(self, ops: Iterable[Op]) -> builtins.list[Change]:
        changes = await self._run(self._writer, self._commit, list(ops))
        self._publish(changes)
        return changes

    def _commit(self, ops: builtins.list[Op]) -> builtins.list[Change]:
        db = self._write_db
        if db is None:
            raise RuntimeError("store is not open")
        if self.readonly:
            raise RuntimeError("this store was opened read-only")
        changes: builtins.list[Change] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            (revision,) = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            rev = int(revision) + 1
            for op in ops:
                if isinstance(op, Put) and op.expect_rev is None:
                    # Nothing to check first: a blind write (the boot log's timelines, a
                    # flood's worth at a time) is one statement.
                    db.execute(_UPSERT, (op.kind, op.key, rev, _dumps(op.data)))
                    changes.append(Change("put", op.kind, op.key, rev, op.data))
                    continue
                row = db.execute("SELECT rev FROM docs WHERE kind = ? AND key = ?",
                                 (op.kind, op.key)).fetchone()
                current = 0 if row is None else int(row[0])
                if op.expect_rev is not None and op.expect_rev != current:
                    raise RevisionMismatch(
                        f"{op.kind} {op.key!r} changed since it was read; reload and retry",
                        {"expected": op.expect_rev, "current": current})
                if isinstance(op, Put):
                    db.execute(_UPSERT, (op.kind, op.key, rev, _dumps(op.data)))
                    changes.append(Change("put", op.kind, op.key, rev, op.data))
                elif isinstance(op, Delete) and row is not None:
                    db.execute("DELETE FROM docs WHERE kind = ? AND key = ?", (op.kind, op.key))
                    changes.append(Change("delete", op.kind, op.key, rev, None))
            if changes:
                db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (str(rev),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return changes


