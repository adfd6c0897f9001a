"""Sign-in rate limiting: temporary lock-out per account and per client address.

Failures are remembered in memory for ``window`` seconds. Once an account (or an address) has
``limit`` failures inside the window, every attempt for it is refused, even with the right
password, until the newest failure is ``window`` seconds old. A success clears the account's
failures but not the address's, so owning one account does not buy more guesses at others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

MAX_KEYS = 50_000  # bound memory under a spray of made-up names and addresses


class LoginThrottle:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, window: float) -> deque[float]:
        entries = self._failures.get(key)
        if entries is None:
            return deque()
        now = self.clock()
        while entries and now - entries[0] >= window:
            entries.popleft()
        if not entries:
            del self._failures[key]
        return entries

    def retry_after(self, key: str, limit: int, window: float) -> float:
        """Seconds until ``key`` may try again; 0 when it is not locked out."""
        entries = self._recent(key, window)
        if len(entries) < limit:
            return 0.0
        return max(0.0, entries[-1] + window - self.clock())

    def fail(self, *keys: str) -> None:
        if len(self._failures) > MAX_KEYS:
            self._failures.clear()  # crude, but a flood must not grow memory without bound
        now = self.clock()
        for key in keys:
            self._failures.setdefault(key, deque(maxlen=1000)).append(now)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)
