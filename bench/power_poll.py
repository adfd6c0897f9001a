#!/usr/bin/env python3
"""Power-state polling of 1,000 Redfish BMCs: the real server polling stand-in BMCs on loopback.
Time for one sweep, the server's threads and memory meanwhile, and event-loop lag.

Each round starts ``python -m dragonfly serve --dhcp-mode off`` (the installed appliance's code
path, sqlite on disk in a fresh temporary state dir, setup finished with the CLI, an API token;
started by ``bench/checkins.py``'s ``start_server``). Power monitoring runs with its defaults
(``PowerService``: every 60 s with jitter, 16 polls at once, 10 s timeout: there are no settings
for them). Then:

1. 1,000 machines are created as real clients create them: 1,000 distinct agent check-ins
   (``bench/checkins.py``'s reports, 50 at a time).
2. Idle: for ``--idle`` seconds the API's latency is sampled with nothing to poll.
3. Each machine gets a Redfish BMC record (``PUT /api/machines/{id}/bmc``: address
   ``https://127.1.X.Y`` port 8443, user and password, ``insecure`` as for a self-signed
   certificate, no system path: the driver finds the only system). ``set_bmc`` schedules the
   first poll of each record at once (delay 0), so the first sweep is all 1,000 due together,
   16 at a time. By default the stand-ins hold every request until the last PUT has been
   answered (at most 16 polls wait, well inside the 10 s timeout), then release: the sweep is
   timed from the release, with no API writes interleaved. ``--no-hold`` lets polls run while
   the PUTs arrive and times the sweep from the first PUT.
4. The sweep ends when the event stream (``GET /api/events``, kind ``power``: the first poll
   of a record always writes its document) has shown a result for all 1,000 machines.
5. Second sweep: the service schedules each BMC again ``interval`` (60 s) x U(0.85, 1.15)
   after its first poll. Timed from the stand-ins' request log (an unchanged result writes
   no document, so the stream stays quiet), unless ``--no-second``.
6. Check through the API: ``GET /api/machines/{id}/power`` of every machine shows the state,
   health and watts its stand-in reports, a ``checked_at`` after the release, and how many
   were polled again since their first result.
7. Shutdown: SIGTERM to exit, and the Redfish sessions the server logs out of meanwhile
   (``dragonfly.service`` gives it ``TimeoutStopSec=20``). ``--logout-delay`` makes each
   stand-in take that long to answer a logout, as a busy embedded BMC does.

Sampled every 50 ms throughout: the latency of ``GET /api/version`` (public, no store access:
the event loop's lag, plus the HTTP round trip) on its own keep-alive connection, and the
server's ``Threads``, ``VmRSS`` (``/proc/PID/status``) and open file descriptors; peak RSS is
``VmHWM`` at the end. ``--nofile N`` starts the server with that soft limit of open files
(1024 is a login shell's usual; ``dragonfly.service`` sets 65536).

The stand-ins: one aiohttp app in a subprocess listening on 1,000 loopback addresses
127.1.X.Y:8443 (HTTPS with a self-signed RSA-2048 certificate, as BMCs ship; ``--http`` for
plain HTTP), answering what the driver reads: the service root, SessionService sessions
(X-Auth-Token), Systems, the system (PowerState, Status, Links to its chassis), the chassis and
its EnvironmentMetrics (PowerWatts). Even BMCs are on, odd ones off.

Reference (labelled, not a peer product): in every round, after the server has stopped, a
trivial aiohttp client loop sweeps the same 1,000 stand-ins with the same cap (16 at a time, a
connector of 64 connections, 2 per host, TLS unverified): sending the requests the driver sends
for a first poll (the service root, log in, Systems, the system, chassis, metrics), and a single
GET of the system with HTTP Basic.

``--driver ipmi``: the BMCs are real OpenIPMI ``ipmi_sim`` processes instead, one per loopback
address 127.2.X.Y (UDP 623; no sensors and no DCMI, so health reads "unknown" and watts none).
They cannot hold requests, so the sweep is timed from the first PUT; for the second sweep the
run waits 60 s x 1.15 after the first and the API says which machines were polled again. The
reference is pyghmi in a 16-thread pool (its own process: pyghmi shares sessions process-wide).

    .venv/bin/python bench/power_poll.py [--machines 1000] [--rounds 1] [--http] [--no-hold]
                                         [--no-second] [--idle 5] [--nofile 1024]
                                         [--logout-delay 0.05] [--profile /tmp/pp.prof]
                                         [--driver ipmi] [--deadline 180]

Server, stand-ins and this client share the machine's cores. Bounded: every request has a
timeout, every phase a deadline; the server and the stand-ins are stopped (SIGTERM, then
SIGKILL) and the temporary directories deleted, also on Ctrl-C and errors. Traffic only on
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import json
import math
import os
import random
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from checkins import (  # noqa: E402 - bench/ on sys.path first
    Phase,
    Server,
    keepalive_sender,
    machines_in_api,
    post_all,
    print_profile,
    report,
    start_server,
)

NET = "127.1"
PORT = 8443
USER, PASSWORD = "admin", "bench-bmc-password"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SESSIONS = "/redfish/v1/SessionService/Sessions"
SYSTEM = "/redfish/v1/Systems/1"
CHASSIS = "/redfish/v1/Chassis/1"
METRICS = f"{CHASSIS}/EnvironmentMetrics"
SAMPLE_EVERY = 0.05
CONCURRENCY = 16  # PowerService's default, and the reference's cap
INTERVAL = 60.0  # PowerService's default interval, for the second sweep's deadline
PHASE_SECONDS = 180
STOP_WAIT = 120.0
STOP_ALLOWED = 20.0  # TimeoutStopSec in dragonfly.service
REFERENCES = (("same requests as the driver's first poll (6: root, log in, Systems, system, "
               "chassis, metrics)", 1),
              ("one GET of the system, HTTP Basic (1)", 0))
IPMI_REFERENCES = (("same commands as the driver (log in, power, health, DCMI power, log out)",
                    3),
                   ("log in, power state, log out", 1))


def bmc_ip(i: int) -> str:
    return f"{NET}.{i // 250}.{i % 250 + 1}"


def bmc_index(ip: str) -> int:
    _, _, x, y = ip.split(".")
    return int(x) * 250 + int(y) - 1


def expected(i: int) -> tuple[str, float]:
    """Stand-in ``i``'s power state (as the API says it) and draw."""
    return ("on", float(180 + i % 300)) if i % 2 == 0 else ("off", 9.0)


# --- the stand-in BMCs (a subprocess) ------------------------------------------------------------

class StandIns:
    """``count`` Redfish BMCs in one aiohttp app; which one a request is for is the local
    address it arrived on. Every request is logged as (monotonic time, BMC, "METHOD path",
    client port): ``time.monotonic`` is CLOCK_MONOTONIC, comparable across processes."""

    def __init__(self, count: int, logout_delay: float = 0.0) -> None:
        self.count = count
        self.logout_delay = logout_delay
        self.log: list[tuple[float, int, str, int]] = []
        self.metrics_reads = [0] * count
        self.tokens: dict[str, int] = {}
        self.released = asyncio.Event()
        self.released.set()
        self.held = 0
        self.app = web.Application(middlewares=[self.middleware])
        self.app.router.add_get("/redfish/v1/", self.root)
        self.app.router.add_get("/redfish/v1", self.root)
        self.app.router.add_post(SESSIONS, self.login)
        self.app.router.add_delete(SESSIONS + "/{n}", self.logout)
        self.app.router.add_get("/redfish/v1/Systems", self.systems)
        self.app.router.add_get(SYSTEM, self.system)
        self.app.router.add_get(CHASSIS, self.chassis)
        self.app.router.add_get(METRICS, self.metrics)
        self.control = web.Application()
        self.control.router.add_post("/hold", self.hold)
        self.control.router.add_post("/release", self.release)
        self.control.router.add_post("/reset", self.reset)
        self.control.router.add_get("/progress", self.progress)
        self.control.router.add_get("/log", self.get_log)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport else ("0.0.0.0", 0)
        peer = transport.get_extra_info("peername") if transport else ("0.0.0.0", 0)
        bmc = bmc_index(local[0])
        request["bmc"] = bmc
        self.log.append((time.monotonic(), bmc, f"{request.method} {request.path}", peer[1]))
        if not self.released.is_set():
            self.held += 1
            await self.released.wait()
        return await handler(request)

    def authed(self, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token")
        if token:
            return self.tokens.get(token) == int(request["bmc"])
        return request.headers.get("Authorization") == BASIC

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({
            "@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.15.0",
            "UUID": f"00000000-0000-4000-8000-{request['bmc']:012d}",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
            "Managers": {"@odata.id": "/redfish/v1/Managers"},
            "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
            "Links": {"Sessions": {"@odata.id": SESSIONS}}})

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body != {"UserName": USER, "Password": PASSWORD}:
            return web.json_response({"error": {"message": "bad credentials"}}, status=401)
        token = os.urandom(16).hex()
        self.tokens[token] = request["bmc"]
        n = len(self.tokens)
        return web.json_response({"@odata.id": f"{SESSIONS}/{n}", "Id": str(n),
                                  "UserName": USER}, status=201,
                                 headers={"X-Auth-Token": token,
                                          "Location": f"{SESSIONS}/{n}"})

    async def logout(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.logout_delay)  # a busy embedded BMC
        self.tokens.pop(request.headers.get("X-Auth-Token", ""), None)
        return web.Response(status=204)

    async def systems(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        return web.json_response({"@odata.id": "/redfish/v1/Systems",
                                  "Name": "Computer System Collection",
                                  "Members@odata.count": 1, "Members": [{"@odata.id": SYSTEM}]})

    async def system(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        bmc = request["bmc"]
        state, _ = expected(bmc)
        return web.json_response({
            "@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": "1", "Name": "System", "SystemType": "Physical",
            "Manufacturer": "Dell Inc.", "Model": "PowerEdge R650",
            "SerialNumber": f"SN{bmc:07d}", "UUID": f"4c4c4544-0000-4000-8000-{bmc:012d}",
            "PowerState": "On" if state == "on" else "Off",
            "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
            "ProcessorSummary": {"Count": 2, "Model": "Intel(R) Xeon(R) Gold 6338",
                                 "Status": {"Health": "OK"}},
            "MemorySummary": {"TotalSystemMemoryGiB": 512, "Status": {"Health": "OK"}},
            "Boot": {"BootSourceOverrideEnabled": "Disabled",
                     "BootSourceOverrideMode": "UEFI", "BootSourceOverrideTarget": "None",
                     "BootSourceOverrideTarget@Redfish.AllowableValues": [
                         "None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiTarget"]},
            "Links": {"Chassis": [{"@odata.id": CHASSIS}],
                      "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/1"}]},
            "Actions": {"#ComputerSystem.Reset": {
                "target": f"{SYSTEM}/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": [
                    "On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"]}}},
            headers={"ETag": f'W/"{bmc}"'})

    async def chassis(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        return web.json_response({
            "@odata.id": CHASSIS, "Id": "1", "Name": "Chassis", "ChassisType": "RackMount",
            "PowerState": "On", "Status": {"State": "Enabled", "Health": "OK"},
            "EnvironmentMetrics": {"@odata.id": METRICS},
            "Power": {"@odata.id": f"{CHASSIS}/Power"},
            "Thermal": {"@odata.id": f"{CHASSIS}/Thermal"}})

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.authed(request):
            return web.Response(status=401)
        bmc = request["bmc"]
        self.metrics_reads[bmc] += 1
        return web.json_response({"@odata.id": METRICS, "Id": "EnvironmentMetrics",
                                  "PowerWatts": {"Reading": expected(bmc)[1],
                                                 "DataSourceUri": f"{CHASSIS}/Sensors/PS"}})

    # control, on its own listener

    async def hold(self, request: web.Request) -> web.Response:
        self.released.clear()
        return web.json_response({})

    async def release(self, request: web.Request) -> web.Response:
        self.released.set()
        return web.json_response({"held": self.held})

    async def reset(self, request: web.Request) -> web.Response:
        self.log.clear()
        self.metrics_reads = [0] * self.count
        self.held = 0
        return web.json_response({})

    async def progress(self, request: web.Request) -> web.Response:
        """How many BMCs have been polled at least ``polls`` times (metrics reads)."""
        polls = int(request.query.get("polls", "1"))
        return web.json_response({"done": sum(1 for n in self.metrics_reads if n >= polls)})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response({"log": self.log})


async def run_stand_ins(count: int, cert: str, key: str, logout_delay: float) -> None:
    stand_ins = StandIns(count, logout_delay)
    context: ssl.SSLContext | None = None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    runner = web.AppRunner(stand_ins.app, access_log=None)
    control = web.AppRunner(stand_ins.control, access_log=None)
    await runner.setup()
    await control.setup()
    for i in range(count):
        await web.TCPSite(runner, bmc_ip(i), PORT, ssl_context=context, backlog=128).start()
    await web.TCPSite(control, "127.0.0.1", 0).start()
    port = control.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await control.cleanup()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """An RSA-2048 self-signed certificate, as BMCs ship them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idrac-bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "bmc.crt", directory / "bmc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class StandInProcess:
    proc: subprocess.Popen[str]
    control: str

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_stand_ins(count: int, tls: Path | None, logout_delay: float = 0.0) -> StandInProcess:
    cert, key = self_signed(tls) if tls else ("", "")
    proc = subprocess.Popen([sys.executable, __file__, "--stand-in", "--machines", str(count),
                             "--cert", str(cert), "--key", str(key),
                             "--logout-delay", str(logout_delay)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready PORT" once all 1,000 listen
    if not line.startswith("ready "):
        proc.kill()
        proc.wait(5)
        raise SystemExit(f"the stand-in BMCs did not start ({line!r})")
    return StandInProcess(proc, f"http://127.0.0.1:{int(line.split()[1])}")


# --- IPMI: OpenIPMI's ipmi_sim, one process per BMC -------------------------------------------

IPMI_NET = "127.2"
PR_SET_PDEATHSIG = 1
CHASSIS_SCRIPT = """#!/bin/sh
# ipmi_sim chassis_control: "chassis.sh INDEX 0x20 get power boot"; even BMCs are on
i=$1; shift 2
op=$1; shift
[ "$op" = get ] || exit 0
for k in "$@"; do
  if [ "$k" = power ]; then echo "power:$(( (i + 1) % 2 ))"; else echo "$k:default"; fi
done
"""
LAN_CONF = """name "bmc{i}"
set_working_mc 0x20
  startlan 1
    addr {ip} 623
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_callback none md2 md5 straight
    guid a123456789abcdefa1234567{i:08x}
  endlan
  chassis_control "{script} {i} 0x20"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""
SIM_EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when this benchmark dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ipmi_ip(i: int) -> str:
    return f"{IPMI_NET}.{i // 250}.{i % 250 + 1}"


def ipmi_expected(i: int) -> tuple[str, str, float | None]:
    """What the API should show for sim ``i``: ipmi_sim has no sensors and no DCMI power
    reading, so health is unknown and watts absent."""
    return ("on" if i % 2 == 0 else "off"), "unknown", None


class IpmiSims:
    """``count`` ipmi_sim processes, each on its own loopback address (UDP 623)."""

    def __init__(self, count: int, work: Path) -> None:
        binary = shutil.which("ipmi_sim")
        if not binary:
            raise SystemExit("ipmi_sim (Debian package openipmi) is needed for --driver ipmi")
        script = work / "chassis.sh"
        script.write_text(CHASSIS_SCRIPT)
        script.chmod(0o755)
        (work / "sim.emu").write_text(SIM_EMU)
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(count):
            root = work / f"sim{i}"
            (root / "state").mkdir(parents=True)
            (root / "lan.conf").write_text(LAN_CONF.format(
                i=i, ip=ipmi_ip(i), script=script, user=USER, password=PASSWORD))
            self.procs.append(subprocess.Popen(
                [binary, "-c", str(root / "lan.conf"), "-f", str(work / "sim.emu"), "-s",
                 str(root / "state"), "-n"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent))
        deadline = time.monotonic() + 120
        while self.listening() < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise SystemExit(f"only {self.listening()} of {count} ipmi_sim listen")
            time.sleep(0.2)

    @staticmethod
    def listening() -> int:
        """UDP sockets bound to 127.2.X.Y:623 (/proc/net/udp: little-endian hex)."""
        with open("/proc/net/udp") as fh:
            return sum(1 for line in fh
                       if (local := line.split()[1])[4:8] == "027F" and local.endswith(":026F"))

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(OSError):
                total += cpu_seconds(proc.pid, children=True)
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def ipmi_reference(count: int, reads: int) -> dict[str, Any]:
    """One sweep of the sims by a trivial loop: pyghmi in a pool of 16 threads, a new session
    per BMC, then ``reads`` commands (3: power state, health, DCMI power, as the driver; 1:
    power state), then a logout. Run in its own process (pyghmi shares sessions
    process-wide)."""
    from concurrent.futures import ThreadPoolExecutor

    from pyghmi.ipmi import command

    def one(i: int) -> str:
        cmd = command.Command(bmc=ipmi_ip(i), userid=USER.encode(),
                              password=PASSWORD.encode())
        state = str(cmd.get_power().get("powerstate"))
        for read in (cmd.get_health, cmd.get_system_power_watts)[:reads - 1]:
            with contextlib.suppress(Exception):  # no sensors, no DCMI: as the driver
                read()
        cmd.ipmi_session.logout()  # a session per poll, as the driver
        return state

    cpu0, t0 = time.process_time(), time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        states = Counter(pool.map(one, range(count)))
    return {"sweep": time.monotonic() - t0, "cpu": time.process_time() - cpu0,
            "polled": sum(states.values()), "stand_cpu": 0.0}


def run_ipmi_reference(count: int, reads: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, "--ipmi-reference", str(reads),
                             "--machines", str(count)], capture_output=True, text=True,
                            timeout=PHASE_SECONDS, check=True)
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


# --- /proc --------------------------------------------------------------------------------------

def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat), with ``children`` also the waited-for
    children's (16 and 17: ipmi_sim's chassis scripts)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def kib(value: str) -> int:
    return int(value.split()[0])


# --- sampling -----------------------------------------------------------------------------------

@dataclass
class Samples:
    probes: list[tuple[float, float]] = field(default_factory=list)  # (sent, seconds or inf)
    # (t, threads, RSS KiB, open file descriptors)
    procs: list[tuple[float, int, int, int]] = field(default_factory=list)
    peak_threads: int = 0

    def lag(self, start: float, end: float) -> str:
        values = sorted(s for t, s in self.probes if start <= t <= end)
        if not values:
            return "no samples"
        failed = sum(1 for v in values if math.isinf(v))
        ok = [v for v in values if not math.isinf(v)] or [0.0]
        p99 = ok[min(len(ok) - 1, math.ceil(len(ok) * 0.99) - 1)]
        return (f"p50 {statistics.median(ok) * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms, "
                f"max {ok[-1] * 1000:6.1f} ms (n={len(values)}"
                + (f", {failed} FAILED" if failed else "") + ")")

    def threads(self, start: float, end: float) -> tuple[int, int]:
        values = [n for t, n, _, _ in self.procs if start <= t <= end] or [0]
        return min(values), max(values)

    def fds(self, start: float, end: float) -> int:
        return max((f for t, _, _, f in self.procs if start <= t <= end), default=0)

    def rss_mib(self, start: float, end: float) -> float:
        return max((r for t, _, r, _ in self.procs if start <= t <= end), default=0) / 1024


async def probe_loop(url: str, samples: Samples, stop: asyncio.Event) -> None:
    """``GET url`` every 50 ms on one keep-alive connection (the next waits for the last)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                     timeout=timeout) as session:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                async with session.get(url) as response:
                    await response.read()
                    took = time.monotonic() - t0 if response.status == 200 else math.inf
            except (aiohttp.ClientError, TimeoutError):
                took = math.inf
            samples.probes.append((t0, took))
            await asyncio.sleep(max(0.0, t0 + SAMPLE_EVERY - time.monotonic()))


async def proc_loop(pid: int, samples: Samples, stop: asyncio.Event) -> None:
    while not stop.is_set():
        status = proc_status(pid)
        threads = int(status["Threads"])
        fds = open_fds(pid)
        samples.procs.append((time.monotonic(), threads, kib(status["VmRSS"]), fds))
        if threads > samples.peak_threads:
            samples.peak_threads = threads
        await asyncio.sleep(SAMPLE_EVERY)


@dataclass
class PowerEvents:
    """The first ``power`` document of each machine on the event stream."""

    first: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    resync: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def event_stream(server: Server, events: PowerEvents) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
            f"{server.url}/api/events",
            headers={"Authorization": f"Bearer {server.token}"}) as response:
        response.raise_for_status()
        kind = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[7:]
                if kind == "hello":
                    events.hello.set()
                elif kind == "resync":
                    events.resync = True
            elif line.startswith("data: ") and kind == "power":
                payload = json.loads(line[6:])
                if payload["op"] == "put" and payload["id"] not in events.first:
                    events.first[payload["id"]] = (time.monotonic(), payload["data"])
                    events.changed.set()


# --- one round against the server ---------------------------------------------------------------

async def put_all(session: aiohttp.ClientSession, server: Server,
                  bodies: list[tuple[str, dict[str, Any]]], concurrency: int) -> list[str]:
    errors: list[str] = []
    queue = iter(bodies)
    headers = {"Authorization": f"Bearer {server.token}"}

    async def worker() -> None:
        for machine, body in queue:
            async with session.put(f"{server.url}/api/machines/{machine}/bmc", json=body,
                                   headers=headers) as response:
                text = await response.read()
                if response.status != 200:
                    errors.append(f"{response.status} {text[:200]!r}")

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return errors


async def control(session: aiohttp.ClientSession, stand_ins: StandInProcess, method: str,
                  path: str) -> dict[str, Any]:
    async with session.request(method, stand_ins.control + path) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


async def stand_in_call(stand_ins: StandInProcess, method: str, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        return await control(session, stand_ins, method, path)


async def wait_until(check: Callable[[], Awaitable[bool]], deadline: float,
                     every: float = 0.2) -> bool:
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


def polls_by_bmc(log: list[list[Any]]) -> dict[int, list[list[list[Any]]]]:
    """Each BMC's requests cut into polls: a poll ends with its EnvironmentMetrics read."""
    by_bmc: dict[int, list[list[Any]]] = defaultdict(list)
    for entry in sorted(log, key=lambda e: e[0]):
        by_bmc[entry[1]].append(entry)
    polls: dict[int, list[list[list[Any]]]] = {}
    for bmc, entries in by_bmc.items():
        cut: list[list[list[Any]]] = [[]]
        for entry in entries:
            cut[-1].append(entry)
            if entry[2] == f"GET {METRICS}":
                cut.append([])
        polls[bmc] = [p for p in cut if p]
    return polls


def nth_polls(polls: dict[int, list[list[list[Any]]]], n: int) -> list[list[list[Any]]]:
    return [p[n] for p in polls.values() if len(p) > n and p[n][-1][2] == f"GET {METRICS}"]


def describe_polls(polls: list[list[list[Any]]], since: float) -> str:
    """Requests, connections and duration per poll (a poll held by the stand-ins counts from
    the release, ``since``)."""
    if not polls:
        return "none"
    took = sorted(p[-1][0] - max(p[0][0], since) for p in polls)
    requests = sum(len(p) for p in polls) / len(polls)
    connections = sum(len({e[3] for e in p}) for p in polls) / len(polls)
    paths = Counter(e[2] for p in polls for e in p)
    return (f"{requests:.1f} requests and {connections:.2f} connections per poll "
            f"({', '.join(f'{path} x{count / len(polls):g}' for path, count in paths.items())}); "
            f"a poll at the BMCs (first to last request) p50 "
            f"{statistics.median(took) * 1000:.1f} ms, "
            f"max {took[-1] * 1000:.1f} ms")


async def one_round(server: Server, stand_ins: StandInProcess | IpmiSims,
                    reports: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    count = len(reports)
    redfish = stand_ins if isinstance(stand_ins, StandInProcess) else None
    hold = redfish is not None and not args.no_hold
    timeout = aiohttp.ClientTimeout(total=30)
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50),
                                     timeout=timeout) as session:
        if redfish:
            await control(session, redfish, "POST", "/reset")
        async with session.get(f"{server.url}/api/version") as response:
            response.raise_for_status()
        # 1. the machines, by check-in
        bodies = [(i, json.dumps(r).encode()) for i, r in enumerate(reports)]
        checkins = Phase()
        t = time.monotonic()
        answers = await post_all(keepalive_sender(session, server.url), "/api/agent/checkin",
                                 bodies, 50, checkins)
        if checkins.errors or len(answers) != count:
            raise SystemExit(f"check-ins failed: {checkins.errors[:3]}")
        machine_of = {i: a["machine_id"] for i, a in answers.items()}
        ids = set(machine_of.values())

        async def all_present() -> bool:
            return len(await machines_in_api(session, server, ids)) == count

        if not await wait_until(all_present, time.monotonic() + 60):
            raise SystemExit("the checked-in machines did not all appear in the API")
        out["checkins"] = time.monotonic() - t

        # samplers and the event stream
        samples, events, stop = Samples(), PowerEvents(), asyncio.Event()
        streamer = asyncio.create_task(event_stream(server, events))
        await asyncio.wait_for(events.hello.wait(), 10)
        samplers = [asyncio.create_task(probe_loop(f"{server.url}/api/version", samples, stop)),
                    asyncio.create_task(proc_loop(server.proc.pid, samples, stop))]
        try:
            # 2. idle
            idle0 = time.monotonic()
            await asyncio.sleep(args.idle)
            idle1 = time.monotonic()
            out["idle_rss"] = kib(proc_status(server.proc.pid)["VmRSS"]) / 1024
            # 3. BMC records
            scheme = "http" if args.http else "https"
            records = [(machine_of[i], {"driver": "redfish", "address": f"{scheme}://{bmc_ip(i)}",
                                        "port": PORT, "user": USER, "password": PASSWORD,
                                        "insecure": not args.http} if redfish else
                        {"driver": "ipmi", "address": ipmi_ip(i), "user": USER,
                         "password": PASSWORD})
                       for i in range(count)]
            if redfish and hold:
                await control(session, redfish, "POST", "/hold")
            put0 = time.monotonic()
            cpu_put = server.cpu_seconds()
            errors = await put_all(session, server, records, 50)
            put1 = time.monotonic()
            if errors:
                raise SystemExit(f"{len(errors)} BMC records refused, e.g. {errors[0]}")
            held = 0
            if redfish and hold:
                held = (await control(session, redfish, "POST", "/release"))["held"]
            t0 = time.monotonic() if hold else put0
            cpu0, stand_cpu0 = server.cpu_seconds(), stand_ins.cpu_seconds()
            if not hold:
                cpu0 = cpu_put
            wall0 = time.time() - (time.monotonic() - t0)
            # 4. the first sweep, seen on the event stream
            deadline = t0 + args.deadline
            while len(events.first) < count and time.monotonic() < deadline \
                    and not events.resync:
                events.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(events.changed.wait(), 1)
            if events.resync:
                raise SystemExit("the event stream fell behind (resync)")
            out["polled"] = len(events.first)
            t1 = max((at for at, _ in events.first.values()), default=time.monotonic())
            if len(events.first) < count:
                t1 = time.monotonic()
            cpu1, stand_cpu1 = server.cpu_seconds(), stand_ins.cpu_seconds()
            out.update(put=put1 - put0, held=held, sweep=t1 - t0, put_cpu=cpu0 - cpu_put,
                       cpu=cpu1 - cpu0, stand_cpu=stand_cpu1 - stand_cpu0,
                       errors=Counter(d.get("reason") or "ok" for _, d in events.first.values()),
                       idle_lag=samples.lag(idle0, idle1), sweep_lag=samples.lag(t0, t1),
                       put_lag=samples.lag(put0, put1),
                       idle_threads=samples.threads(idle0, idle1),
                       sweep_threads=samples.threads(t0, t1),
                       sweep_rss=samples.rss_mib(t0, t1), idle_fds=samples.fds(idle0, idle1),
                       sweep_fds=samples.fds(t0, t1))
            # 5. the second sweep, from the stand-ins' log
            if redfish and not args.no_second:
                async def second_done() -> bool:
                    assert redfish is not None
                    progress = await control(session, redfish, "GET", "/progress?polls=2")
                    return int(progress["done"]) >= count

                await wait_until(second_done, t1 + INTERVAL * 1.15 + 30, every=1.0)
            elif not args.no_second:  # IPMI: no request log; the API says who was polled again
                s0 = time.monotonic()
                await asyncio.sleep(max(0.0, t1 + INTERVAL * 1.15 + 10 - s0))
                s1 = time.monotonic()
                out.update(linger=s1 - t0, linger_lag=samples.lag(s0, s1),
                           linger_threads=samples.threads(s0, s1))
        finally:
            stop.set()
            await asyncio.gather(*samplers, return_exceptions=True)
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await streamer
        status = proc_status(server.proc.pid)
        out.update(peak_rss=kib(status["VmHWM"]) / 1024, peak_threads=samples.peak_threads,
                   end_rss=kib(status["VmRSS"]) / 1024, end_threads=int(status["Threads"]),
                   end=time.monotonic() - t0)
        first_checked = {m: float(d.get("checked_at") or 0)
                         for m, (_, d) in events.first.items()}
        out["api"] = await check_api(session, server, machine_of, wall0,
                                     expect if redfish else ipmi_expected, first_checked)
        if not redfish:
            return out
        log = (await control(session, redfish, "GET", "/log"))["log"]
        polls = polls_by_bmc(log)
        first, second = nth_polls(polls, 0), nth_polls(polls, 1)
        out["first_polls"] = describe_polls(first, t0)
        out["second_count"] = len(second)
        if second:
            s0 = min(p[0][0] for p in second)
            s1 = max(p[-1][0] for p in second)
            out.update(second_start=s0 - t0, second_span=s1 - s0,
                       second_lag=samples.lag(s0, s1), second_threads=samples.threads(s0, s1),
                       second_polls=describe_polls(second, s0),
                       second_fds=samples.fds(s0, s1))
    return out


def expect(i: int) -> tuple[str, str, float | None]:
    """What the API should show for Redfish stand-in ``i``."""
    state, watts = expected(i)
    return state, "ok", watts


async def check_api(session: aiohttp.ClientSession, server: Server, machine_of: dict[int, str],
                    wall0: float, expected_of: Callable[[int], tuple[str, str, float | None]],
                    first: dict[str, float]) -> str:
    """Every machine's power as the API shows it, against its BMC; ``first``: each machine's
    first result's ``checked_at`` (from the event stream), to count those polled since."""
    headers = {"Authorization": f"Bearer {server.token}"}
    slots = asyncio.Semaphore(16)
    wrong: list[str] = []
    again = 0

    async def one(i: int, machine: str) -> None:
        async with slots, session.get(f"{server.url}/api/machines/{machine}/power",
                                      headers=headers) as response:
            doc = await response.json()
        nonlocal again
        got = (doc.get("state"), doc.get("health"), doc.get("watts"), doc.get("error"))
        checked = doc.get("checked_at") or 0
        again += checked > first.get(machine, math.inf)
        if got != (*expected_of(i), "") or checked < wall0:
            wrong.append(f"{machine}: {got} checked_at {doc.get('checked_at')}")

    await asyncio.gather(*(one(i, m) for i, m in machine_of.items()))
    since = f"; {again} polled again since their first result"
    if wrong:
        return f"{len(wrong)} of {len(machine_of)} WRONG, e.g. {wrong[0]}{since}"
    return (f"all {len(machine_of)} show their BMC's state, health and watts, "
            f"checked after the sweep began{since}")


# --- the reference client -----------------------------------------------------------------------

async def reference(stand_ins: StandInProcess, count: int, scheme: str, reads: int
                    ) -> dict[str, Any]:
    """One sweep by a trivial client loop: 16 BMCs at a time, the driver's connector limits.
    ``reads``: how often a poll reads the system after logging in (the driver: once); 0 for a
    single GET of the system with HTTP Basic and nothing else."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 4, limit_per_host=2)
    slots = asyncio.Semaphore(CONCURRENCY)
    states: Counter[str] = Counter()
    accept = {"Accept": "application/json", "OData-Version": "4.0"}
    await stand_in_call(stand_ins, "POST", "/reset")
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        async def get(url: str, headers: dict[str, str]) -> dict[str, Any]:
            async with session.get(url, headers=headers, ssl=False) as response:
                body: dict[str, Any] = json.loads(await response.read())
                return body

        async def one(i: int) -> None:
            base = f"{scheme}://{bmc_ip(i)}:{PORT}"
            async with slots:
                if not reads:
                    system = await get(base + SYSTEM, {**accept, "Authorization": BASIC})
                    states[system["PowerState"]] += 1
                    return
                await get(base + "/redfish/v1/", accept)
                async with session.post(base + SESSIONS, json={"UserName": USER,
                                                               "Password": PASSWORD},
                                        headers=accept, ssl=False) as response:
                    await response.read()
                    token = response.headers["X-Auth-Token"]
                auth = {**accept, "X-Auth-Token": token}
                await get(base + "/redfish/v1/Systems", auth)
                for _ in range(reads):
                    system = await get(base + SYSTEM, auth)
                await get(base + CHASSIS, auth)
                await get(base + METRICS, auth)
                states[system["PowerState"]] += 1

        cpu0, stand0 = time.process_time(), stand_ins.cpu_seconds()
        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        took = time.monotonic() - t0
        cpu1, stand1 = time.process_time(), stand_ins.cpu_seconds()
    return {"sweep": took, "cpu": cpu1 - cpu0, "stand_cpu": stand1 - stand0,
            "polled": sum(states.values())}


# --- main ---------------------------------------------------------------------------------------

def stop_server(server: Server) -> float:
    """SIGTERM and the time until the server exits (SIGKILL after ``STOP_WAIT`` seconds)."""
    t0 = time.monotonic()
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)
    return time.monotonic() - t0


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def print_round(n: int, r: dict[str, Any], count: int, hold: bool) -> None:
    t_idle, t_sweep = r["idle_threads"], r["sweep_threads"]
    since = "the release" if hold else "the first PUT"
    print(f"round {n}: {count} machines by check-in in {r['checkins']:.2f} s; {count} BMC "
          f"records PUT in {r['put']:.2f} s"
          + (f" ({r['held']} requests held meanwhile)" if hold else ""))
    done = ("" if r["polled"] == count else
            f" INCOMPLETE: {r['polled']} of {count} results by the deadline;")
    print(f"  first sweep:{done} {r['polled']} polled in {r['sweep']:.2f} s from {since} "
          f"({r['polled'] / r['sweep']:,.0f} BMCs/s; results {dict(r['errors'])}); "
          f"CPU server {r['cpu']:.2f} s"
          + (f" (the PUTs before it: {r['put_cpu']:.2f} s)" if hold else " (PUTs included)")
          + f", BMCs {r['stand_cpu']:.2f} s")
    if "first_polls" in r:
        print(f"  at the BMCs: {r['first_polls']}")
    print(f"  threads: idle {t_idle[1]}, during the sweep {t_sweep[0]}-{t_sweep[1]}, "
          f"peak {r['peak_threads']}")
    print(f"  RSS: idle {r['idle_rss']:.0f} MiB, max during the sweep {r['sweep_rss']:.0f} MiB, "
          f"peak (VmHWM) {r['peak_rss']:.0f} MiB, {r['end']:.0f} s after the sweep began "
          f"{r['end_rss']:.0f} MiB; open fds: idle {r['idle_fds']}, sweep max "
          f"{r['sweep_fds']}" + (f", second sweep max {r['second_fds']}"
                                 if "second_fds" in r else ""))
    print(f"  GET /api/version every 50 ms, idle:       {r['idle_lag']}")
    print(f"                        during the PUTs:    {r['put_lag']}")
    print(f"                        during the sweep:   {r['sweep_lag']}")
    if "second_span" in r:
        t2 = r["second_threads"]
        print(f"  second sweep (service's own schedule): {r['second_count']} polled between "
              f"{r['second_start']:.1f} s and {r['second_start'] + r['second_span']:.1f} s "
              f"after the first began; threads {t2[0]}-{t2[1]}")
        print(f"  at the BMCs: {r['second_polls']}")
        print(f"                        during it:          {r['second_lag']}")
    if "linger" in r:
        t2 = r["linger_threads"]
        print(f"  then waited for the service's second sweep until {r['linger']:.0f} s after the "
              f"first began: threads {t2[0]}-{t2[1]}; GET /api/version {r['linger_lag']}")
    print(f"  API check: {r['api']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="each with a fresh server")
    parser.add_argument("--driver", choices=("redfish", "ipmi"), default="redfish",
                        help="ipmi: an ipmi_sim process per BMC instead of Redfish stand-ins")
    parser.add_argument("--http", action="store_true", help="plain HTTP stand-ins (not HTTPS)")
    parser.add_argument("--no-hold", action="store_true",
                        help="let polls run while the BMC records are PUT")
    parser.add_argument("--no-second", action="store_true",
                        help="do not wait for the service's second sweep (about 70 s)")
    parser.add_argument("--idle", type=float, default=5.0, help="idle sampling, seconds")
    parser.add_argument("--deadline", type=float, default=PHASE_SECONDS,
                        help="seconds the first sweep may take (default %(default)s)")
    parser.add_argument("--nofile", type=int, default=0,
                        help="the server's soft limit of open files (default: inherited)")
    parser.add_argument("--logout-delay", type=float, default=0.0,
                        help="the stand-ins answer a session logout after this many seconds")
    parser.add_argument("--profile", type=Path,
                        help="run the server under cProfile (one round), write stats here")
    parser.add_argument("--stand-in", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ipmi-reference", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cert", default="", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.machines <= 10_000:
        parser.error("--machines 1..10000")
    if args.stand_in:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a listener per BMC
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(run_stand_ins(args.machines, args.cert, args.key, args.logout_delay))
        return 0
    if args.ipmi_reference:
        print(json.dumps(ipmi_reference(args.machines, args.ipmi_reference)))
        return 0
    signal.signal(signal.SIGTERM, interrupt)
    ipmi = args.driver == "ipmi"
    hold = not ipmi and not args.no_hold
    scheme = "http" if args.http else "https"
    rng = random.Random(20261203)
    used: set[str] = set()
    reports = [report(i, rng, used) for i in range(args.machines)]
    nofile = args.nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    bmcs = (f"ipmi_sim processes ({IPMI_NET}.X.Y:623, one each)" if ipmi else
            f"Redfish stand-ins ({scheme}, one process, {NET}.X.Y:{PORT})")
    print(f"{args.machines} {bmcs}; dragonfly serve with default power settings (interval "
          f"60 s, 16 at a time); {os.cpu_count()} CPUs shared by server, BMCs and this client; "
          f"server's open-files limit {nofile}; load average {load()}; "
          f"{datetime.date.today()}", flush=True)
    results = []
    refs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with contextlib.ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="dragonfly-pp-")))
        stand_ins: StandInProcess | IpmiSims
        if ipmi:
            stand_ins = IpmiSims(args.machines, work)
        else:
            stand_ins = start_stand_ins(args.machines, None if args.http else work,
                                        args.logout_delay)
        cleanup.callback(stand_ins.stop)
        if args.nofile:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
        for n in range(1 if args.profile else args.rounds):
            with contextlib.ExitStack() as round_cleanup:
                state = Path(round_cleanup.enter_context(tempfile.TemporaryDirectory(
                    prefix="dragonfly-power-")))
                server = start_server(state, args.profile, None)  # inherits RLIMIT_NOFILE
                round_cleanup.callback(server.stop)
                result = asyncio.run(one_round(server, stand_ins, reports, args))
                results.append(result)
                print_round(n + 1, result, args.machines, hold)
                print(f"  load average now {load()}", flush=True)
                if isinstance(stand_ins, StandInProcess):
                    asyncio.run(stand_in_call(stand_ins, "POST", "/reset"))
                stopped = stop_server(server)
                logouts = "IPMI sessions"
                if isinstance(stand_ins, StandInProcess):
                    log = asyncio.run(stand_in_call(stand_ins, "GET", "/log"))["log"]
                    logouts = (f"{sum(1 for e in log if e[2].startswith('DELETE '))} Redfish "
                               "sessions")
                print(f"  shutdown (SIGTERM to exit): {stopped:.2f} s, {logouts} logged out "
                      f"meanwhile (exit code {server.proc.returncode}; dragonfly.service "
                      f"allows {STOP_ALLOWED:g} s)", flush=True)
                if "Traceback" in server.log.read_text():
                    print(server.log.read_text()[-3000:], file=sys.stderr)
            # the reference, after the server has gone, in every round (the load drifts)
            for name, reads in IPMI_REFERENCES if ipmi else REFERENCES:
                if isinstance(stand_ins, StandInProcess):
                    r = asyncio.run(reference(stand_ins, args.machines, scheme, reads))
                else:
                    r = run_ipmi_reference(args.machines, reads)
                refs[name].append(r)
                kind = "pyghmi in a thread pool" if ipmi else "aiohttp loop"
                print(f"  reference, trivial {kind}, {CONCURRENCY} at a time, {name}: "
                      f"{r['polled']} polled in {r['sweep']:.2f} s "
                      f"({result['sweep'] / r['sweep']:.2f}x); CPU client {r['cpu']:.2f} s, "
                      f"BMCs {r['stand_cpu']:.2f} s", flush=True)
    sweep = statistics.median(r["sweep"] for r in results)
    cpu = statistics.median(r["cpu"] for r in results)
    print(f"\nmedian of {len(results)} round(s): first sweep of {args.machines} BMCs "
          f"{sweep:.2f} s, server CPU {cpu:.2f} s; load average {load()}")
    for name, rs in refs.items():
        ratio = statistics.median(p["sweep"] / r["sweep"] for p, r in zip(results, rs,
                                                                           strict=True))
        print(f"  reference, {name}: {statistics.median(r['sweep'] for r in rs):.2f} s, "
              f"client CPU {statistics.median(r['cpu'] for r in rs):.2f} s; "
              f"dragonfly / reference {ratio:.2f}x")
    if args.profile:
        print_profile(args.profile, 30)
    ok = all(r["api"].startswith("all") and set(r["errors"]) == {"ok"}
             and r["polled"] == args.machines for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
