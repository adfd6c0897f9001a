"""Storage: the ``Store`` interface and its backends."""

from dragonfly.store.base import Change, Delete, Doc, Put, RevisionMismatch, Store, Watch
from dragonfly.store.sqlite import SqliteStore

__all__ = ["Change", "Delete", "Doc", "Put", "RevisionMismatch", "SqliteStore", "Store", "Watch"]
