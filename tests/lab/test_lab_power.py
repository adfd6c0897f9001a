"""Power control against a real BMC driving a real machine: `dragonfly serve` in the lab
namespace, OpenIPMI's ipmi_sim as the machine's BMC (IPMI over LAN on an address of its own on
the lab bridge), and a QEMU guest that its chassis control powers: "power on" starts QEMU,
which PXE-boots through Dragonfly into discovery; "power off" stops it; the guest's KCS
interface (QEMU's ipmi-bmc-extern, connected back to ipmi_sim) lets the discovery agent read the
BMC's address with ipmitool.

Why a chassis_control program and not ipmi_sim's own ``startcmd``: with only ``startcmd``,
ipmi_sim powers the process on and off but refuses Set System Boot Options ("Invalid data field
in request"), so the one-time PXE boot every real BMC accepts, and which adoption sets first,
would fail. A chassis_control program gets power, reset and the boot device (and, when one is
configured, ipmi_sim asks it, not ``startcmd``, for all of them), so it starts and stops QEMU
itself (tests/lab/harness.py ``CHASSIS_CONTROL``).

1. Adopt from BMC: the machine was never seen; ``POST /api/power/adopt`` sets one-time PXE and
   powers on through IPMI, the guest boots discovery, the agent reports the BMC's address and
   the adoption links the record to the new machine; Dragonfly then reads it on, tests the
   connection, cycles it (QEMU exits, a new one starts: a second power-on), powers it off
   (QEMU exits) and reads it off. (The BMC form's suggestion from the agent's report, before
   any record exists, is tests/test_power_adopt.py's; the record made by hand with
   ``PUT /api/machines/{id}/bmc`` is driven in tests/lab/test_lab_deploy.py's reimage.)
2. A wrong password and an address nobody answers at: test connection and a power action give
   readable reasons within the BMC timeout, and the server answers other requests at once while
   the unreachable BMC is being waited for.

No BMC password appears in any log these tests produce (the server's, ipmi_sim's, the chassis
control's, QEMU's and the guest's serial output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import BmcVm, DiscoveryImage, LabNet, Proc, start_process
from tests.lab.test_lab_e2e import dragonfly

pytestmark = pytest.mark.lab

BMC_ADDRESS = "10.99.0.60"  # ipmi_sim's LAN channel, on the lab bridge
NOBODY = "10.99.0.250"  # on the lab segment, outside the DHCP range: nothing answers there
PASSWORD = "Lab-BMC-pass-7f3k"  # distinctive, so a leak into a log is found
WRONG = "Wrong-BMC-pass-q9z2"
USER = "labadmin"
BMC_TIMEOUT = 10.0  # PowerService's default hard limit of one BMC call


@dataclass
class Answer:
    status: int
    body: Any
    seconds: float  # as curl measured it


@dataclass
class Api:
    """`dragonfly serve` in the lab namespace, called with curl from inside it (JSON bodies go
    through stdin, never the command line)."""

    net: LabNet
    port: int
    token: str
    proc: Proc
    log: Path

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Answer:
        args = ["curl", "-s", "-X", method, "--max-time", str(timeout), "-H",
                f"Authorization: Bearer {self.token}", "-w", "\n%{http_code} %{time_total}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        result = subprocess.run(
            self.net.exec_args(*args, f"http://{self.net.server_ip}:{self.port}{path}"),
            input=None if body is None else json.dumps(body), capture_output=True, text=True,
            timeout=timeout + 15)
        text, _, tail = result.stdout.rpartition("\n")
        if result.returncode != 0 or not tail.strip():
            raise AssertionError(f"{method} {path}: curl failed ({result.returncode}) "
                                 f"{result.stderr}\nserver:\n{self.proc.tail(60)}")
        status, seconds = tail.split()
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = text
        return Answer(int(status), parsed, float(seconds))

    def ok(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        answer = self.call(method, path, body, timeout)
        assert answer.status == 200, (f"{method} {path} -> {answer.status}: {answer.body}\n"
                                      f"server:\n{self.proc.tail(40)}")
        return answer.body

    def get(self, path: str) -> Any:
        return self.ok("GET", path)


@pytest.fixture
def power_server(lab_net: LabNet, tmp_path: Path, discovery_image: DiscoveryImage
                 ) -> Iterator[Callable[[], Api]]:
    """``start()``: a fresh installation (admin, API token) served by `dragonfly serve` on the
    lab bridge, proxyDHCP beside the site's dnsmasq, agents heartbeating every 5 s."""
    started: list[Proc] = []
    env = {"DRAGONFLY_CONFIG": str(tmp_path / "none.toml"), "DRAGONFLY_AGENT_POLL_SECONDS": "5"}

    def start() -> Api:
        state = tmp_path / "state"
        discovery_image.install(state)
        dragonfly("user", "add", "admin", "--role", "admin", "--password-stdin",
                  "--state-dir", str(state), stdin="lab admin password\n", env=env)
        token = dragonfly("token", "create", "--user", "admin", "--name", "lab",
                          "--state-dir", str(state), env=env)
        port = 3000 + os.getpid() % 1000
        log = tmp_path / "dragonfly.log"
        proc = start_process("dragonfly", lab_net.exec_args(
            "env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "dragonfly",
            "serve", "--state-dir", str(state), "--bind", lab_net.server_ip, "--port",
            str(port), "--boot-interface", "br0", "--dhcp-mode", "auto"), log)
        started.append(proc)
        api = Api(lab_net, port, token, proc, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.alive(), f"dragonfly serve exited:\n{proc.tail()}"
            try:
                if api.call("GET", "/api/version", timeout=5).status == 200:
                    return api
            except AssertionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"dragonfly serve did not answer:\n{proc.tail()}")

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
        for proc in started:
            assert "Traceback" not in proc.text(), proc.tail(80)


# --- helpers -----------------------------------------------------------------------------------

def wait_until(what: str, check: Callable[[], Any], seconds: float,
               explain: Callable[[], str] = lambda: "", every: float = 1.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s\n{explain()}")
        time.sleep(every)


def machine_by_mac(api: Api, mac: str) -> dict[str, Any] | None:
    for item in api.get("/api/machines?limit=100")["items"]:
        if item["mac"] == mac:
            return dict(api.get(f"/api/machines/{item['id']}"))
    return None


def power_state(api: Api, machine: str, want: str) -> dict[str, Any] | None:
    status = api.get(f"/api/machines/{machine}/power")
    return status if status["state"] == want else None


def explain(api: Api, bmc: BmcVm) -> Callable[[], str]:
    return lambda: f"{bmc.guest.diagnostics()}\nserver:\n{api.proc.tail(60)}"


def assert_readable(reason: Any) -> None:
    """A reason an operator can act on: words, not None, not an empty string, no traceback."""
    assert isinstance(reason, str), reason
    assert len(reason) > 15, reason
    assert reason.strip() not in ("None", "null", "")
    assert "Traceback" not in reason and "None" not in reason.split(), reason


def assert_no_password_in_logs(paths: list[Path], *secrets: str) -> None:
    assert paths, "no log files to check"
    for path in paths:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a BMC password is in {path}"


def bmc_body(address: str, password: str) -> dict[str, Any]:
    return {"driver": "ipmi", "address": address, "port": 623, "user": USER,
            "password": password}


def logs_of(tmp_path: Path) -> list[Path]:
    """Every log file the test wrote: the server's, ipmi_sim's, chassis control's, QEMU's and
    the guest's serial output."""
    return sorted(p for p in tmp_path.rglob("*.log") if p.is_file())


def power_off_through_dragonfly(api: Api, bmc: BmcVm, machine: str) -> None:
    """Off through the API: the guest's QEMU exits, the BMC and then Dragonfly say off."""
    assert bmc.guest.running()
    started = time.monotonic()
    assert api.ok("POST", f"/api/machines/{machine}/power/off") == {
        "machine": machine, "op": "off", "ok": True}
    wait_until("QEMU exits after power off", lambda: not bmc.guest.running(), 30,
               explain(api, bmc), every=0.2)
    gone = time.monotonic() - started
    assert bmc.power_status() == "off"
    wait_until("Dragonfly reads the power off", lambda: power_state(api, machine, "off"), 60,
               explain(api, bmc))
    print(f"power off: QEMU gone {gone:.1f} s after the request")


# --- 1. adopt from BMC ---------------------------------------------------------------------------

@pytest.mark.timeout(900)
def test_adopt_from_bmc_powers_on_a_vm_that_pxe_boots_and_links(
        power_server: Callable[[], Api], bmc_vm: Callable[..., BmcVm],
        site_dhcp: Callable[..., Proc], tmp_path: Path) -> None:
    site_dhcp()
    api = power_server()
    mac = "52:54:00:d7:a0:01"
    bmc = bmc_vm(BMC_ADDRESS, mac, user=USER, password=PASSWORD)
    assert bmc.power_status() == "off" and not bmc.guest.running()
    assert machine_by_mac(api, mac) is None

    started = time.monotonic()
    answer = api.call("POST", "/api/power/adopt", bmc_body(BMC_ADDRESS, PASSWORD))
    if answer.status == 404 and "adopt" not in json.dumps(answer.body):
        pytest.fail(f"POST /api/power/adopt is not there: {answer.body}")
    assert answer.status == 200, (answer.status, answer.body, bmc.guest.diagnostics())
    adoption = answer.body
    assert adoption["state"] == "waiting", adoption
    assert adoption["reason"] == "" and adoption["machine"] is None
    assert adoption["address"] == BMC_ADDRESS and adoption["has_password"] is True
    assert "password" not in adoption
    # Through IPMI: one-time PXE first, then power on; the chassis started QEMU.
    chassis = bmc.guest.chassis_log
    assert "set boot pxe" in chassis and "set power 1" in chassis, chassis
    assert chassis.index("set boot pxe") < chassis.index("set power 1"), chassis
    assert "starting the guest (boot device: pxe)" in chassis, chassis
    wait_until("QEMU started by the BMC", bmc.guest.running, 15, explain(api, bmc), every=0.2)

    machine = wait_until("the machine registers", lambda: machine_by_mac(api, mac), 400,
                         explain(api, bmc), every=2)
    registered = time.monotonic() - started
    assert machine["bmc"]["ip"] == BMC_ADDRESS, machine["bmc"]

    def linked() -> dict[str, Any] | None:
        for item in api.get("/api/power/adoptions"):
            if item["id"] == adoption["id"] and item["state"] == "linked":
                return dict(item)
        return None
    done = wait_until("the adoption links", linked, 60, explain(api, bmc))
    assert done["machine"] == machine["id"], done
    record = api.get(f"/api/machines/{machine['id']}/bmc")
    assert record["configured"] is True, record
    assert record["driver"] == "ipmi" and record["address"] == BMC_ADDRESS, record
    assert record["user"] == USER and record["has_password"] is True
    assert "password" not in record

    machine_id = machine["id"]
    wait_until("Dragonfly reads the power on", lambda: power_state(api, machine_id, "on"), 60,
               explain(api, bmc))
    test = api.ok("POST", f"/api/machines/{machine_id}/bmc/test")
    assert test["ok"] is True, test
    assert {s["step"]: s.get("value") for s in test["steps"]}["state"] == "on", test

    # A cycle through Dragonfly: off (this QEMU exits), on (a new one).
    assert bmc.guest.power_ons() == 1
    first = bmc.guest.pid()
    cycled = time.monotonic()
    assert api.ok("POST", f"/api/machines/{machine_id}/power/cycle")["ok"] is True
    wait_until("a new QEMU after the cycle",
               lambda: bmc.guest.running() and bmc.guest.pid() != first, 60,
               explain(api, bmc), every=0.2)
    cycle = time.monotonic() - cycled
    assert bmc.guest.power_ons() == 2
    assert bmc.power_status() == "on"

    power_off_through_dragonfly(api, bmc, machine_id)
    assert bmc.guest.power_ons() == 2
    print(f"\nadopt: request to registered {registered:.0f} s, cycle to a new QEMU {cycle:.1f} s")
    assert_no_password_in_logs(logs_of(tmp_path), PASSWORD)


# --- 2. a wrong password and an unreachable BMC ---------------------------------------------------

def check_in(api: Api, mac: str) -> str:
    """A machine registered the way its agent does it (the check-in API), without a VM."""
    report = {"agent_version": "lab", "boot_mac": mac, "cpu": {"threads": 1},
              "memory_bytes": 512 << 20, "disks": [{"name": "vda", "size_bytes": 1 << 30}],
              "nics": [{"name": "eth0", "mac": mac}]}
    answer = api.ok("POST", "/api/agent/checkin", report)
    return str(answer["machine_id"])


def polled_error(api: Api, machine: str) -> dict[str, Any] | None:
    """The machine's power status once a monitoring poll has failed."""
    status = api.get(f"/api/machines/{machine}/power")
    return status if status["checked_at"] and status["error"] else None


def latency(api: Api) -> float:
    """How long the server takes to answer GET /api/version (curl's total time)."""
    answer = api.call("GET", "/api/version", timeout=30)
    assert answer.status == 200, answer
    return answer.seconds


@pytest.mark.timeout(600)
def test_wrong_password_and_unreachable_bmc_give_reasons_and_never_block(
        power_server: Callable[[], Api], bmc_vm: Callable[..., BmcVm], tmp_path: Path) -> None:
    api = power_server()
    mac = "52:54:00:d7:a0:03"
    bmc = bmc_vm(BMC_ADDRESS, mac, user=USER, password=PASSWORD)
    machine = check_in(api, mac)

    # The right BMC, the wrong password: refused, and said so.
    api.ok("PUT", f"/api/machines/{machine}/bmc", bmc_body(BMC_ADDRESS, WRONG))
    test = api.call("POST", f"/api/machines/{machine}/bmc/test")
    assert test.status == 200 and test.body["ok"] is False, test
    assert_readable(test.body["reason"])
    assert "refused the credentials" in test.body["reason"], test.body
    assert test.body["steps"][0]["reason"] == "credentials", test.body
    assert test.seconds < BMC_TIMEOUT, test
    on = api.call("POST", f"/api/machines/{machine}/power/on")
    assert on.status == 502, on
    assert_readable(on.body["error"])
    assert "refused the credentials" in on.body["error"], on.body
    assert on.seconds < BMC_TIMEOUT + 5, on
    assert not bmc.guest.running() and bmc.guest.power_ons() == 0  # nothing was powered on
    print(f"\nwrong password: test {test.seconds:.1f} s, power on {on.seconds:.1f} s: "
          f"{on.body['error']}")

    # Monitoring polled it at once (a new record is polled at once) and says why it failed.
    polled = wait_until("the monitoring's first poll", lambda: polled_error(api, machine), 30)
    assert polled["reason"] == "credentials", polled
    assert "refused the credentials" in polled["error"], polled

    # Nobody at the address: the calls wait for the BMC timeout, the server does not. (The
    # monitoring's first poll goes first: calls to one BMC take turns, so a call made while
    # it runs would wait for it before its own timeout starts.)
    api.ok("PUT", f"/api/machines/{machine}/bmc", bmc_body(NOBODY, PASSWORD))
    polled = wait_until("the monitoring's first poll", lambda: polled_error(api, machine),
                        3 * BMC_TIMEOUT)
    assert polled["reason"] in ("timeout", "unreachable"), polled
    assert_readable(polled["error"])
    for method, path in (("POST", f"/api/machines/{machine}/bmc/test"),
                         ("POST", f"/api/machines/{machine}/power/on")):
        pending: dict[str, Answer] = {}

        def slow(method: str = method, path: str = path,
                 pending: dict[str, Answer] = pending) -> None:
            pending["answer"] = api.call(method, path, timeout=120)

        thread = threading.Thread(target=slow, name="unreachable BMC")
        thread.start()
        time.sleep(0.5)  # the slow call is in the server now
        latencies: list[float] = []
        while thread.is_alive():
            latencies.append(latency(api))
        thread.join()
        answer = pending["answer"]
        body = answer.body
        reason = body["reason"] if path.endswith("/test") else body["error"]
        assert_readable(reason)
        assert NOBODY in reason, reason
        assert any(w in reason for w in ("timeout", "did not answer", "no route", "reach")), \
            reason
        if path.endswith("/test"):
            assert answer.status == 200 and body["ok"] is False, answer
            assert body["steps"][0]["reason"] in ("timeout", "unreachable"), body
        else:
            assert answer.status == 502, answer
            assert body["detail"]["reason"] in ("timeout", "unreachable"), body
        # Answered within the BMC timeout (and a little), and the server meanwhile at once.
        assert answer.seconds < BMC_TIMEOUT + 3, answer
        assert latencies, "no request got through while the BMC call was pending"
        assert max(latencies) < BMC_TIMEOUT / 5, latencies
        print(f"unreachable {path.rsplit('/', 1)[-1]}: {answer.seconds:.1f} s, "
              f"{len(latencies)} other requests meanwhile, slowest {max(latencies):.2f} s: "
              f"{reason}")
    status = api.get(f"/api/machines/{machine}/power")
    assert status["configured"] is True

    bmc.stop()  # its log is complete
    assert_no_password_in_logs(logs_of(tmp_path), PASSWORD, WRONG)

