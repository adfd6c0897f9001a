"""The demo's boot edge: no sockets, but a plausible ``GET /api/boot/status``.

The simulator tells it of every machine it PXE-boots (``booted``), which moves the DHCP and
TFTP counters as the real services would; on top, a real segment's background chatter grows
with time (DHCP from clients that are not PXE-booting, ignored in proxy mode, and the odd
malformed packet or abandoned transfer). Deterministic for a given clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dragonfly.errors import Unavailable

INTERFACE = "eth0"
ADDRESS = "192.168.1.2"
CHATTER_SECONDS = 4.0  # one ignored non-PXE DHCP packet this often
MALFORMED_SECONDS = 1800.0  # and one malformed packet this often
ABANDONED_SECONDS = 3600.0  # and one TFTP transfer the client gave up on


class DemoBootEdge:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.started = clock()
        self.dhcp_received = 0
        self.dhcp_answered = 0
        self.tftp_requests = 0
        self.tftp_ok = 0
        self.tftp_bytes = 0

    def booted(self, uefi: bool, loader_bytes: int, stopped_after_offer: bool = False) -> None:
        """One machine's PXE boot: DISCOVER and REQUEST from the firmware (and from iPXE
        again), each answered; the loader over TFTP (UEFI asks its size first)."""
        exchanges = 1 if stopped_after_offer else 4
        self.dhcp_received += exchanges
        self.dhcp_answered += exchanges
        if stopped_after_offer:
            return
        self.tftp_requests += 2 if uefi else 1
        self.tftp_ok += 1
        self.tftp_bytes += loader_bytes

    async def status(self) -> dict[str, Any]:
        up = max(0.0, self.clock() - self.started)
        ignored = int(up / CHATTER_SECONDS)
        malformed = int(up / MALFORMED_SECONDS)
        abandoned = int(up / ABANDONED_SECONDS)
        dhcp_counters = {
            "received": self.dhcp_received + ignored + malformed,
            "answered": self.dhcp_answered, "ignored": ignored, "malformed": malformed,
            "errors": 0, "send_failed": 0,
            "ignored_by_reason": {"not a PXE client": ignored} if ignored else {},
            "malformed_by_reason": {"bad magic cookie": malformed} if malformed else {}}
        tftp_counters = {
            "requests": self.tftp_requests + abandoned, "transfers_ok": self.tftp_ok,
            "transfers_failed": abandoned, "refused": 0,
            "bytes_sent": self.tftp_bytes + abandoned * 65_536, "malformed": 0,
            "retransmits": abandoned * 5, "active": 0}
        return {
            "state": "running", "reason": "", "failed": "", "simulated": True,
            "dhcp_mode": "auto", "interface": INTERFACE, "boot_address": ADDRESS,
            "http_port": 3000,
            "services": {
                "dhcp": {"state": "running", "reason": "", "mode": "auto",
                         "interface": INTERFACE, "ports": [67, 4011],
                         "addresses": ["0.0.0.0:67", "0.0.0.0:4011"],
                         "counters": dhcp_counters, "leases": None, "other_servers": []},
                "tftp": {"state": "running", "reason": "", "interface": INTERFACE,
                         "addresses": ["0.0.0.0:69"], "counters": tftp_counters},
            },
            "discovery": {"dir": "/var/lib/dragonfly/discovery", "ready": True, "missing": [],
                          "how_to_obtain": "", "loaders_missing": []},
        }

    async def loader(self, name: str, peer: str, fetching: bool) -> Path | bytes:
        """The demo serves no loaders: there is nothing to boot from."""
        raise Unavailable("the boot services are not running on this instance")
