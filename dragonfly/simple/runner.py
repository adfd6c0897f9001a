"""Which engine installs a machine: the image (Dragonfly's agent writes it) or the
distribution's installer (Simple mode). ``options.method`` decides per deployment ("image" or
"installer"); without it, the server's mode does (``server.mode = "simple"``, from the config
file or the first-run wizard: the installer for templates that have one). So any machine can
be installed either way, in either mode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dragonfly.domain.model import Machine, Workflow
from dragonfly.errors import InvalidInput
from dragonfly.simple.installers import INSTALLERS

if TYPE_CHECKING:
    from dragonfly.context import WorkflowRunner
    from dragonfly.simple.engine import SimpleInstaller

METHODS = ("image", "installer")


class ModeRunner:
    def __init__(self, native: WorkflowRunner, simple: SimpleInstaller,
                 mode: Callable[[], Awaitable[str]]) -> None:
        self.native, self.simple, self.mode = native, simple, mode

    async def method(self, template: str, options: dict[str, Any]) -> str:
        method = options.get("method")
        installer = INSTALLERS.get(template)
        if installer is not None and not installer.network_boot:
            # Proxmox VE has no image: its own installer is the only way.
            if method not in (None, "installer"):
                raise InvalidInput(f"{template} is installed with its own installer only "
                                   "(method installer)")
            return "installer"
        if method is None:
            return "installer" if await self.mode() == "simple" and template in INSTALLERS \
                else "image"
        if method not in METHODS:
            raise InvalidInput(f"method must be one of {', '.join(METHODS)}")
        return str(method)

    async def start_deployment(self, machine: Machine, action: str, template: str,
                               actor: str, options: dict[str, Any] | None = None
                               ) -> Workflow:
        opts = dict(options or {})
        method = await self.method(template, opts)
        opts.pop("method", None)
        runner = self.simple if method == "installer" else self.native
        return await runner.start_deployment(machine, action, template, actor, opts)
