"""The installed appliance's composition: the store on disk and the boot services."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dragonfly.app import AppContext
from dragonfly.bootlog import BootLog
from dragonfly.bootstack import BootEdge
from dragonfly.config import UNBUILT_MODES, Config
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


def server_context(config: Config, pinned: dict[str, Any] | None = None) -> AppContext:
    """``pinned``: settings given as command-line flags, which stored settings cannot override."""
    prepare_state_dir(config.state_dir)
    store = SqliteStore(config.state_dir / DB_NAME)
    fleet = Fleet(store)
    bootlog = BootLog(store)
    edge = BootEdge(config, store, fleet, bootlog, pinned)
    ctx = AppContext(config=config, store=store, fleet=fleet, events=EventHub(store),
                     demo=False, services=[bootlog, edge], bootlog=bootlog)
    ctx.extras["boot.edge"] = edge
    ctx.extras["boot.observer"] = bootlog.record
    ctx.extras["boot.status"] = edge.status
    return ctx


def readiness_report(ctx: AppContext) -> str:
    """What `dragonfly serve` says at start: loaders and the discovery environment."""
    from dragonfly.agent.routes import discovery_status

    edge: BootEdge = ctx.extras["boot.edge"]
    lines = ["Boot loaders:"] + [f"  {line}" for line in edge.loaders.describe()]
    discovery = discovery_status(ctx.config)
    if discovery["ready"]:
        lines.append(f"Discovery environment: ready in {discovery['dir']}")
    else:
        lines.append(f"Discovery environment: MISSING {', '.join(discovery['missing'])}")
        lines += [f"  {line}" for line in str(discovery["how_to_obtain"]).splitlines()]
    if ctx.config["server.mode"] in UNBUILT_MODES:
        lines.append(f"Mode: {ctx.config['server.mode']} is not built yet; machines are "
                     "provisioned as in native mode")
    return "\n".join(lines) + "\n"
