"""Power control: one driver interface (IPMI, Redfish, Wake-on-LAN, OpenJBOD, a fake) with a
registry (``drivers``), BMC records with passwords encrypted at rest (``records``), the
``PowerService`` that owns them and monitors every BMC (``service``), and the routes.

``AppContext.power`` holds a ``PowerService``; ``PowerControl`` is the shape the routes use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dragonfly.power.adopt import Adoptions
    from dragonfly.power.enclosures import Enclosures


class PowerControl(Protocol):
    adoptions: Adoptions
    enclosures: Enclosures

    def drivers(self) -> list[dict[str, Any]]: ...

    async def status(self, machine: str) -> dict[str, Any]:
        """Driver, supported operations and actions, last poll (state, health, watts)."""
        ...

    async def all_status(self) -> list[dict[str, Any]]:
        """``status`` of every machine with a BMC record."""
        ...

    async def boot_into_pxe(self, machine: str) -> dict[str, Any]:
        """One-time PXE and a power cycle (or on), for an unattended reimage."""
        ...

    async def power_state(self, machine: str) -> str:
        """"on", "off" or "unknown" for the machine's BMC, asked now."""
        ...

    async def act(self, machine: str, op: str) -> dict[str, Any]: ...

    async def get_bmc(self, machine: str) -> dict[str, Any]: ...

    async def set_bmc(self, machine: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def delete_bmc(self, machine: str) -> bool: ...

    async def test_bmc(self, machine: str) -> dict[str, Any]: ...

    async def poll(self, machine: str) -> dict[str, Any]: ...
