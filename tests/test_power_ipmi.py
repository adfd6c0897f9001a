"""The IPMI driver and the power service against a real BMC: OpenIPMI's ipmi_sim on loopback
(a random UDP port), whose chassis_control script records every power and boot change to a
file. No VM is needed: the driver's contract ends at the BMC, and ipmi_sim's script is where
the change lands (ipmi_sim's Get Boot Options reads back "default", so PXE is asserted on the
script's record). ipmi_sim answers DCMI Get Power Reading with "invalid command": watts are
tested against a Redfish stand-in in test_power_redfish.py."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from dragonfly.power.drivers.base import DriverEnv, PowerError, Status
from dragonfly.power.drivers.ipmi import IpmiDriver
from dragonfly.power.records import BMC
from dragonfly.power.service import PowerService
from dragonfly.store import SqliteStore

T = TypeVar("T")

PASSWORD = "s3cret-ipmi-pw"  # noqa: S105 - the simulator's admin password

CHASSIS = """#!/bin/sh
# ipmi_sim chassis_control: "chassis.sh 0x20 get power boot" or "chassis.sh 0x20 set power 1"
DIR={dir}
shift
op=$1; shift
if [ "$op" = get ]; then
  for k in "$@"; do
    if [ -f "$DIR/state.$k" ]; then v=$(cat "$DIR/state.$k")
    elif [ "$k" = boot ]; then v=default
    else v=0; fi
    echo "$k:$v"
  done
else
  while [ $# -gt 1 ]; do
    echo "$1 $2" >> "$DIR/record"
    [ "$1" = reset ] || echo "$2" > "$DIR/state.$1"
    shift 2
  done
fi
"""

LAN_CONF = """name "labbmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_callback none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script} 0x20"
  user 2 true "admin" "{password}" admin 10 none md2 md5 straight
"""

SIM_EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sim:
    port: int
    dir: Path

    @property
    def record(self) -> list[str]:
        path = self.dir / "record"
        return path.read_text().splitlines() if path.exists() else []

    def reset(self) -> None:
        for name in ("record", "state.power", "state.boot"):
            (self.dir / name).unlink(missing_ok=True)


def launch(root: Path, port: int) -> subprocess.Popen[bytes]:
    """An ipmi_sim on 127.0.0.1:``port`` in ``root``, answering a login when this returns."""
    binary = shutil.which("ipmi_sim")
    assert binary, "ipmi_sim (Debian package openipmi) is needed for the IPMI tests"
    script = root / "chassis.sh"
    script.write_text(CHASSIS.format(dir=root))
    script.chmod(0o755)
    (root / "lan.conf").write_text(LAN_CONF.format(port=port, script=script,
                                                   password=PASSWORD))
    (root / "sim.emu").write_text(SIM_EMU)
    (root / "state").mkdir()
    with open(root / "sim.log", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(root / "lan.conf"), "-f",
                                 str(root / "sim.emu"), "-s", str(root / "state"), "-n"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Wait until it answers, with a login from this thread: that also starts pyghmi's one
        # process-wide I/O thread (a daemon that lives as long as the process) before any
        # test's leaked-thread check takes its snapshot.
        from pyghmi.ipmi import command

        deadline = time.monotonic() + 20
        while True:
            try:
                cmd = command.Command(bmc="127.0.0.1", userid=b"admin",
                                      password=PASSWORD.encode(), port=port)
                cmd.ipmi_session.logout()
                return proc
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
    except BaseException:
        end(proc)
        raise


def end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    root = tmp_path_factory.mktemp("ipmisim")
    port = free_udp_port()
    proc = launch(root, port)
    try:
        yield Sim(port, root)
    finally:
        end(proc)


@pytest.fixture
async def env() -> AsyncIterator[DriverEnv]:
    env = DriverEnv(timeout=10.0, min_interval=0.05)
    try:
        yield env
    finally:
        await env.close()


class Ticker:
    """Measures the event loop's lag while something else runs."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.ticks = 0
        self.worst = 0.0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.worst = max(self.worst, now - last - self.period)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> Ticker:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def test_power_on_off_state_boot_device_and_reset(sim: Sim, env: DriverEnv) -> None:
    sim.reset()
    bmc = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)
    assert await bmc.power_state() == "off"
    await bmc.power_on()
    assert await bmc.power_state() == "on"
    await bmc.set_boot_device("pxe")
    await bmc.reset()
    await bmc.power_off()
    assert await bmc.power_state() == "off"
    await bmc.set_boot_device("disk")
    assert sim.record == ["power 1", "boot pxe", "reset 1", "power 0", "boot default"], sim.record
    # (ipmi_sim hands the script only pxe and "default"; a disk override arrives as the latter)
    # ipmi_sim has no DCMI power reading and no sensors: read as "not reported".
    assert await bmc.watts() is None
    assert await bmc.health() == "unknown"


async def test_power_cycle_is_off_then_on(sim: Sim, env: DriverEnv) -> None:
    sim.reset()
    bmc = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)
    bmc.cycle_pause = 0.1
    await bmc.power_on()
    await bmc.power_cycle()
    assert sim.record == ["power 1", "power 0", "power 1"]
    assert await bmc.power_state() == "on"


async def test_one_command_at_a_time_per_bmc(sim: Sim) -> None:
    # Each call is a whole session (log in, command, log out) and the tenth waits for the nine
    # before it, all within one time limit: on a loaded machine pyghmi can take a second or
    # more per session (BENCHMARKS.md, power polling), so the limit here is generous.
    env = DriverEnv(timeout=60.0, min_interval=0.05)
    try:
        sim.reset()
        bmc = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)
        other = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)  # same BMC and gate
        started = time.monotonic()
        states = await asyncio.gather(*(d.power_state() for d in (bmc, other)
                                        for _ in range(5)))
        assert set(states) == {"off"}
        # Ten commands through one gate with a 0.05 s minimum interval take at least 0.45 s.
        assert time.monotonic() - started >= 0.45
    finally:
        await env.close()


async def test_wrong_password_says_so(sim: Sim, env: DriverEnv) -> None:
    bmc = IpmiDriver("127.0.0.1", sim.port, "admin", "not-the-password", env)
    started = time.monotonic()
    with pytest.raises(PowerError) as caught:
        await bmc.power_state()
    assert caught.value.reason == "credentials"
    assert caught.value.message.startswith(
        f"the BMC at 127.0.0.1:{sim.port} refused the credentials")
    assert time.monotonic() - started < 5
    # The same BMC with the right password works at once (pyghmi keeps no stale session).
    good = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)
    assert await good.power_state() in ("on", "off")


async def test_unreachable_bmc_gives_a_reason_and_the_loop_keeps_serving(
        sim: Sim, env: DriverEnv) -> None:
    port = free_udp_port()  # nothing listens there
    bmc = IpmiDriver("127.0.0.1", port, "admin", PASSWORD, env)
    async with Ticker() as ticker:
        started = time.monotonic()
        with pytest.raises(PowerError) as caught:
            await bmc.power_state()
        took = time.monotonic() - started
    assert caught.value.reason == "timeout"
    assert caught.value.message.startswith(
        f"timeout: the BMC at 127.0.0.1:{port} did not answer (IPMI gave up after "
        ), caught.value.message
    assert took < env.timeout + 1
    assert ticker.ticks > took / 0.01 * 0.5, (ticker.ticks, took)
    assert ticker.worst < 0.25, ticker.worst


async def test_hard_timeout_returns_and_frees_the_loop() -> None:
    env = DriverEnv(timeout=1.0)
    port = free_udp_port()
    bmc = IpmiDriver("127.0.0.1", port, "admin", PASSWORD, env)
    try:
        async with Ticker() as ticker:
            started = time.monotonic()
            with pytest.raises(PowerError) as caught:
                await bmc.power_state()
            took = time.monotonic() - started
        assert caught.value.message.startswith(
            f"timeout: the BMC at 127.0.0.1:{port} did not answer within 1 s")
        assert 0.9 < took < 2.0
        assert ticker.worst < 0.25
        # pyghmi is still trying in its thread and keeps the BMC's turn: the next command
        # waits for it at most the same limit, then says why.
        started = time.monotonic()
        with pytest.raises(PowerError) as queued:
            await bmc.power_state()
        assert time.monotonic() - started < 1.6
        assert queued.value.reason == "timeout"
        assert "still busy with an earlier command after 1 s" in queued.value.message
    finally:
        await env.close()  # waits for pyghmi's own give-up in the pool thread


def test_no_route_is_named() -> None:
    from dragonfly.power.drivers.ipmi import _route_problem

    # TEST-NET-1 has no route in a namespace without a default route; here it may have one,
    # so only check the answer's shape. A documentation address that cannot be routed:
    assert isinstance(_route_problem("192.0.2.1", 623), str)
    assert _route_problem("127.0.0.1", 623) == ""


async def test_service_over_ipmi_keeps_the_password_secret(
        sim: Sim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sim.reset()
    caplog.set_level(logging.DEBUG)
    store = SqliteStore(":memory:")
    await store.open()
    service = PowerService(store, tmp_path, monitor=False, min_interval=0.05)
    await service.start()
    try:
        record = await service.set_bmc("m1", {"driver": "ipmi", "address": "127.0.0.1",
                                              "port": sim.port, "user": "admin",
                                              "password": PASSWORD})
        assert record["has_password"] is True and "password" not in record
        test = await service.test_bmc("m1")
        assert test["ok"] is True, test
        assert [s["step"] for s in test["steps"]] == ["state", "health", "watts"]
        await service.act("m1", "on")
        await service.act("m1", "boot_pxe")
        assert "power 1" in sim.record and "boot pxe" in sim.record
        polled = await service.poll("m1")
        assert polled["state"] == "on" and polled["error"] == ""
        # A wrong password: test connection says exactly that.
        await service.set_bmc("m1", {"password": "wrong-password"})
        bad = await service.test_bmc("m1")
        assert bad["ok"] is False and "refused the credentials" in bad["reason"]
        assert bad["steps"][0]["reason"] == "credentials"
        await service.set_bmc("m1", {"password": PASSWORD})
        doc = await store.get(BMC, "m1")
        assert doc is not None
        assert PASSWORD not in str(doc.data) and doc.data["password"]
        assert oct((tmp_path / "bmc.key").stat().st_mode & 0o777) == "0o600"
        for kind in ("power", "audit"):
            for d in await store.list(kind):
                assert PASSWORD not in str(d.data)
    finally:
        await service.stop()
        await store.close()
    assert PASSWORD not in caplog.text
    assert "wrong-password" not in caplog.text


def kept_sessions(port: int) -> list[object]:
    """pyghmi sessions to the BMC on ``port`` it still keeps alive (logged in)."""
    from pyghmi.ipmi.private.session import Session

    return [s for s in list(Session.keepalive_sessions) if getattr(s, "port", None) == port]


class CountingEnv(DriverEnv):
    """Counts the turns taken at BMCs' gates (each blocking call takes one)."""

    turns = 0

    async def run_blocking(self, key: str, fn: Callable[[], T], what: str,
                           limit: float | None = None) -> T:
        self.turns += 1
        return await super().run_blocking(key, fn, what, limit)


async def test_a_poll_is_one_session_and_one_turn_of_the_gate(sim: Sim) -> None:
    # Each turn at a BMC's gate waits out the minimum interval (0.2 s) while the poll holds
    # one of the 16 monitoring slots: three reads, three turns, at most 40 polls/s. One call
    # reads all three, in one session.
    sim.reset()
    (sim.dir / "state.power").write_text("1\n")
    env = CountingEnv(timeout=10.0, min_interval=0.2)
    bmc = IpmiDriver("127.0.0.1", sim.port, "admin", PASSWORD, env)
    try:
        assert await bmc.read_status() == Status("on", "unknown", None)
        assert env.turns == 1
        # No session outlives its call: pyghmi keeps none alive between polls (kept ones,
        # used from 16 threads, stalled the second sweep on pyghmi's global locks).
        assert kept_sessions(sim.port) == []
        assert await bmc.power_state() == "on"  # the single reads still work
        assert kept_sessions(sim.port) == []
        assert env.turns == 2
    finally:
        await env.close()


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Sim]]:
    procs: list[subprocess.Popen[bytes]] = []
    out: list[Sim] = []
    try:
        for _ in range(6):
            root = tmp_path_factory.mktemp("ipmisims")
            port = free_udp_port()
            procs.append(launch(root, port))
            out.append(Sim(port, root))
        yield out
    finally:
        for proc in procs:
            end(proc)


async def test_two_sweeps_of_several_bmcs_are_all_right(sims: list[Sim], tmp_path: Path
                                                        ) -> None:
    # Monitoring's own schedule, twice over every BMC (the benchmark does 200 and 1,000).
    for n, one in enumerate(sims):
        one.reset()
        (one.dir / "state.power").write_text(f"{n % 2}\n")
    store = SqliteStore(":memory:")
    await store.open()
    service = PowerService(store, tmp_path, interval=3.0)
    await service.start()
    machines = [f"m{n}" for n in range(len(sims))]
    try:
        for machine, one in zip(machines, sims, strict=True):
            await service.set_bmc(machine, {"driver": "ipmi", "address": "127.0.0.1",
                                            "port": one.port, "user": "admin",
                                            "password": PASSWORD})
        first: dict[str, float] = {}
        second: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 30
        while len(second) < len(machines) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            for machine in machines:
                status = await service.status(machine)
                if status["checked_at"] is None:
                    continue
                if machine not in first:
                    assert status["error"] == "", status
                    first[machine] = status["checked_at"]
                elif status["checked_at"] > first[machine]:
                    second.setdefault(machine, status)
        assert len(second) == len(machines), (first, second)
        for n, machine in enumerate(machines):
            assert second[machine]["error"] == "", second[machine]
            assert second[machine]["state"] == ("on" if n % 2 else "off")
    finally:
        started = time.monotonic()
        await service.stop()
        await store.close()
    # No session to log out; a poll still in a call (a third sweep) is waited for, boundedly.
    assert time.monotonic() - started < 10.5
