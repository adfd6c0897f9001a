"""The installed appliance's composition: the store on disk and the boot services."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dragonfly.app import AppContext
from dragonfly.config import Config
from dragonfly.errors import DragonflyError
from dragonfly.events import EventHub
from dragonfly.fleet import Fleet
from dragonfly.store import SqliteStore

log = logging.getLogger(__name__)

DB_NAME = "dragonfly.db"


def prepare_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise DragonflyError(f"cannot create the state directory {state_dir}: "
                             f"{exc.strerror}") from None
    if not os.access(state_dir, os.W_OK):
        raise DragonflyError(f"the state directory {state_dir} is not writable by this user")


def server_context(config: Config) -> AppContext:
    prepare_state_dir(config.state_dir)
    store = SqliteStore(config.state_dir / DB_NAME)
    fleet = Fleet(store)
    return AppContext(config=config, store=store, fleet=fleet, events=EventHub(store),
                      demo=False)
