"""The server side of the agent protocol: validate reports, match identity, move machines.

``parse_report`` and ``parse_heartbeat`` are pure: they take the decoded JSON and return clean
values or raise ``InvalidInput`` naming the offending field (``disks[2].size_bytes must be ...``).
Unknown fields are ignored so that newer agents can talk to older servers.

``handle_checkin`` matches the reporting machine on any of its MACs, then on its SMBIOS UUID,
creates it (``discovered``) or refreshes its inventory, sends machines that were ready, failed
or in maintenance back through ``rediscover``, and answers with what the agent should do next.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import (
    LOCALBOOT_IN,
    HistoryEvent,
    Machine,
    State,
    Workflow,
    boots_own_disk,
    new_id,
)
from dragonfly.errors import InvalidInput, NotFound
from dragonfly.format import binary_bytes, elapsed

MAX_TEXT = 256
MAX_DISKS = 256
MAX_NICS = 128
MAX_BYTES = 1 << 60  # an exbibyte: more than any disk or memory we expect to meet
MAX_CPUS = 65_536
MAX_SPEED_MBPS = 10_000_000
POLL_DEFAULT = 30
POLL_MIN, POLL_MAX = 2, 300
ACTIONS = ("wait", "reboot", "poweroff", "localboot")
COMMANDS = ("reboot", "poweroff", "localboot")
# Where the BMC's address comes from (`ipmitool lan print`, "IP Address Source"); "" unknown.
BMC_IP_SOURCES = ("", "static", "dhcp", "bios", "other")

# States whose machines go back to ``discovered`` when they boot discovery again.
REDISCOVER_FROM = (State.READY, State.FAILED, State.MAINTENANCE)
# States in which the machine's own disk should boot.

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Firmware placeholders that identify nothing (vendor, product and serial fields).
_PLACEHOLDERS = {
    "", "to be filled by o.e.m.", "default string", "system serial number", "system product name",
    "system manufacturer", "not specified", "not applicable", "none", "n/a", "na", "unknown",
    "0", "0123456789", "123456789", "oem", "o.e.m.", "chassis serial number",
}
# SMBIOS UUIDs shared by many machines (unset, or vendor templates): never an identity.
_JUNK_UUIDS = {
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009", "01234567-8910-1112-1314-151617181920",
}


# --- validation ----------------------------------------------------------------------------------

def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(data: dict[str, Any], key: str, where: str, limit: int = MAX_TEXT) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}.{key} must be a string, got {_kind(value)}")
    if len(value) > limit:
        raise InvalidInput(f"{where}.{key} is {len(value)} characters long; at most {limit}")
    return _CONTROL.sub("", value).strip()


def _int(data: dict[str, Any], key: str, where: str, hi: int, *, lo: int = 0,
         allow_null: bool = True) -> int | None:
    value = data.get(key)
    if value is None:
        if allow_null:
            return None
        raise InvalidInput(f"{where}.{key} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{where}.{key} must be an integer, got {_kind(value)}")
    if value == -1 and allow_null:
        return None  # sysfs says -1 for "unknown" (the speed of a NIC without link)
    if not lo <= value <= hi:
        raise InvalidInput(f"{where}.{key} must be between {lo} and {hi}, got {value}")
    return value


def _bool(data: dict[str, Any], key: str, where: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"{where}.{key} must be true, false or null, got {_kind(value)}")


def _list(data: dict[str, Any], key: str, where: str, limit: int) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{where}.{key} must be a list, got {_kind(value)}")
    if len(value) > limit:
        raise InvalidInput(f"{where}.{key} has {len(value)} items; at most {limit}")
    return value


def parse_mac(value: object, where: str) -> str:
    """A unicast Ethernet MAC as lowercase ``aa:bb:cc:dd:ee:ff``, or InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a MAC address string, got {_kind(value)}")
    if not _MAC.match(value):
        raise InvalidInput(f"{where} is not a MAC address (aa:bb:cc:dd:ee:ff): {value[:40]!r}")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"{where} is a multicast address, not a NIC: {mac}")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput(f"{where} is all zeros, not a NIC")
    return mac


def _ip(value: str, where: str) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(f"{where} is not an IP address: {value[:60]!r}") from None


def _identity_text(value: str) -> str:
    return "" if value.lower() in _PLACEHOLDERS else value


@dataclass(frozen=True)
class Report:
    """A validated check-in. ``macs`` holds every NIC's MAC, the boot NIC's first."""

    boot_mac: str
    macs: list[str]
    ip: str = ""
    agent_version: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)
    memory_bytes: int = 0
    disks: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)
    vendor: str = ""
    product: str = ""
    serial: str = ""
    smbios_uuid: str = ""
    bmc: dict[str, Any] | None = None
    virtualization: str = ""

    @property
    def identity_uuid(self) -> str:
        """The SMBIOS UUID when it can tell machines apart, else ''."""
        return "" if self.smbios_uuid in _JUNK_UUIDS else self.smbios_uuid


def parse_report(data: object) -> Report:
    """Validate a check-in body; raises InvalidInput with the exact field at fault."""
    body = _obj(data, "the check-in")
    w = "report"
    agent_version = _text(body, "agent_version", w, 32)
    ip = _ip(_text(body, "ip", w, 64), f"{w}.ip")
    boot_raw = body.get("boot_mac") or ""
    boot_mac = parse_mac(boot_raw, f"{w}.boot_mac") if boot_raw else ""

    cpu_in = _obj(body.get("cpu") or {}, f"{w}.cpu")
    cpu: dict[str, Any] = {
        "model": _text(cpu_in, "model", f"{w}.cpu"),
        "arch": _text(cpu_in, "arch", f"{w}.cpu", 32),
        "sockets": _int(cpu_in, "sockets", f"{w}.cpu", MAX_CPUS),
        "cores": _int(cpu_in, "cores", f"{w}.cpu", MAX_CPUS),
        "threads": _int(cpu_in, "threads", f"{w}.cpu", MAX_CPUS),
        "mhz": _int(cpu_in, "mhz", f"{w}.cpu", 1_000_000),
    }
    memory = _int(body, "memory_bytes", w, MAX_BYTES) or 0

    disks: list[dict[str, Any]] = []
    for i, item in enumerate(_list(body, "disks", w, MAX_DISKS)):
        where = f"{w}.disks[{i}]"
        d = _obj(item, where)
        name = _text(d, "name", where, 64)
        if not name:
            raise InvalidInput(f"{where}.name is required")
        disks.append({
            "name": name,
            "size_bytes": _int(d, "size_bytes", where, MAX_BYTES, allow_null=False),
            "model": _text(d, "model", where), "vendor": _text(d, "vendor", where),
            "serial": _identity_text(_text(d, "serial", where)), "wwn": _text(d, "wwn", where),
            "rotational": _bool(d, "rotational", where),
            "removable": _bool(d, "removable", where),
        })

    nics: list[dict[str, Any]] = []
    for i, item in enumerate(_list(body, "nics", w, MAX_NICS)):
        where = f"{w}.nics[{i}]"
        n = _obj(item, where)
        nics.append({
            "name": _text(n, "name", where, 64),
            "mac": parse_mac(n.get("mac"), f"{where}.mac"),
            "speed_mbps": _int(n, "speed_mbps", where, MAX_SPEED_MBPS),
            "link": _bool(n, "link", where),
            "driver": _text(n, "driver", where, 64),
            "ip": _ip(_text(n, "ip", where, 64), f"{where}.ip"),
        })

    macs = list(dict.fromkeys([m for m in [boot_mac, *(n["mac"] for n in nics)] if m]))
    if not macs:
        raise InvalidInput("the report has no MAC address: send boot_mac or at least one NIC")

    dmi = _obj(body.get("dmi") or {}, f"{w}.dmi")
    uuid = _text(dmi, "uuid", f"{w}.dmi", 64).lower()
    if uuid and not _UUID.match(uuid):
        raise InvalidInput(f"{w}.dmi.uuid is not a UUID: {uuid!r}")

    bmc: dict[str, Any] | None = None
    if body.get("bmc") is not None:
        b = _obj(body["bmc"], f"{w}.bmc")
        present = _bool(b, "present", f"{w}.bmc")
        bmc_ip = _ip(_text(b, "ip", f"{w}.bmc", 64), f"{w}.bmc.ip")
        bmc_mac_raw = _text(b, "mac", f"{w}.bmc", 64)
        bmc_mac = parse_mac(bmc_mac_raw, f"{w}.bmc.mac") if bmc_mac_raw else ""
        source = _text(b, "ip_source", f"{w}.bmc", 16).lower()
        if source not in BMC_IP_SOURCES:
            raise InvalidInput(f"{w}.bmc.ip_source must be one of "
                               f"{', '.join(s for s in BMC_IP_SOURCES if s)} or empty, "
                               f"got {source[:20]!r}")
        if present or bmc_ip:
            bmc = {"ip": bmc_ip, "interface": _text(b, "interface", f"{w}.bmc", 32),
                   "mac": bmc_mac, "ip_source": source}

    return Report(
        boot_mac=boot_mac or macs[0], macs=macs, ip=ip, agent_version=agent_version, cpu=cpu,
        memory_bytes=memory, disks=disks, nics=nics,
        vendor=_identity_text(_text(dmi, "vendor", f"{w}.dmi")),
        product=_identity_text(_text(dmi, "product", f"{w}.dmi")),
        serial=_identity_text(_text(dmi, "serial", f"{w}.dmi")),
        smbios_uuid=uuid, bmc=bmc,
        virtualization=_text(body, "virtualization", w, 32).lower(),
    )


@dataclass(frozen=True)
class Heartbeat:
    machine_id: str
    mac: str = ""
    uptime_seconds: int | None = None
    status: str = ""


def parse_heartbeat(data: object) -> Heartbeat:
    body = _obj(data, "the heartbeat")
    machine_id = _text(body, "machine_id", "heartbeat", 64)
    if not machine_id:
        raise InvalidInput("heartbeat.machine_id is required")
    raw_mac = body.get("mac") or ""
    return Heartbeat(
        machine_id=machine_id,
        mac=parse_mac(raw_mac, "heartbeat.mac") if raw_mac else "",
        uptime_seconds=_int(body, "uptime_seconds", "heartbeat", 10 ** 9),
        status=_text(body, "status", "heartbeat", 64),
    )


# --- what the agent should do next ---------------------------------------------------------------

@dataclass(frozen=True)
class Order:
    """A command queued for one machine's agent: what, who asked, when."""

    command: str
    by: str = ""
    at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "by": self.by, "at": self.at}


class AgentCommands:
    """One-shot orders for waiting agents (reboot, poweroff, localboot), given on their next
    check-in or heartbeat, exactly once. In memory: an order lost to a restart leaves the agent
    waiting, which is harmless.

    It also remembers the last action each agent was answered: an agent told to reboot, power
    off or boot its disk has left, whatever its last heartbeat says, until it checks in again.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Order] = {}
        self._answered: dict[str, str] = {}

    def queue(self, machine_id: str, action: str, *, by: str = "",
              at: float | None = None) -> Order | None:
        """Queue ``action``; returns the order it replaced, if one was pending."""
        if action not in COMMANDS:
            raise InvalidInput(f"an agent can be told {', '.join(COMMANDS)}, not {action!r}",
                               {"commands": list(COMMANDS)})
        replaced = self._pending.get(machine_id)
        self._pending[machine_id] = Order(action, by, at)
        return replaced

    def take(self, machine_id: str) -> str | None:
        order = self._pending.pop(machine_id, None)
        return None if order is None else order.command

    def cancel(self, machine_id: str) -> Order | None:
        return self._pending.pop(machine_id, None)

    def pending(self, machine_id: str) -> str | None:
        order = self._pending.get(machine_id)
        return None if order is None else order.command

    def order(self, machine_id: str) -> Order | None:
        return self._pending.get(machine_id)

    def answered(self, machine_id: str, action: str) -> None:
        """Note what the agent was just told (``wait`` or a leaving action)."""
        self._answered[machine_id] = action

    def last_answer(self, machine_id: str) -> str | None:
        return self._answered.get(machine_id)

    def forget(self, machine_id: str) -> None:
        self._pending.pop(machine_id, None)
        self._answered.pop(machine_id, None)


# An agent is live while it waits for orders and was heard from within this many poll
# intervals plus slack: it sleeps at most 1.1 poll intervals between heartbeats.
LIVE_POLLS = 2
LIVE_SLACK_SECONDS = 30


def clamp_poll(poll_seconds: int) -> int:
    return max(POLL_MIN, min(POLL_MAX, int(poll_seconds)))


def live_window(poll_seconds: int = POLL_DEFAULT) -> int:
    """Seconds since its last check-in or heartbeat within which an agent counts as live."""
    return LIVE_POLLS * clamp_poll(poll_seconds) + LIVE_SLACK_SECONDS


def agent_status(machine: Machine, commands: AgentCommands, now: float,
                 poll_seconds: int = POLL_DEFAULT, workflow: Workflow | None = None
                 ) -> dict[str, Any]:
    """Whether a discovery agent is waiting for orders on ``machine``, from its heartbeats.

    Live means: the machine is not in a state that boots its own disk, the agent was not
    told to leave since it last reported (reboot, poweroff, localboot), and its last check-in
    or heartbeat is at most ``live_window(poll_seconds)`` seconds old. ``reason`` says why
    not, in a sentence."""
    window = live_window(poll_seconds)
    last = machine.last_seen
    age = None if last is None else max(0.0, now - last)
    answered = commands.last_answer(machine.id)
    order = commands.order(machine.id)
    if machine.state in LOCALBOOT_IN and boots_own_disk(machine, workflow):
        reason = (f"{machine.name} is {machine.state.value}: it boots its own disk, where no "
                  "discovery agent runs")
    elif machine.state in LOCALBOOT_IN:
        reason = (f"the agent on {machine.name} is deploying it: it takes no other orders "
                  "until the deployment ends")
    elif answered is not None and answered != "wait":
        reason = (f"the agent on {machine.name} was told to {answered} and has not checked in "
                  "since")
    elif age is None:
        reason = f"no discovery agent has reported from {machine.name} yet"
    elif age > window:
        reason = (f"the agent on {machine.name} was last heard from {elapsed(age)} ago; it counts "
                  f"as live within {window} s of its last heartbeat")
    else:
        reason = ""
    return {"live": not reason, "reason": reason, "last_seen": last,
            "seconds_since": None if age is None else round(age, 1),
            "window_seconds": window, "last_answer": answered,
            "pending": None if order is None else order.to_dict(),
            "commands": list(COMMANDS)}


def answer_for(machine: Machine, poll_seconds: int = POLL_DEFAULT,
               command: str | None = None, workflow: Workflow | None = None
               ) -> dict[str, Any]:
    """The agent's next step. Flat and compact: the shell agent reads it with sed.

    A deploying machine whose image is not written yet gets its deployment ("deploy", once the
    server has the image ready; "wait" until then); see docs/deployment-protocol.md."""
    answer: dict[str, Any] = {"machine_id": machine.id, "name": machine.name,
                              "state": machine.state.value}
    prepare = workflow.action("prepare-image") if workflow is not None else None
    if command:
        answer["action"] = command
    elif machine.state in LOCALBOOT_IN and boots_own_disk(machine, workflow):
        answer["action"] = "localboot"
    elif workflow is not None and prepare is not None and prepare.get("state") == "succeeded":
        answer["action"] = "deploy"
        answer["workflow_id"] = workflow.id
        answer["poll_seconds"] = clamp_poll(poll_seconds)
    elif workflow is not None and prepare is not None:
        answer["action"] = "wait"  # the image is still being fetched and verified
        answer["poll_seconds"] = min(clamp_poll(poll_seconds), 5)
    else:
        answer["action"] = "wait"
        answer["poll_seconds"] = clamp_poll(poll_seconds)
    return answer


# --- check-in and heartbeat ----------------------------------------------------------------------

ResolveName = Callable[[str | None, str], Awaitable[str]]

_locks: weakref.WeakKeyDictionary[Fleet, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _lock(fleet: Fleet, key: str) -> asyncio.Lock:
    # Serialises check-ins of one machine (an agent that retried after a timeout must not
    # register itself twice); different machines proceed in parallel.
    locks = _locks.setdefault(fleet, {})
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


def _inventory(report: Report, client_ip: str | None) -> dict[str, Any]:
    return {
        "mac": report.boot_mac, "macs": report.macs, "ip": client_ip or report.ip or None,
        "vendor": report.vendor, "product": report.product, "serial": report.serial,
        "smbios_uuid": report.smbios_uuid, "cpu": report.cpu,
        "memory_bytes": report.memory_bytes, "disks": report.disks, "nics": report.nics,
        "bmc": report.bmc, "virtualization": report.virtualization,
    }


def describe(report: Report) -> str:
    threads = report.cpu.get("threads") or 0
    disk_total = sum(d["size_bytes"] or 0 for d in report.disks)
    return (f"{threads} CPU thread{'s' if threads != 1 else ''}, "
            f"{binary_bytes(report.memory_bytes)} memory, {len(report.disks)} disk"
            f"{'s' if len(report.disks) != 1 else ''} ({binary_bytes(disk_total)}), "
            f"{len(report.nics)} NIC{'s' if len(report.nics) != 1 else ''}")


def find_reporting_machine(fleet: Fleet, report: Report) -> Machine | None:
    """Identity: any reported MAC first, then a meaningful SMBIOS UUID."""
    machine = fleet.find_machine(report.macs)
    if machine is None and report.identity_uuid:
        machine = fleet.find_machine((), report.identity_uuid)
    return machine


def _unique_name(fleet: Fleet, name: str, mac: str) -> str:
    """``name``, else ``name-`` the MAC's last hex digits, else a counter: never a duplicate."""
    digits = mac.replace(":", "")
    candidates = [name, f"{name}-{digits[-4:]}", f"{name}-{digits[-6:]}"]
    for candidate in candidates:
        if not fleet.name_taken(candidate):
            return candidate
    n = 2
    while fleet.name_taken(f"{candidates[-1]}-{n}"):
        n += 1
    return f"{candidates[-1]}-{n}"


async def handle_checkin(fleet: Fleet, report: Report, client_ip: str | None,
                         resolve_name: ResolveName, *, poll_seconds: int = POLL_DEFAULT,
                         commands: AgentCommands | None = None) -> dict[str, Any]:
    async with _lock(fleet, report.boot_mac):
        machine = find_reporting_machine(fleet, report)
        inventory = _inventory(report, client_ip)
        summary_text = describe(report)
        data = {"step": "checkin", "ip": inventory["ip"], "boot_mac": report.boot_mac,
                "agent_version": report.agent_version}
        now = fleet.clock()
        if machine is None:
            name = _unique_name(fleet, await resolve_name(inventory["ip"], report.boot_mac),
                                report.boot_mac)
            machine = Machine(id=new_id(), name=name, state=State.DISCOVERED,
                              last_seen=now, **inventory)
            machine = await fleet.add_machine(
                machine, f"Discovered by the agent from {inventory['ip'] or 'unknown address'}")
            await fleet.record(machine.id, "agent", f"Check-in: {summary_text}", data)
        elif machine.state in REDISCOVER_FROM:
            machine = await fleet.transition(machine.id, "rediscover",
                                             reason="booted into discovery again",
                                             actor="agent", last_seen=now, **inventory)
            await fleet.record(machine.id, "agent", f"Check-in: {summary_text}", data)
        else:
            before = machine.to_dict()
            changed = sorted(k for k, v in inventory.items() if before.get(k) != v and k != "ip")

            def mutate(m: Machine) -> HistoryEvent:
                for key, value in inventory.items():
                    setattr(m, key, value)
                m.last_seen = now
                message = f"Check-in: {summary_text}"
                if changed:
                    message += f" (changed: {', '.join(changed)})"
                return HistoryEvent("", m.id, now, "agent", message, {**data, "changed": changed})
            machine = await fleet.update_machine(machine.id, mutate)
    return await _answer(fleet, machine, poll_seconds, commands)


async def handle_heartbeat(fleet: Fleet, beat: Heartbeat, client_ip: str | None, *,
                           poll_seconds: int = POLL_DEFAULT,
                           commands: AgentCommands | None = None) -> dict[str, Any]:
    """Refresh ``last_seen``; NotFound tells the agent to check in again."""
    try:
        machine = fleet.get_machine(beat.machine_id)
    except NotFound:
        raise NotFound(f"no machine {beat.machine_id!r}: check in again") from None
    if beat.mac and beat.mac != machine.mac and beat.mac not in machine.macs:
        raise NotFound(f"machine {beat.machine_id!r} has no NIC {beat.mac}: check in again")
    now = fleet.clock()

    def mutate(m: Machine) -> None:
        m.last_seen = now
        if client_ip:
            m.ip = client_ip
    machine = await fleet.update_machine(machine.id, mutate)
    return await _answer(fleet, machine, poll_seconds, commands)


async def _answer(fleet: Fleet, machine: Machine, poll_seconds: int,
                  commands: AgentCommands | None) -> dict[str, Any]:
    """The agent's next step, handing over (once) a command queued for it."""
    workflow = fleet.active_workflow_of(machine)
    if commands is None:
        return answer_for(machine, poll_seconds, workflow=workflow)
    command = commands.take(machine.id)
    answer = answer_for(machine, poll_seconds, command, workflow)
    commands.answered(machine.id, answer["action"])
    if command:
        await fleet.record(machine.id, "agent", f"Told the agent to {command}",
                           {"step": "command", "action": command})
    return answer
