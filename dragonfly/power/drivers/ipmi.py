"""IPMI over LAN (RMCP+) with pyghmi.

pyghmi is blocking: every call runs in the environment's bounded thread pool, under the BMC's
gate (one command at a time, a minimum interval between commands) and a hard timeout.

Sessions: one per call, logged out when the call ends; a monitoring poll reads state, health
and draw in one call, so in one session and one turn of the gate. Sessions kept between calls
(pyghmi keeps them alive from its I/O thread) made a second sweep of 50 BMCs from 16 threads
time out in two of three polls: pyghmi's process-wide locks (its keep-alive and waiting-session
registries, taken in opposite orders on its send and time-out paths) stall the threads. A
session per call also leaves nothing to log out at shutdown. (``Command(keepalive=False)``
would not help: pyghmi 1.6 passes it on only with ``onlogon``.) Credentials go to pyghmi as
bytes: pyghmi 1.6 registers a session being set up under the credentials as given but removes
that entry under their bytes form, so with str credentials a second Command for the same BMC
(or any retry after a failed login) finds the stale entry and waits forever or gets a broken
session.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dragonfly.power.drivers.base import (
    BOOT_DISK,
    BOOT_PXE,
    CYCLE,
    HEALTH,
    OFF,
    ON,
    RESET,
    SOFT_OFF,
    STATE,
    WATTS,
    DriverEnv,
    PowerDriver,
    PowerError,
    Status,
)

T = TypeVar("T")

DEFAULT_PORT = 623
BUSY = ("node busy", "insufficient resources", "cannot execute duplicated request",
        "temporarily unavailable")
CREDENTIALS = ("incorrect password", "unauthorized name", "invalid rakp4", "invalid username",
               "unauthorized role", "unauthorized guid", "invalid role")
CIPHER = ("cipher suite", "invalid authentication algorithm", "invalid integrity algorithm",
          "invalid confidentiality algorithm", "md5 required", "no matching integrity")
TIMEOUTS = ("none", "timeout", "session no longer connected", "session failed to initialize",
            "")


class IpmiDriver(PowerDriver):
    name = "ipmi"
    supports = frozenset({ON, OFF, SOFT_OFF, RESET, CYCLE, BOOT_PXE, BOOT_DISK, STATE, HEALTH,
                          WATTS})

    def __init__(self, address: str, port: int, user: str, password: str, env: DriverEnv, *,
                 retries: int = 3, retry_delay: float = 0.5) -> None:
        super().__init__(address)
        self.port = port or DEFAULT_PORT
        self._user = user.encode()
        self._password = password.encode()
        self.env = env
        self.retries = retries
        self.retry_delay = retry_delay
        self.where = address if self.port == DEFAULT_PORT else f"{address}:{self.port}"

    # --- plumbing ---------------------------------------------------------------------

    def _session(self) -> Any:
        from pyghmi.ipmi import command

        return command.Command(bmc=self.address, userid=self._user, password=self._password,
                               port=self.port)

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(command)`` in a thread, in a session of its own (logged out at the end),
        retried while the BMC says it is busy."""
        def run() -> T:
            started = time.monotonic()
            command = None
            try:
                command = self._session()
                return fn(command)
            except Exception as exc:
                raise _Failed(exc, time.monotonic() - started) from exc
            finally:
                if command is not None:
                    _logout(command)

        for attempt in range(self.retries + 1):
            try:
                return await self.env.run_blocking(self.where, run, what)
            except _Failed as failed:
                text = str(failed.exc).lower()
                if attempt < self.retries and any(b in text for b in BUSY):
                    await asyncio.sleep(self.retry_delay * (2 ** attempt))
                    continue
                raise self._reason(failed, what) from None
        raise AssertionError("unreachable")

    def _optional(self, what: str, fn: Callable[[], T]) -> T | None:
        """``fn()`` (in the call's thread) or None when the BMC does not have it; any other
        failure ends the call."""
        try:
            return fn()
        except Exception as exc:
            if self._reason(_Failed(exc, 0.0), what).reason in ("unsupported", "refused"):
                return None
            raise

    def _reason(self, failed: _Failed, what: str) -> PowerError:
        exc = failed.exc
        text = str(exc)
        low = text.lower()
        if isinstance(exc, socket.gaierror) or "unable to transmit" in low:
            return PowerError(f"cannot resolve or reach the BMC's address {self.address} "
                              f"({what})", "unreachable")
        if any(c in low for c in CREDENTIALS):
            return PowerError(f"the BMC at {self.where} refused the credentials ({text})",
                              "credentials")
        if any(c in low for c in CIPHER):
            return PowerError(f"unsupported cipher suite: the BMC at {self.where} accepts none "
                              f"that Dragonfly offers ({text})", "cipher")
        if any(b in low for b in BUSY):
            return PowerError(f"the BMC at {self.where} stayed busy after {self.retries} "
                              f"retries ({text})", "busy")
        if low.strip() in TIMEOUTS or "timeout" in low or "no longer connected" in low:
            route = _route_problem(self.address, self.port)
            if route:
                return PowerError(f"no route to the BMC at {self.address} ({route})",
                                  "unreachable")
            return PowerError(f"timeout: the BMC at {self.where} did not answer (IPMI gave "
                              f"up after {failed.elapsed:.0f} s; {what})", "timeout")
        if "invalid command" in low or "not supported" in low:
            return PowerError(f"the BMC at {self.where} does not support {what} ({text})",
                              "unsupported")
        return PowerError(f"the BMC at {self.where} answered {what} with an error: {text}",
                          "refused")

    async def close(self) -> None:
        """Nothing to do: no session outlives its call."""

    # --- the interface ------------------------------------------------------------------

    async def power_state(self) -> str:
        return _state(await self._call("get power state", lambda c: c.get_power()))

    async def read_status(self) -> Status:
        """State, health and draw in one session and one turn of the BMC's gate: three
        turns cost at least two minimum intervals (0.4 s) while holding a monitoring slot."""
        def read(c: Any) -> Status:
            state = _state(c.get_power())
            health = self._optional("read health", c.get_health)
            watts = self._optional("read power (DCMI)", c.get_system_power_watts)
            return Status(state, _health(health), _watts(watts))

        return await self._call("read power state, health and draw", read)

    async def _set_power(self, state: str) -> None:
        await self._call(f"power {state}", lambda c: c.set_power(state, wait=False))

    async def power_on(self) -> None:
        await self._set_power("on")

    async def power_off(self) -> None:
        await self._set_power("off")

    async def soft_off(self) -> None:
        await self._set_power("shutdown")

    async def reset(self) -> None:
        await self._set_power("reset")

    async def power_cycle(self) -> None:
        # Chassis Control "power cycle" (0x02) exists but pyghmi's set_power does not offer
        # it, and BMCs may refuse it while off: off, wait for off, on.
        await super().power_cycle()

    async def set_boot_device(self, device: str, once: bool = True) -> None:
        bootdev = {"pxe": "network", "disk": "hd"}.get(device)
        if bootdev is None:
            raise PowerError(f"unknown boot device {device!r} (pxe or disk)", "config")

        def set_bootdev(c: Any) -> Any:
            result = c.set_bootdev(bootdev, persist=not once)
            if isinstance(result, dict) and "error" in result:
                raise RuntimeError(result["error"])
            return result

        await self._call(f"set boot device {device}", set_bootdev)

    async def health(self) -> str:
        # No sensors (e.g. ipmi_sim without SDRs) reads as "unknown".
        return _health(await self._call(
            "read health", lambda c: self._optional("read health", c.get_health)))

    async def watts(self) -> float | None:
        """DCMI Get Power Reading; None when the BMC has no DCMI power reading."""
        return _watts(await self._call(
            "read power (DCMI)",
            lambda c: self._optional("read power (DCMI)", c.get_system_power_watts)))


def _state(result: Any) -> str:
    state = result.get("powerstate") if isinstance(result, dict) else None
    return state if state in ("on", "off") else "unknown"


def _health(summary: Any) -> str:
    if not isinstance(summary, dict):
        return "unknown"
    from pyghmi.constants import Health

    value = int(summary.get("health", 0))
    if value & (Health.Critical | Health.Failed):
        return "critical"
    if value & Health.Warning:
        return "warning"
    return "ok"


def _watts(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _logout(command: Any) -> None:
    """End the call's session (a BMC that is gone cannot be logged out of: pyghmi gives up
    after one try, without retries)."""
    session = getattr(command, "ipmi_session", None)
    if session is not None and not getattr(session, "broken", True):
        try:
            session.logout()
        except Exception:  # noqa: S110 - nothing to do about a failed logout
            pass


class _Failed(Exception):
    def __init__(self, exc: BaseException, elapsed: float) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.elapsed = elapsed


def _route_problem(address: str, port: int) -> str:
    """Why the kernel cannot send to ``address`` at all (no route, network down), or ""."""
    try:
        infos = socket.getaddrinfo(address, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return f"cannot resolve it: {exc.strerror}"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                             errno.ENETDOWN):
                return exc.strerror or "unreachable"
    return ""
