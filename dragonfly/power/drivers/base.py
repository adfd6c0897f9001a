"""The driver interface every BMC kind implements (shaped after Ironic's power and management
interfaces), the errors drivers raise, and what drivers share: one gate per BMC (one command
at a time, a minimum interval between commands), a bounded thread pool for blocking clients
and one aiohttp client session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiohttp

from dragonfly.errors import DragonflyError

T = TypeVar("T")

# Operations a driver may support. Actions change the machine; the rest only read.
ON, OFF, SOFT_OFF, RESET, CYCLE = "on", "off", "soft_off", "reset", "cycle"
BOOT_PXE, BOOT_DISK = "boot_pxe", "boot_disk"
STATE, HEALTH, WATTS = "state", "health", "watts"
ACTIONS = (ON, OFF, SOFT_OFF, RESET, CYCLE, BOOT_PXE, BOOT_DISK)
READS = (STATE, HEALTH, WATTS)
OPERATIONS = frozenset(ACTIONS + READS)
BOOT_DEVICES = ("pxe", "disk")

# Power states and health as every driver reports them.
POWER_STATES = ("on", "off", "unknown")
HEALTH_STATES = ("ok", "warning", "critical", "unknown")


class PowerError(DragonflyError):
    """Talking to a BMC failed; ``message`` says what failed in plain words (never a secret).

    ``reason`` classifies it: unreachable, timeout, credentials, cipher, busy, tls, refused,
    protocol, unsupported, config."""

    status = 502
    code = "bmc"

    def __init__(self, message: str, reason: str = "protocol", detail: Any = None) -> None:
        super().__init__(message, detail if detail is not None else {"reason": reason})
        self.reason = reason


def http_failure(exc: BaseException, who: str, timeout: float) -> PowerError:
    """What an HTTP driver's request failure means, in words: ``who`` is "the BMC at URL"
    or the like. Anything not an aiohttp or timeout error is re-raised as it is."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return PowerError(f"{who} presented a certificate that is not trusted "
                          f"({exc.certificate_error}): give its CA bundle, or switch "
                          "verification off explicitly (insecure)", "tls")
    if isinstance(exc, aiohttp.ClientSSLError):
        return PowerError(f"TLS with {who} failed: {exc}", "tls")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return PowerError(f"no route to {who} ({exc.os_error.strerror or exc.os_error})",
                          "unreachable")
    if isinstance(exc, TimeoutError):
        return PowerError(f"timeout: {who} did not answer within {timeout:g} s", "timeout")
    if isinstance(exc, aiohttp.ClientError):
        return PowerError(f"{who} broke off the connection ({exc})", "unreachable")
    raise exc


class Unsupported(PowerError):
    """The driver (or this BMC) cannot do the operation."""

    status = 409
    code = "unsupported"

    def __init__(self, message: str) -> None:
        super().__init__(message, "unsupported")


@dataclass
class Gate:
    """One BMC's turn-taking: one command at a time, ``min_interval`` seconds apart."""

    min_interval: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float = 0.0

    async def acquire(self) -> None:
        await self.lock.acquire()
        wait = self.last + self.min_interval - time.monotonic()
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except BaseException:
                self.lock.release()
                raise

    def release(self) -> None:
        self.last = time.monotonic()
        self.lock.release()


class DriverEnv:
    """What drivers share, owned by the PowerService (or a test): gates keyed by BMC address,
    a bounded thread pool for blocking clients (pyghmi), and one aiohttp client session.
    ``close`` waits for the pool's threads and closes the session."""

    def __init__(self, *, threads: int = 16, min_interval: float = 0.2,
                 timeout: float = 10.0) -> None:
        self.threads = threads
        self.min_interval = min_interval
        self.timeout = timeout  # the hard limit of one call to a BMC, in seconds
        self._gates: dict[str, Gate] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._http: aiohttp.ClientSession | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def gate(self, key: str) -> Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = Gate(self.min_interval)
        return gate

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="dragonfly-bmc")
        return self._executor

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.threads * 4, limit_per_host=2))
        return self._http

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` (a driver's logout) when the environment closes."""
        self._closers.append(closer)

    async def run_blocking(self, key: str, fn: Callable[[], T], what: str,
                           limit: float | None = None) -> T:
        """Run the blocking ``fn`` in the pool under the gate of BMC ``key``, within the hard
        timeout. A call that overruns keeps its BMC's gate until its thread returns (the next
        command to that BMC waits for it; the caller does not)."""
        limit = self.timeout if limit is None else limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        gate = await self._turn(key, limit, what)
        # The limit holds for the caller's whole wait: the turn and the call together.
        total, limit = limit, max(deadline - loop.time(), 0.1)
        try:
            future = asyncio.get_running_loop().run_in_executor(self.executor, fn)
        except BaseException:
            gate.release()
            raise
        future.add_done_callback(lambda _f: gate.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            future.add_done_callback(_retrieve)
            raise PowerError(f"timeout: the BMC at {key} did not answer within "
                             f"{total:g} s ({what})", "timeout") from None
        except asyncio.CancelledError:
            future.add_done_callback(_retrieve)
            raise

    async def _turn(self, key: str, limit: float, what: str) -> Gate:
        """Wait for BMC ``key``'s turn, at most ``limit`` seconds: a command still running
        (one that overran its own limit keeps the gate) must not hold callers forever."""
        gate = self.gate(key)
        try:
            await asyncio.wait_for(gate.acquire(), limit)
        except TimeoutError:
            raise PowerError(f"timeout: the BMC at {key} was still busy with an earlier "
                             f"command after {limit:g} s ({what})", "timeout") from None
        return gate

    async def gated(self, key: str, fn: Callable[[], Awaitable[T]], what: str = "a request"
                    ) -> T:
        """Run the coroutine ``fn`` under the gate of BMC ``key`` (the wait for the turn is
        bounded by the timeout; the request itself by the HTTP session's)."""
        gate = await self._turn(key, self.timeout, what)
        try:
            return await fn()
        finally:
            gate.release()

    async def close(self, limit: float = 10.0) -> None:
        """Log out of every session at once, all within ``limit`` seconds (systemd stops the
        service after 20): a logout one at a time, or one to a BMC that no longer answers,
        must not hold the shutdown. Threads still stuck in a BMC call are left to die with
        the process."""
        closers, self._closers = self._closers, []

        async def quietly(closer: Callable[[], Awaitable[None]]) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer(), self.timeout)
        if closers:
            tasks = [asyncio.ensure_future(quietly(c)) for c in closers]
            _done, pending = await asyncio.wait(tasks, timeout=limit)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # Threads still in a BMC call end when pyghmi gives up (seconds); wait for that,
            # within the same limit, and no longer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.to_thread(executor.shutdown, True, cancel_futures=True), limit)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class PowerDriver:
    """One BMC. Subclasses set ``name`` and ``supports`` and implement what they support;
    everything else raises Unsupported. ``power_off`` is a hard off; ``soft_off`` asks the OS
    (ACPI); ``power_cycle`` falls back to off then on."""

    name: ClassVar[str] = ""
    supports: frozenset[str] = frozenset()
    # How long power_cycle waits between off and on, and how long it waits for "off".
    cycle_pause: float = 2.0
    cycle_wait: float = 60.0

    def __init__(self, address: str) -> None:
        self.address = address

    def unsupported(self, op: str) -> Unsupported:
        return Unsupported(f"the {self.name} driver cannot {op.replace('_', ' ')} "
                           f"(it supports: {', '.join(sorted(self.supports)) or 'nothing'})")

    async def power_state(self) -> str:
        raise self.unsupported(STATE)

    async def power_on(self) -> None:
        raise self.unsupported(ON)

    async def power_off(self) -> None:
        raise self.unsupported(OFF)

    async def soft_off(self) -> None:
        raise self.unsupported(SOFT_OFF)

    async def reset(self) -> None:
        raise self.unsupported(RESET)

    async def power_cycle(self) -> None:
        """Off, wait until the BMC says off, pause, on: for BMCs without a cycle of their own."""
        if not {ON, OFF} <= self.supports:
            raise self.unsupported(CYCLE)
        await self.power_off()
        if STATE in self.supports:
            deadline = time.monotonic() + self.cycle_wait
            while await self.power_state() != "off":
                if time.monotonic() > deadline:
                    raise PowerError(f"power cycle: the machine behind {self.address} did not "
                                     f"go off within {self.cycle_wait:g} s", "timeout")
                await asyncio.sleep(1.0)
        await asyncio.sleep(self.cycle_pause)
        await self.power_on()

    async def set_boot_device(self, device: str, once: bool = True) -> None:
        raise self.unsupported(BOOT_PXE if device == "pxe" else BOOT_DISK)

    async def health(self) -> str:
        raise self.unsupported(HEALTH)

    async def watts(self) -> float | None:
        """The power draw now, or None when this BMC does not report it."""
        raise self.unsupported(WATTS)

    async def close(self) -> None:
        """Log out (sessions) and let go of what this driver holds."""

    async def run(self, op: str) -> None:
        """Perform the action ``op`` (one of ACTIONS)."""
        if op not in self.supports:
            raise self.unsupported(op)
        if op == ON:
            await self.power_on()
        elif op == OFF:
            await self.power_off()
        elif op == SOFT_OFF:
            await self.soft_off()
        elif op == RESET:
            await self.reset()
        elif op == CYCLE:
            await self.power_cycle()
        elif op == BOOT_PXE:
            await self.set_boot_device("pxe", once=True)
        elif op == BOOT_DISK:
            await self.set_boot_device("disk", once=True)
        else:
            raise self.unsupported(op)
