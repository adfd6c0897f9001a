"""Sign-in rate limiting: temporary lock-out per account and per client address.

Failures are remembered in memory for ``window`` seconds. Once an account (or an address) has
``limit`` failures inside the window, every attempt for it is refused, even with the right
password, until the newest failure is ``window`` seconds old. A success clears the account's
failures but not the address's, so owning one account does not buy more guesses at others.

IPv6 clients are counted by their /64 (``address_key``): one host usually holds a whole /64,
so counting single addresses would give it billions of fresh per-address budgets.

Memory is bounded: past ``max_keys`` remembered keys, the ones whose failures have all expired
go first, then those that are not locked out, least recently failed first; a key that is locked
out is dropped only when nothing else is left, the one whose lock-out ends soonest first. So a
spray of made-up names and addresses cannot wipe out a real account's lock-out.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dragonfly.auth.allowlist import parse_address

MAX_KEYS = 50_000  # bound memory under a spray of made-up names and addresses
IPV6_PREFIX = 64
_MAX_FAILURES_KEPT = 1000


def address_key(address: str) -> str:
    """What one client address counts as: itself for IPv4, its /64 for IPv6."""
    ip = parse_address(address)  # zone ids dropped, IPv4-mapped addresses unwrapped
    if ip is None:
        return address
    if ip.version == 6:
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass
class _Failures:
    limit: int
    window: float
    times: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_FAILURES_KEPT))

    def prune(self, now: float, window: float) -> None:
        while self.times and now - self.times[0] >= window:
            self.times.popleft()

    def locked(self, now: float) -> bool:
        recent = sum(1 for t in self.times if now - t < self.window)
        return recent >= self.limit


class LoginThrottle:
    def __init__(self, clock: Callable[[], float], max_keys: int = MAX_KEYS) -> None:
        self.clock = clock
        self.max_keys = max_keys
        # Least recently failed first: fail() moves a key to the end.
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str, limit: int, window: float) -> float:
        """Seconds until ``key`` may try again; 0 when it is not locked out."""
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        now = self.clock()
        entry.prune(now, window)
        if not entry.times:
            del self._failures[key]
            return 0.0
        if len(entry.times) < limit:
            return 0.0
        return max(0.0, entry.times[-1] + window - now)

    def fail(self, key: str, limit: int, window: float) -> None:
        """Count a failure for ``key``, which locks out at ``limit`` failures in ``window``."""
        now = self.clock()
        entry = self._failures.get(key)
        if entry is None:
            entry = self._failures[key] = _Failures(limit, window)
        else:
            entry.limit, entry.window = limit, window
            self._failures.move_to_end(key)
        entry.times.append(now)
        if len(self._failures) > self.max_keys:
            self._evict(now, key)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _evict(self, now: float, keep: str) -> None:
        """Drop every expired key, then shrink to 90% of the cap (so this runs once per many
        new keys): keys that are not locked out, then locked ones, least recently failed first
        within each, and never ``keep``, the key that just failed."""
        for key, entry in list(self._failures.items()):
            entry.prune(now, entry.window)
            if not entry.times:
                del self._failures[key]  # expired: nothing to remember, whatever the count
        target = self.max_keys * 9 // 10
        for locked_too in (False, True):
            for key, entry in list(self._failures.items()):
                if len(self._failures) <= target:
                    return
                if key != keep and (locked_too or not entry.locked(now)):
                    del self._failures[key]
