"""Power control (wave 2): one driver interface (IPMI, Redfish, Wake-on-LAN, a fake) with a
registry, BMC records, polling and the guarded power actions.

``AppContext.power`` holds the service once it exists; this protocol is the slot's shape.
"""

from __future__ import annotations

from typing import Protocol


class PowerControl(Protocol):
    async def power_state(self, machine_id: str) -> str:
        """"on", "off" or "unknown" for the machine's BMC."""
        ...
