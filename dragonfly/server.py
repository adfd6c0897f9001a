"""The installed appliance's composition: the store on disk and the boot services."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dragonfly.app import AppContext
from dragonfly.bootstack import BootStack, build_boot_stack
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
    stack = build_boot_stack(config, store, fleet)
    ctx = AppContext(config=config, store=store, fleet=fleet, events=EventHub(store),
                     demo=False, services=stack.services, bootlog=stack.bootlog)
    ctx.extras["boot.stack"] = stack
    ctx.extras["boot.observer"] = stack.bootlog.record
    return ctx


def readiness_report(ctx: AppContext) -> str:
    """What `dragonfly serve` says at start: which boot parts run and what is missing."""
    from dragonfly.agent.routes import discovery_status

    stack: BootStack = ctx.extras["boot.stack"]
    lines = []
    if stack.dhcp is None:
        lines.append("DHCP: off (boot.dhcp_mode = off): machines will not PXE-boot from here")
    else:
        lines.append(f"DHCP: {stack.dhcp.mode} mode on {stack.interface or 'all interfaces'}, "
                     f"machines boot from {stack.address}")
        lines += [f"  {line}" for line in stack.loaders.describe()]
    discovery = discovery_status(ctx.config)
    if discovery["ready"]:
        lines.append(f"Discovery environment: ready in {discovery['dir']}")
    else:
        lines.append(f"Discovery environment: MISSING {', '.join(discovery['missing'])}")
        lines += [f"  {line}" for line in str(discovery["how_to_obtain"]).splitlines()]
    return "\n".join(lines) + "\n"
