"""What the boot edge remembers per MAC between DHCP exchanges: bounded and expiring.

Two facts matter for avoiding boot loops: which loader we last sent a MAC (an iPXE showing
up from that MAC shortly after is our loader running), and the last decision per DHCP
transaction (retransmissions and the follow-up REQUEST, which share the DISCOVER's xid,
must get the same answer even if memory changed in between).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dragonfly.boot.registry import BootDecision


@dataclass(slots=True)
class Remembered:
    xid: int
    decision: BootDecision
    decided_at: float
    loader: str | None = None  # last loader sent (survives later script decisions)
    loader_at: float = 0.0
    fetched: bool = False  # TFTP/HTTP reported the loader actually downloaded


class BootMemory:
    def __init__(self, ttl: float = 300.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, mac: object) -> bool:
        """Whether anything is remembered of ``mac`` (expired or not): the DHCP fast path
        answers only MACs without history."""
        return mac in self._entries

    def get(self, mac: str) -> Remembered | None:
        entry = self._entries.get(mac)
        if entry is None:
            return None
        if self._clock() - entry.decided_at > self.ttl:
            del self._entries[mac]
            return None
        return entry

    def same_transaction(self, mac: str, xid: int) -> BootDecision | None:
        entry = self.get(mac)
        return entry.decision if entry is not None and entry.xid == xid else None

    def loader_sent(self, mac: str) -> str | None:
        entry = self.get(mac)
        if entry is None or entry.loader is None:
            return None
        if self._clock() - entry.loader_at > self.ttl:
            return None
        return entry.loader

    def record(self, mac: str, xid: int, decision: BootDecision) -> None:
        now = self._clock()
        entries = self._entries
        entry = entries.get(mac)
        if entry is None:  # most recent last: eviction drops the oldest
            entry = entries[mac] = Remembered(xid, decision, now)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
        else:
            entries.move_to_end(mac)
            entry.xid, entry.decision, entry.decided_at = xid, decision, now
        if decision.loader is not None and not decision.script:
            entry.loader, entry.loader_at, entry.fetched = decision.loader, now, False

    def note_fetched(self, mac: str, loader: str) -> None:
        """Called when TFTP/HTTP saw this MAC's host download ``loader``."""
        entry = self.get(mac)
        if entry is not None and entry.loader == loader:
            entry.fetched = True
            entry.loader_at = self._clock()

    def forget(self, mac: str) -> None:
        self._entries.pop(mac, None)
