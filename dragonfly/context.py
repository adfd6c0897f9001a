"""The application's shared context: every service the HTTP handlers and background parts use,
as named, typed fields. Built by ``dragonfly.compose`` (server or demo), read by handlers
through ``ctx_of(request)``.

This module sits at the bottom of the import graph: it imports the types it names only for
the type checker, so any module may import it without pulling in the rest of the appliance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from dragonfly import __version__
from dragonfly.agent.checkin import AgentCommands
from dragonfly.agent.initramfs import AgentSettings
from dragonfly.domain.naming import machine_name
from dragonfly.http.router import ApiRouter

if TYPE_CHECKING:
    from dragonfly.agent.checkin import ResolveName
    from dragonfly.auth.service import AuthService
    from dragonfly.boot.log import BootLog
    from dragonfly.config import Config
    from dragonfly.dnsid.service import DnsIdentity
    from dragonfly.domain.events import EventHub
    from dragonfly.domain.fleet import Fleet
    from dragonfly.domain.model import Machine, Workflow
    from dragonfly.images import ImageStore
    from dragonfly.power import PowerControl
    from dragonfly.simple.engine import SimpleInstaller
    from dragonfly.store import Store
    from dragonfly.templates.registry import TemplateCatalog
    from dragonfly.timer.history import DeploymentHistory
    from dragonfly.tinkerbell.backend import TinkerbellBackend
    from dragonfly.workflow.engine import DeploymentEngine


class Service(Protocol):
    """A background part of the appliance (simulator, DHCP, TFTP ...), started with the app."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class WorkflowRunner(Protocol):
    """Executes deployments. The demo has a simulated one; the agent engine is another."""

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None
                               ) -> Workflow: ...


class BootEdgeView(Protocol):
    """What the HTTP side needs of the boot edge (the installed server's DHCP and TFTP, or the
    demo's simulation of them)."""

    async def status(self) -> dict[str, Any]:
        """The boot doctor's view: per-service state, addresses, counters, what is missing."""
        ...

    async def loader(self, name: str, peer: str, fetching: bool) -> Path | bytes:
        """An iPXE loader for HTTP: raises NotFound for unknown names, Unavailable when the
        edge is not running. ``fetching`` is False for a HEAD (a size probe)."""
        ...


@dataclass
class AppContext:
    config: Config
    store: Store
    fleet: Fleet
    events: EventHub
    demo: bool
    services: list[Service] = field(default_factory=list)
    runner: WorkflowRunner | None = None
    deployments: DeploymentEngine | None = None  # the native engine (also the runner)
    tinkerbell: TinkerbellBackend | None = None  # Tinkerbell mode's runner
    bootlog: BootLog | None = None  # the boot doctor; None where nothing boots
    edge: BootEdgeView | None = None  # DHCP and TFTP; None where there are none
    auth: AuthService | None = None  # create_app makes one when the composition gave none
    commands: AgentCommands = field(default_factory=AgentCommands)
    agent_settings: AgentSettings = field(default_factory=AgentSettings)
    resolve_name: ResolveName = machine_name
    # DNS-driven identity (name, tags, role from PTR/TXT and hostname rules); None: off.
    identity: DnsIdentity | None = None
    # Wave 2: the image store and power control plug in here.
    images: ImageStore | None = None
    # OS templates: built-in, files in <state dir>/templates, stored (dragonfly.templates).
    templates: TemplateCatalog | None = None
    power: PowerControl | None = None
    # The deployment timer: finished deployments, learned ETAs, the dashboard's figures.
    timer: DeploymentHistory | None = None
    # Simple mode: installs with the distribution's own installer (dragonfly.simple).
    simple: SimpleInstaller | None = None
    started_at: float = field(default_factory=time.time)
    version: str = __version__
    router: ApiRouter = field(default_factory=ApiRouter)

    @property
    def poll_seconds(self) -> int:
        """How long a waiting discovery agent sleeps between heartbeats."""
        return int(self.config["agent.poll_seconds"])


CTX: web.AppKey[AppContext] = web.AppKey("dragonfly")


def ctx_of(request: web.Request) -> AppContext:
    return request.app[CTX]
