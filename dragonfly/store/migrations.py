"""Versioned schema migrations for the sqlite backend.

Each migration runs once, in order, inside a transaction; ``PRAGMA user_version`` records how
far a database has come. Append new migrations; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def _v1_documents(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('revision', '0')")
    db.execute(
        "CREATE TABLE docs (kind TEXT NOT NULL, key TEXT NOT NULL, rev INTEGER NOT NULL,"
        " data TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID"
    )


def _v2_revision_index(db: sqlite3.Connection) -> None:
    # Lets a resyncing watcher ask "what changed since revision N" cheaply.
    db.execute("CREATE INDEX docs_rev ON docs (rev)")


MIGRATIONS: list[Migration] = [_v1_documents, _v2_revision_index]
LATEST = len(MIGRATIONS)


def current_version(db: sqlite3.Connection) -> int:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version)


def migrate(db: sqlite3.Connection, target: int = LATEST) -> list[int]:
    """Bring ``db`` to ``target``; return the versions applied. Refuses to downgrade."""
    version = current_version(db)
    if version > LATEST:
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this Dragonfly "
            f"understands ({LATEST}); upgrade Dragonfly instead of downgrading it"
        )
    applied = []
    for number in range(version + 1, target + 1):
        with db:  # one transaction per migration: a failure leaves the previous version intact
            MIGRATIONS[number - 1](db)
            db.execute(f"PRAGMA user_version = {number}")
        applied.append(number)
    return applied
