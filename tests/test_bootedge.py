"""The boot edge applies stored boot settings (first-run wizard) and rebuilds on change.

DHCP itself is kept off here (binding UDP 67 outside a lab namespace would answer the host's
real network); the lab tests run it for real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dragonfly.boot.log import BootLog
from dragonfly.config import Config
from dragonfly.domain.fleet import Fleet
from dragonfly.edge.service import BootEdge
from dragonfly.store import SqliteStore


async def test_stored_settings_apply_and_changes_rebuild(tmp_path: Path) -> None:
    store = SqliteStore(":memory:")
    await store.open()
    config = Config.load(None, env={}, overrides={"server.state_dir": str(tmp_path),
                                                  "boot.dhcp_mode": "off",
                                                  "boot.address": "192.0.2.1"})
    await store.put("setting", "boot.address", {"value": "192.0.2.7"})
    fleet = Fleet(store)
    await fleet.start()
    edge = BootEdge(config, store, fleet, BootLog(store), pinned={"boot.dhcp_mode": "off"})
    try:
        values = await edge.effective_settings()
        assert values["boot.address"] == "192.0.2.7"  # the wizard's choice over the file
        await edge.start()
        assert edge.stack is not None and edge.stack.dhcp is None
        assert edge.stack.address == "192.0.2.7"
        await store.put("setting", "boot.address", {"value": "192.0.2.9"})
        for _ in range(100):
            if edge.stack is not None and edge.stack.address == "192.0.2.9":
                break
            await asyncio.sleep(0.01)
        assert edge.stack is not None and edge.stack.address == "192.0.2.9"
        # A flag given on the command line wins: stored changes to it change nothing.
        await store.put("setting", "boot.dhcp_mode", {"value": "auto"})
        await asyncio.sleep(0.05)
        assert (await edge.effective_settings())["boot.dhcp_mode"] == "off"
        assert edge.stack is not None and edge.stack.dhcp is None
    finally:
        await edge.stop()
        fleet.stop()
        await store.close()


async def test_boot_networks_rebuild_only_when_changed(tmp_path: Path) -> None:
    """The Security page saves its whole form: a boot setting stored again unchanged must not
    restart DHCP and TFTP; a real change does."""
    store = SqliteStore(":memory:")
    await store.open()
    config = Config.load(None, env={}, overrides={"server.state_dir": str(tmp_path),
                                                  "boot.dhcp_mode": "off",
                                                  "boot.address": "192.0.2.1"})
    fleet = Fleet(store)
    await fleet.start()
    edge = BootEdge(config, store, fleet, BootLog(store))
    try:
        await edge.start()
        first = edge.stack
        await store.put("setting", "boot.allowed_networks", {"value": []})  # as before
        await asyncio.sleep(0.05)
        assert edge.stack is first
        await store.put("setting", "boot.allowed_networks", {"value": ["10.0.0.0/24"]})
        for _ in range(100):
            if edge.stack is not None and edge.stack is not first:
                break
            await asyncio.sleep(0.01)
        assert edge.stack is not None and edge.stack is not first
    finally:
        await edge.stop()
        fleet.stop()
        await store.close()
