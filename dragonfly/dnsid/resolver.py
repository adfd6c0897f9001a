"""Reverse DNS and TXT look-ups with dnspython's asyncio resolver: one time budget for both
queries, and a cache, so a booting machine waits at most ``timeout`` for DNS and a fleet booting
at once asks each address once per ``cache_seconds``."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger(__name__)

CACHE_MAX = 20_000
# A failed look-up (timeout, SERVFAIL) is asked again sooner than an answer: the resolver may
# be back; but not at every boot of a fleet, each of which would pay the whole timeout.
FAILURE_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class DnsAnswer:
    """What DNS said about one address. ``fqdn`` is None when DNS answered that there is no
    name (NXDOMAIN, no PTR); ``error`` is set when DNS did not answer usefully (timeout,
    SERVFAIL, no resolver): then nothing is known, and nothing should change."""

    ip: str
    fqdn: str | None = None
    txt: tuple[str, ...] = ()
    error: str = ""
    at: float = field(default_factory=time.time)
    elapsed: float = 0.0


class DnsLookup:
    def __init__(self, servers: list[str], timeout: float, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic, port: int = 53) -> None:
        self.servers = list(servers)
        self.port = port
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._cache: dict[str, tuple[float, DnsAnswer]] = {}

    async def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = list(self.servers)
                resolver.port = self.port
            else:  # the system's: reading /etc/resolv.conf is file I/O, kept off the loop
                resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
            resolver.retry_servfail = False
            self._resolver = resolver
        return self._resolver

    def cached(self, ip: str) -> DnsAnswer | None:
        hit = self._cache.get(ip)
        if hit is None or hit[0] <= self.clock():
            return None
        return hit[1]

    def forget(self) -> None:
        self._cache.clear()

    async def lookup(self, ip: str) -> DnsAnswer:
        """PTR of ``ip``, then the TXT records of that name; never raises, never takes longer
        than ``timeout`` (plus scheduling)."""
        hit = self.cached(ip)
        if hit is not None:
            return hit
        started = self.clock()
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return DnsAnswer(ip, error=f"{ip!r} is not an IP address")
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._ask(ip, started)
        except TimeoutError:
            answer = DnsAnswer(ip, error=f"no answer from DNS within {self.timeout:g} s")
        except Exception as exc:  # a resolver problem must never block a boot
            log.warning("DNS look-up of %s failed: %s", ip, exc)
            answer = DnsAnswer(ip, error=f"DNS look-up failed: {exc}")
        answer = DnsAnswer(answer.ip, answer.fqdn, answer.txt, answer.error, answer.at,
                           self.clock() - started)
        keep = min(self.cache_seconds, FAILURE_CACHE_SECONDS) if answer.error \
            else self.cache_seconds
        if keep > 0:
            if len(self._cache) >= CACHE_MAX:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[ip] = (self.clock() + keep, answer)
        return answer

    def _left(self, started: float) -> float:
        return max(0.05, self.timeout - (self.clock() - started))

    async def _ask(self, ip: str, started: float) -> DnsAnswer:
        resolver = await self._get_resolver()
        try:
            ptr = await resolver.resolve_address(ip, lifetime=self._left(started))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return DnsAnswer(ip)
        except dns.exception.Timeout:
            raise TimeoutError from None
        except dns.resolver.NoNameservers as exc:
            return DnsAnswer(ip, error=f"DNS servers failed: {exc}")
        names = sorted(str(rr.target) for rr in ptr)
        if not names:
            return DnsAnswer(ip)
        fqdn = names[0]
        try:
            txt_answer = await resolver.resolve(fqdn, "TXT", lifetime=self._left(started))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return DnsAnswer(ip, fqdn)
        except dns.exception.Timeout:
            raise TimeoutError from None
        except dns.resolver.NoNameservers as exc:
            return DnsAnswer(ip, fqdn, error=f"TXT of {fqdn}: DNS servers failed: {exc}")
        # RFC 1464: each character-string of a TXT record is one attribute.
        strings = tuple(part.decode("utf-8", "replace")
                        for rr in txt_answer for part in rr.strings)
        return DnsAnswer(ip, fqdn, strings)
