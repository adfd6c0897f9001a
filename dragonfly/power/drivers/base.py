"""The driver interface every BMC kind implements (shaped after Ironic's power and management
interfaces), the errors drivers raise, and what drivers share: one gate per BMC (one command
at a time, a minimum interval between commands), a bounded pool of daemon threads for blocking
clients and one aiohttp client session (monitoring polls get connections of their own, closed
when the poll ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, ClassVar, ParamSpec, TypeVar

import aiohttp

from dragonfly.errors import DragonflyError

T = TypeVar("T")
P = ParamSpec("P")

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


@dataclass(frozen=True)
class Status:
    """One monitoring read: power state, health and draw (None: not reported)."""

    state: str = "unknown"
    health: str = "unknown"
    watts: float | None = None


class DaemonPool(Executor):
    """Up to ``size`` daemon threads for blocking BMC clients. Unlike ThreadPoolExecutor's,
    whose threads the interpreter joins at exit (and asyncio.run joins the loop's default
    executor without a limit), a thread stuck in a call to a BMC that went away cannot hold
    the process: the shutdown's own limit is the only wait."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False
        self._live = 0  # threads started and not ended
        self._on_end: list[Callable[[], None]] = []

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the BMC thread pool is shut down")
            self._work.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"{self.name}-{len(self._threads)}")
                self._live += 1
                thread.start()
                self._threads.append(thread)
        return future

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            with self._lock:
                self._live -= 1
                ended = list(self._on_end) if self._live == 0 else []
            for callback in ended:
                callback()

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                self._work.put(None)  # wake the next thread to end too
                return
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn
            self._idle.release()

    async def ended(self, limit: float) -> bool:
        """Wait, at most ``limit`` seconds, until every thread has ended (after ``shutdown``);
        whether they have."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle)
        with self._lock:
            if self._live == 0:
                return True
            self._on_end.append(wake)
        try:
            await asyncio.wait_for(done, limit)
        except TimeoutError:
            return False
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._on_end.remove(wake)
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


@dataclass
class _PollHttp:
    """A poll's own HTTP session, made on its first request (IPMI polls make none)."""

    session: aiohttp.ClientSession | None = None


_POLL_HTTP: contextvars.ContextVar[_PollHttp | None] = contextvars.ContextVar(
    "dragonfly_poll_http", default=None)


class DriverEnv:
    """What drivers share, owned by the PowerService (or a test): gates keyed by BMC address,
    a bounded pool of daemon threads for blocking clients (pyghmi), and one aiohttp client
    session. ``close`` logs out, closes the session and waits (boundedly) for the threads."""

    # Idle connections of the shared session (actions, test connection) live this long: a
    # power cycle's state reads a second apart reuse theirs, and none outlives an action by
    # much (CPython's TLS transport holds a 256 KiB buffer per connection).
    keepalive = 2.0

    def __init__(self, *, threads: int = 16, min_interval: float = 0.2,
                 timeout: float = 10.0) -> None:
        self.threads = threads
        self.min_interval = min_interval
        self.timeout = timeout  # the hard limit of one call to a BMC, in seconds
        self._gates: dict[str, Gate] = {}
        self._executor: DaemonPool | None = None
        self._http: aiohttp.ClientSession | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def gate(self, key: str) -> Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = Gate(self.min_interval)
        return gate

    @property
    def executor(self) -> DaemonPool:
        if self._executor is None:
            self._executor = DaemonPool(self.threads, "dragonfly-bmc")
        return self._executor

    def http(self) -> aiohttp.ClientSession:
        """The session for a request: the current poll's own (see ``poll_connections``), or
        the shared one."""
        own = _POLL_HTTP.get()
        if own is not None:
            if own.session is None:
                own.session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    connector=aiohttp.TCPConnector(limit=2, limit_per_host=2))
            return own.session
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.threads * 4, limit_per_host=2,
                                               keepalive_timeout=self.keepalive))
        return self._http

    @contextlib.asynccontextmanager
    async def poll_connections(self) -> AsyncIterator[None]:
        """HTTP requests made in this block (by this task) use connections of their own,
        closed when it ends. Polls of one BMC are a minute apart, so a connection kept after
        a poll is never reused; kept for aiohttp's default 15 s, a sweep of 1,000 HTTPS BMCs
        left 1,000 idle TLS connections and ~285 MiB behind."""
        if _POLL_HTTP.get() is not None:
            yield
            return
        own = _PollHttp()
        token = _POLL_HTTP.set(own)
        try:
            yield
        finally:
            _POLL_HTTP.reset(token)
            if own.session is not None:
                await own.session.close()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` (a driver's logout) when the environment closes."""
        self._closers.append(closer)

    def forget_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Drop ``closer`` (the driver closed itself): the environment must not keep a
        replaced driver alive until shutdown."""
        with contextlib.suppress(ValueError):
            self._closers.remove(closer)

    @property
    def pending_closers(self) -> int:
        return len(self._closers)

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
            future = loop.run_in_executor(self.executor, fn)
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
        """Log out of every session at once, then let the threads finish, all within
        ``limit`` seconds (systemd stops the service after 20): a logout one at a time, or one
        to a BMC that no longer answers, must not hold the shutdown. Threads still stuck in a
        BMC call after that are daemons: they die with the process, which does not wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
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
            executor.shutdown(wait=False, cancel_futures=True)
            # A thread in a call logs out of its BMC session when the call returns (IPMI
            # gives up on a silent BMC within seconds): wait for that, within the limit,
            # not joining them in a thread the loop would have to wait for.
            await executor.ended(max(deadline - loop.time(), 0.0))


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

    async def read_status(self) -> Status:
        """What monitoring reads, in one go: the state, health and draw this driver supports
        ("unknown"/None for the rest). This default asks one at a time; drivers that can read
        all three in one request or one BMC session do so."""
        return Status(
            state=await self.power_state() if STATE in self.supports else "unknown",
            health=await self.health() if HEALTH in self.supports else "unknown",
            watts=await self.watts() if WATTS in self.supports else None)

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
