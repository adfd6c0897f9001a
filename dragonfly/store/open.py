"""Where the installed appliance keeps its store, and the one place that opens it.

Every command that reads or writes the installed appliance's records (``serve``, ``user``,
the first-run token, ``status``) goes through ``open_store``, so a second backend (etcd, for
distributed mode) is chosen here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from dragonfly.errors import DragonflyError
from dragonfly.store.base import Store
from dragonfly.store.sqlite import SqliteStore

DB_NAME = "dragonfly.db"


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def prepare_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise DragonflyError(f"cannot create the state directory {state_dir}: "
                             f"{exc.strerror}") from None
    if not os.access(state_dir, os.W_OK):
        raise DragonflyError(f"the state directory {state_dir} is not writable by this user")


def open_store(state_dir: Path, *, readonly: bool = False) -> Store:
    """The store of the installation whose state dir is ``state_dir`` (not yet opened: call
    ``await store.open()``). ``readonly``: never creates, migrates or writes the database
    (``dragonfly status``); opening fails when it does not exist."""
    if not readonly:
        prepare_state_dir(state_dir)
    return SqliteStore(db_path(state_dir), readonly=readonly)
