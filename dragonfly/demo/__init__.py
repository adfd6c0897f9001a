"""The demo: the real application over a simulated fleet, in memory, on loopback only."""

from __future__ import annotations

from dragonfly.agent.checkin import AgentCommands
from dragonfly.app import AppContext
from dragonfly.bootlog import BootLog
from dragonfly.config import Config
from dragonfly.demo.simulator import Simulator
from dragonfly.events import EventHub
from dragonfly.fleet import Fleet
from dragonfly.store import SqliteStore


def demo_context(seed: int = 7, tick: float = 1.0) -> AppContext:
    store = SqliteStore(":memory:")
    fleet = Fleet(store)
    bootlog = BootLog(store)
    commands = AgentCommands()
    simulator = Simulator(fleet, seed=seed, tick=tick, bootlog=bootlog, commands=commands)
    return AppContext(config=Config.defaults(), store=store, fleet=fleet,
                      events=EventHub(store), demo=True, services=[simulator, bootlog],
                      runner=simulator, bootlog=bootlog,
                      extras={"agent.commands": commands,
                              "boot.status": simulator.boot_edge.status})
