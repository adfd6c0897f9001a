"""Composition: which services make up the installed server and which the demo.

The server runs the store on disk, the boot edge (DHCP, TFTP) and the boot doctor; the demo is
the same application over an in-memory store with a simulated fleet and boot edge. Everything
a handler needs is a typed field of ``AppContext``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from dragonfly.boot.log import BootLog
from dragonfly.config import UNBUILT_MODES, Config
from dragonfly.context import AppContext
from dragonfly.domain.events import EventHub
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, Workflow
from dragonfly.power.drivers import default_registry
from dragonfly.power.service import PowerService
from dragonfly.store import SqliteStore, Store
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.timer.eta import Estimator
from dragonfly.timer.history import DeploymentHistory

if TYPE_CHECKING:
    from dragonfly.workflow.engine import DeploySources

log = logging.getLogger(__name__)


def server_context(config: Config, pinned: dict[str, Any] | None = None) -> AppContext:
    """``pinned``: settings given as command-line flags, which stored settings cannot override."""
    # The server's own parts, imported here: the demo, which starts first, has none of them.
    from dragonfly.auth.settings import RuntimeSettings
    from dragonfly.dnsid.service import DnsIdentity
    from dragonfly.edge.service import BootEdge
    from dragonfly.images import ImageStore
    from dragonfly.simple.engine import SimpleInstaller
    from dragonfly.simple.runner import ModeRunner
    from dragonfly.store import open_store
    from dragonfly.workflow.engine import DeploymentEngine
    from dragonfly.workflow.sources import CatalogSources

    store = open_store(config.state_dir)
    fleet = Fleet(store)
    bootlog = BootLog(store)
    edge = BootEdge(config, store, fleet, bootlog, pinned)
    images = ImageStore(store, config.state_dir)
    templates = TemplateCatalog(store, config.state_dir)
    engine = DeploymentEngine(fleet, store, CatalogSources(templates, images))
    power = PowerService(store, config.state_dir,
                         boot_interface=config["boot.interface"] or None)
    timer = deployment_timer(fleet, store)
    # Simple mode: the distribution's installer; per deployment, or by server.mode.
    simple = SimpleInstaller(fleet, store, templates, images,
                             mirrors=list(config["simple.mirrors"]))
    settings = RuntimeSettings(store, config, time.time)

    async def mode() -> str:  # the wizard stores its choice; the config file's otherwise
        return str(await settings.get("server.mode"))
    runner = ModeRunner(engine, simple, mode)
    ctx = AppContext(config=config, store=store, fleet=fleet, events=EventHub(store),
                     demo=False,
                     services=[bootlog, edge, images, templates, timer, engine, simple,
                               power],
                     bootlog=bootlog, edge=edge, images=images, templates=templates,
                     runner=runner, deployments=engine, power=power, timer=timer,
                     identity=DnsIdentity.from_config(config), simple=simple)
    if config["server.mode"] == "tinkerbell":
        use_tinkerbell(ctx, CatalogSources(templates, images))
    return ctx


def use_tinkerbell(ctx: AppContext, sources: DeploySources) -> None:
    """Tinkerbell mode: deployments run as Tinkerbell Workflows instead of the native engine
    (which leaves the services: no agent deploys in this mode)."""
    from pathlib import Path

    from dragonfly.edge.dhcp.netif import default_route_interface
    from dragonfly.edge.service import boot_address
    from dragonfly.tinkerbell.backend import TinkerbellBackend
    from dragonfly.workflow.engine import PreparedImage

    config = ctx.config
    assert ctx.templates is not None

    def base_url() -> str:
        public = str(config["server.public_url"] or "").rstrip("/")
        if public:
            return public
        address = boot_address(config.as_dict(),
                               config["boot.interface"] or default_route_interface())
        return f"http://{address}:{config['server.port']}"

    images = ctx.images

    async def prepared(slug: str) -> PreparedImage | None:
        image = await images.for_template(slug) if images is not None else None
        if image is None or images is None or await images.path_of(image.digest) is None:
            return None
        return PreparedImage(image.digest, image.format, image.size, image.raw_size,
                             image.raw_sha256)

    backend = TinkerbellBackend(ctx.fleet, ctx.store, ctx.templates, sources,
                                kubeconfig=Path(config["tinkerbell.kubeconfig"]),
                                namespace=config["tinkerbell.namespace"], base_url=base_url,
                                prepared=prepared,
                                image_path=images.path_of if images is not None else None)
    ctx.services = [s for s in ctx.services if s is not ctx.deployments] + [backend]
    ctx.runner, ctx.tinkerbell, ctx.deployments = backend, backend, None
    if config["tinkerbell.power"] == "rufio" and isinstance(ctx.power, PowerService):
        from dragonfly.tinkerbell.rufio import RufioPower

        rufio = RufioPower(backend, ctx.power)  # IPMI and Redfish records go through Rufio
        rufio.install(ctx.power.registry)
        ctx.services.append(rufio)


def deployment_timer(fleet: Fleet, store: Store) -> DeploymentHistory:
    """The history of finished deployments, and the fleet's ETAs learned from it."""
    history = DeploymentHistory(store, fleet.lookup)
    estimator = Estimator(history)

    def estimate(wf: Workflow, machine: Machine | None, now: float
                 ) -> tuple[float | None, str]:
        found = estimator.estimate(wf, machine, now)
        return found.seconds, found.basis
    fleet.estimate = estimate
    return history


def demo_context(seed: int = 7, tick: float = 1.0) -> AppContext:
    from dragonfly.demo.history import DemoHistory
    from dragonfly.demo.power import DemoBmcs, PlainBox
    from dragonfly.demo.simulator import Simulator

    config = Config.defaults()
    store = SqliteStore(":memory:")
    fleet = Fleet(store)
    bootlog = BootLog(store)
    ctx = AppContext(config=config, store=store, fleet=fleet, events=EventHub(store),
                     demo=True, bootlog=bootlog, templates=TemplateCatalog(store, None))
    simulator = Simulator(fleet, seed=seed, tick=tick, bootlog=bootlog, commands=ctx.commands)
    # Fake BMCs, in memory: no key file, nothing on disk.
    power = PowerService(store, None, registry=default_registry(fake_delay=2.0))
    power.box = PlainBox()  # the passwords stay in the in-memory store: nothing to seal
    ctx.power = power
    ctx.timer = deployment_timer(fleet, store)
    ctx.services = [simulator, DemoHistory(fleet, ctx.timer, seed), ctx.timer, bootlog,
                    DemoBmcs(fleet, power), power]
    ctx.runner = simulator
    ctx.edge = simulator.boot_edge
    return ctx


def readiness_report(ctx: AppContext) -> str:
    """What `dragonfly serve` says at start: loaders and the discovery environment."""
    from dragonfly.boot.discovery import discovery_status
    from dragonfly.edge.service import BootEdge

    lines = []
    if isinstance(ctx.edge, BootEdge):
        lines = ["Boot loaders:"] + [f"  {line}" for line in ctx.edge.loaders.describe()]
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
