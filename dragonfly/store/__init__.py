"""Storage: the ``Store`` interface, its backends, and ``open_store`` for the installation's."""

from dragonfly.store.base import Change, Delete, Doc, Put, RevisionMismatch, Store, Watch
from dragonfly.store.open import DB_NAME, db_path, open_store, prepare_state_dir
from dragonfly.store.sqlite import SqliteStore

__all__ = ["DB_NAME", "Change", "Delete", "Doc", "Put", "RevisionMismatch", "SqliteStore",
           "Store", "Watch", "db_path", "open_store", "prepare_state_dir"]
