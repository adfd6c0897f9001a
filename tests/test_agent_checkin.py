"""Check-in validation, identity matching and lifecycle moves (server side of the agent)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dragonfly.agent import checkin
from dragonfly.agent.checkin import AgentCommands, Heartbeat, parse_heartbeat, parse_report
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State
from dragonfly.errors import InvalidInput, NotFound
from dragonfly.store import SqliteStore

UUID = "8c1f2e3d-4b5a-4c6d-8e7f-0123456789ab"


def report_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_version": "1",
        "boot_mac": "52:54:00:12:34:56",
        "ip": "10.99.0.120",
        "cpu": {"model": "QEMU Virtual CPU", "arch": "x86_64", "sockets": 1, "cores": 2,
                "threads": 2, "mhz": 2400},
        "memory_bytes": 500 * 1024 * 1024,
        "disks": [{"name": "vda", "size_bytes": 1 << 30, "model": "", "vendor": "",
                   "serial": "disk-1", "wwn": "", "rotational": True, "removable": False}],
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "speed_mbps": -1, "link": True,
                  "driver": "virtio_net", "ip": "10.99.0.120"},
                 {"name": "eth1", "mac": "52:54:00:AB:CD:EF", "speed_mbps": 1000,
                  "link": False, "driver": "e1000", "ip": ""}],
        "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": UUID},
        "bmc": {"present": False, "interface": "", "ip": ""},
        "virtualization": "qemu",
        "some_future_field": {"ignored": True},
    }
    body.update(over)
    return body


# --- validation ----------------------------------------------------------------------------------

def test_parse_full_report() -> None:
    r = parse_report(report_body())
    assert r.boot_mac == "52:54:00:12:34:56"
    assert r.macs == ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]
    assert r.cpu["threads"] == 2 and r.cpu["cores"] == 2 and r.cpu["model"] == "QEMU Virtual CPU"
    assert r.memory_bytes == 500 * 1024 * 1024
    assert r.disks[0]["size_bytes"] == 1 << 30 and r.disks[0]["rotational"] is True
    assert r.nics[0]["speed_mbps"] is None  # sysfs -1: unknown
    assert r.nics[1]["speed_mbps"] == 1000 and r.nics[1]["mac"] == "52:54:00:ab:cd:ef"
    assert r.vendor == "QEMU" and r.smbios_uuid == UUID and r.identity_uuid == UUID
    assert r.bmc is None and r.virtualization == "qemu"


def test_parse_cleans_and_defaults() -> None:
    r = parse_report({"nics": [{"mac": "AA-BB-CC-00-11-22"}],
                      "dmi": {"vendor": " To Be Filled By O.E.M. ", "serial": "SN\x01 42\x7f",
                              "uuid": "00000000-0000-0000-0000-000000000000"},
                      "bmc": {"present": True, "interface": "ipmi0", "ip": "192.0.2.9",
                              "mac": "52:54:00:BE:EF:01", "ip_source": "DHCP"}})
    assert r.boot_mac == "aa:bb:cc:00:11:22" and r.macs == ["aa:bb:cc:00:11:22"]
    assert r.vendor == ""  # placeholder
    assert r.serial == "SN 42"  # control characters dropped
    assert r.identity_uuid == ""  # shared all-zero UUID is no identity
    assert r.bmc == {"ip": "192.0.2.9", "interface": "ipmi0", "mac": "52:54:00:be:ef:01",
                     "ip_source": "dhcp"}
    assert r.memory_bytes == 0 and r.disks == []


@pytest.mark.parametrize("body, message", [
    ([], "the check-in must be a JSON object, got a list"),
    (report_body(cpu={"threads": "2"}), "report.cpu.threads must be an integer, got a string"),
    (report_body(cpu={"threads": True}), "report.cpu.threads must be an integer, got a boolean"),
    (report_body(cpu={"threads": 2.0}), "report.cpu.threads must be an integer, got a number"),
    (report_body(cpu={"cores": 70000}), "report.cpu.cores must be between 0 and 65536"),
    (report_body(cpu="x86"), "report.cpu must be a JSON object, got a string"),
    (report_body(memory_bytes=-5), "report.memory_bytes must be between 0 and"),
    (report_body(memory_bytes=1 << 61), "report.memory_bytes must be between 0 and"),
    (report_body(disks={"vda": 1}), "report.disks must be a list, got an object"),
    (report_body(disks=[{"name": "d", "size_bytes": 1}] * 257),
     "report.disks has 257 items; at most 256"),
    (report_body(disks=[{"name": "vda"}]), "report.disks[0].size_bytes is required"),
    (report_body(disks=[{"size_bytes": 5}]), "report.disks[0].name is required"),
    (report_body(disks=[{"name": "vda", "size_bytes": 1, "rotational": 1}]),
     "report.disks[0].rotational must be true, false or null, got a number"),
    (report_body(disks=[{"name": "vda", "size_bytes": 1, "model": "m" * 257}]),
     "report.disks[0].model is 257 characters long; at most 256"),
    (report_body(dmi={"serial": "s" * 10_000}), "report.dmi.serial is 10000 characters long"),
    (report_body(dmi={"uuid": "not-a-uuid"}), "report.dmi.uuid is not a UUID"),
    (report_body(nics=[{"mac": "52:54:00:12:34"}]), "report.nics[0].mac is not a MAC"),
    (report_body(nics=[{"mac": "zz:54:00:12:34:56"}]), "report.nics[0].mac is not a MAC"),
    (report_body(nics=[{"mac": "52:54:00-12:34:56"}]), "report.nics[0].mac is not a MAC"),
    (report_body(nics=[{"mac": 525400123456}]), "report.nics[0].mac must be a MAC address "
                                                "string, got a number"),
    (report_body(nics=[{"mac": "01:00:5e:00:00:01"}]), "report.nics[0].mac is a multicast"),
    (report_body(nics=[{"mac": "00:00:00:00:00:00"}]), "report.nics[0].mac is all zeros"),
    (report_body(nics=[{"mac": "52:54:00:12:34:56", "speed_mbps": -7}]),
     "report.nics[0].speed_mbps must be between 0 and"),
    (report_body(boot_mac="nope"), "report.boot_mac is not a MAC address"),
    (report_body(boot_mac="", nics=[]), "the report has no MAC address"),
    (report_body(ip="10.99.0.999"), "report.ip is not an IP address"),
    (report_body(nics=[{"mac": "52:54:00:12:34:56", "ip": "fe80::zz"}]),
     "report.nics[0].ip is not an IP address"),
    (report_body(bmc={"present": True, "ip": "bmc.example"}), "report.bmc.ip is not an IP"),
    (report_body(bmc={"present": True, "mac": "00:11:22:33:44"}), "report.bmc.mac is not a MAC"),
    (report_body(bmc={"present": True, "ip_source": "magic"}),
     "report.bmc.ip_source must be one of static, dhcp, bios, other or empty, got 'magic'"),
    (report_body(virtualization=["kvm"]), "report.virtualization must be a string, got a list"),
])
def test_parse_rejects_precisely(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_report(body)
    assert message in caught.value.message


def test_parse_heartbeat() -> None:
    beat = parse_heartbeat({"machine_id": "abc", "mac": "52:54:00:12:34:56",
                            "uptime_seconds": 12, "status": "waiting", "extra": 1})
    assert beat == Heartbeat("abc", "52:54:00:12:34:56", 12, "waiting")
    for body, message in (("x", "the heartbeat must be a JSON object"),
                          ({}, "heartbeat.machine_id is required"),
                          ({"machine_id": 5}, "heartbeat.machine_id must be a string"),
                          ({"machine_id": "a", "mac": "x"}, "heartbeat.mac is not a MAC"),
                          ({"machine_id": "a", "uptime_seconds": "1"}, "must be an integer")):
        with pytest.raises(InvalidInput, match=message):
            parse_heartbeat(body)


# --- the server logic ----------------------------------------------------------------------------

@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    store = SqliteStore(":memory:")
    await store.open()
    fleet = Fleet(store)
    await fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()
        await store.close()


class Names:
    def __init__(self, name: str = "node-a") -> None:
        self.name = name
        self.calls: list[tuple[str | None, str]] = []

    async def __call__(self, ip: str | None, mac: str) -> str:
        self.calls.append((ip, mac))
        return self.name


async def test_new_machine_is_discovered_with_inventory(fleet: Fleet) -> None:
    names = Names("rack1-node7")
    answer = await checkin.handle_checkin(fleet, parse_report(report_body()), "10.99.0.120",
                                          names, poll_seconds=7)
    machine = fleet.get_machine(answer["machine_id"])
    assert answer == {"machine_id": machine.id, "name": "rack1-node7", "state": "discovered",
                      "action": "wait", "poll_seconds": 7}
    assert names.calls == [("10.99.0.120", "52:54:00:12:34:56")]
    assert machine.state is State.DISCOVERED
    assert machine.mac == "52:54:00:12:34:56"
    assert machine.macs == ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]
    assert machine.ip == "10.99.0.120" and machine.cpu["threads"] == 2
    assert machine.memory_bytes == 500 * 1024 * 1024
    assert [d["size_bytes"] for d in machine.disks] == [1 << 30]
    assert machine.smbios_uuid == UUID and machine.vendor == "QEMU"
    assert machine.virtualization == "qemu" and machine.last_seen is not None
    history = await fleet.history(machine.id)
    kinds = [(h.kind, h.message) for h in history]
    assert ("agent", "Check-in: 2 CPU threads, 500 MiB memory, 1 disk (1 GiB), 2 NICs") in kinds
    assert any(k == "state" and "Discovered" in m for k, m in kinds)


async def test_poll_seconds_are_capped(fleet: Fleet) -> None:
    a = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names(),
                                     poll_seconds=100_000)
    assert a["poll_seconds"] == checkin.POLL_MAX
    machine = fleet.get_machine(a["machine_id"])
    assert checkin.answer_for(machine, 0)["poll_seconds"] == checkin.POLL_MIN


async def test_second_checkin_updates_the_same_machine(fleet: Fleet) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), "10.99.0.120",
                                         Names())
    body = report_body(memory_bytes=1 << 30)
    body["disks"].append({"name": "vdb", "size_bytes": 2 << 30})
    second = await checkin.handle_checkin(fleet, parse_report(body), "10.99.0.121",
                                          Names("other"))
    assert second["machine_id"] == first["machine_id"] and second["name"] == "node-a"
    assert fleet.machine_count() == 1
    machine = fleet.get_machine(first["machine_id"])
    assert machine.memory_bytes == 1 << 30 and len(machine.disks) == 2
    assert machine.ip == "10.99.0.121"
    latest = (await fleet.history(machine.id))[0]
    assert latest.kind == "agent" and "changed: disks, memory_bytes" in latest.message


async def test_identity_on_any_mac(fleet: Fleet) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    # Booted from the second NIC this time, and the first NIC is gone.
    body = report_body(boot_mac="52:54:00:ab:cd:ef",
                       nics=[{"name": "eth1", "mac": "52:54:00:ab:cd:ef"}],
                       dmi={"uuid": ""})
    again = await checkin.handle_checkin(fleet, parse_report(body), None, Names())
    assert again["machine_id"] == first["machine_id"]
    assert fleet.machine_count() == 1
    assert fleet.get_machine(first["machine_id"]).mac == "52:54:00:ab:cd:ef"


async def test_identity_on_smbios_uuid_when_every_nic_changed(fleet: Fleet) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    body = report_body(boot_mac="02:00:00:00:00:01",
                       nics=[{"name": "eth0", "mac": "02:00:00:00:00:01"}])
    again = await checkin.handle_checkin(fleet, parse_report(body), None, Names())
    assert again["machine_id"] == first["machine_id"]
    assert fleet.get_machine(first["machine_id"]).macs == ["02:00:00:00:00:01"]


async def test_shared_junk_uuid_is_not_an_identity(fleet: Fleet) -> None:
    zero = "00000000-0000-0000-0000-000000000000"
    a = await checkin.handle_checkin(fleet, parse_report(report_body(dmi={"uuid": zero})),
                                     None, Names("a"))
    body = report_body(boot_mac="02:00:00:00:00:02", dmi={"uuid": zero},
                       nics=[{"name": "eth0", "mac": "02:00:00:00:00:02"}])
    b = await checkin.handle_checkin(fleet, parse_report(body), None, Names("b"))
    assert a["machine_id"] != b["machine_id"] and fleet.machine_count() == 2


@pytest.mark.parametrize("start, moves", [
    (State.READY, ["adopt"]),
    (State.MAINTENANCE, ["maintenance"]),
    (State.FAILED, ["adopt", "deploy", "fail"]),
])
async def test_rediscover_from_ready_failed_maintenance(fleet: Fleet, start: State,
                                                        moves: list[str]) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    machine_id = first["machine_id"]
    for move in moves:
        await fleet.transition(machine_id, move)
    assert fleet.get_machine(machine_id).state is start
    body = report_body(memory_bytes=2 << 30)
    answer = await checkin.handle_checkin(fleet, parse_report(body), None, Names())
    machine = fleet.get_machine(machine_id)
    assert machine.state is State.DISCOVERED and answer["action"] == "wait"
    assert machine.memory_bytes == 2 << 30
    history = await fleet.history(machine_id)
    assert any(h.kind == "state" and h.data.get("action") == "rediscover" for h in history)


@pytest.mark.parametrize("moves, state", [
    (["adopt", "deploy"], State.DEPLOYING),
    (["adopt", "deploy", "deployed"], State.INSTALLED),
])
async def test_deploying_and_installed_boot_the_local_disk(fleet: Fleet, moves: list[str],
                                                           state: State) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    for move in moves:
        await fleet.transition(first["machine_id"], move)
    answer = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    assert answer["action"] == "localboot" and "poll_seconds" not in answer
    assert fleet.get_machine(first["machine_id"]).state is state


async def test_concurrent_checkins_register_once(fleet: Fleet) -> None:
    report = parse_report(report_body())
    answers = await asyncio.gather(*(checkin.handle_checkin(fleet, report, None, Names())
                                     for _ in range(6)))
    assert len({a["machine_id"] for a in answers}) == 1
    assert fleet.machine_count() == 1


async def test_name_collision_gets_a_suffix(fleet: Fleet) -> None:
    await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names("web"))
    body = report_body(boot_mac="02:00:00:00:be:ef", dmi={},
                       nics=[{"name": "eth0", "mac": "02:00:00:00:be:ef"}])
    b = await checkin.handle_checkin(fleet, parse_report(body), None, Names("web"))
    assert b["name"] == "web-beef"


async def test_concurrent_new_machines_never_share_a_name(fleet: Fleet) -> None:
    """Twelve machines whose addresses all resolve to one name, several with MACs ending
    alike, checking in at once: every one gets a different name."""
    macs = [f"02:00:00:{i:02x}:be:ef" for i in range(6)] + [
        f"02:00:{i:02x}:00:be:ef" for i in range(1, 7)]
    bodies = [report_body(boot_mac=mac, dmi={}, nics=[{"name": "eth0", "mac": mac}])
              for mac in macs]
    answers = await asyncio.gather(*(
        checkin.handle_checkin(fleet, parse_report(body), None, Names("web"))
        for body in bodies))
    names = [a["name"] for a in answers]
    assert len(set(names)) == 12 and "web" in names, sorted(names)
    assert fleet.machine_count() == 12
    await fleet.delete_machine(answers[0]["machine_id"])
    assert not fleet.name_taken(names[0])
    assert all(fleet.name_taken(name) for name in names[1:])


async def test_heartbeat_refreshes_and_delivers_commands(fleet: Fleet) -> None:
    now = [100.0]
    fleet.clock = lambda: now[0]
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    now[0] = 250.0
    machine_id = first["machine_id"]
    assert fleet.get_machine(machine_id).last_seen == 100.0
    commands = AgentCommands()
    beat = Heartbeat(machine_id, "52:54:00:ab:cd:ef")
    answer = await checkin.handle_heartbeat(fleet, beat, "10.99.0.130", poll_seconds=5,
                                            commands=commands)
    assert answer["action"] == "wait" and answer["poll_seconds"] == 5
    assert fleet.get_machine(machine_id).last_seen == 250.0
    assert fleet.get_machine(machine_id).ip == "10.99.0.130"
    commands.queue(machine_id, "poweroff")
    answer = await checkin.handle_heartbeat(fleet, beat, None, commands=commands)
    assert answer["action"] == "poweroff"
    assert commands.pending(machine_id) is None  # one-shot
    assert (await fleet.history(machine_id))[0].message == "Told the agent to poweroff"


async def test_heartbeat_unknown_machine_or_nic(fleet: Fleet) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    with pytest.raises(NotFound, match="check in again"):
        await checkin.handle_heartbeat(fleet, Heartbeat("nope"), None)
    with pytest.raises(NotFound, match="has no NIC"):
        await checkin.handle_heartbeat(fleet, Heartbeat(first["machine_id"],
                                                        "02:00:00:00:00:09"), None)


def test_agent_commands_validate() -> None:
    commands = AgentCommands()
    with pytest.raises(InvalidInput):
        commands.queue("m", "format-disk")
    assert commands.queue("m", "reboot", by="alice", at=5.0) is None
    replaced = commands.queue("m", "poweroff", by="bob", at=6.0)
    assert replaced is not None and replaced.command == "reboot" and replaced.by == "alice"
    assert commands.take("m") == "poweroff" and commands.take("m") is None
    commands.queue("m", "localboot")
    cancelled = commands.cancel("m")
    assert cancelled is not None and cancelled.command == "localboot"
    assert commands.take("m") is None


async def test_agent_liveness_follows_heartbeats_and_answers(fleet: Fleet) -> None:
    now = [1000.0]
    fleet.clock = lambda: now[0]
    commands = AgentCommands()
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names(),
                                         poll_seconds=10, commands=commands)
    machine_id = first["machine_id"]

    def status() -> dict[str, Any]:
        return checkin.agent_status(fleet.get_machine(machine_id), commands, now[0], 10)

    assert checkin.live_window(10) == 50
    assert status()["live"] is True and status()["reason"] == ""
    now[0] += 51  # missed its heartbeats: not live, and the reason says how long ago
    stale = status()
    assert stale["live"] is False and "last heard from 51 s ago" in stale["reason"]
    beat = Heartbeat(machine_id)
    await checkin.handle_heartbeat(fleet, beat, None, poll_seconds=10, commands=commands)
    assert status()["live"] is True
    commands.queue(machine_id, "reboot", by="admin", at=now[0])
    assert status()["pending"] == {"command": "reboot", "by": "admin", "at": now[0]}
    answer = await checkin.handle_heartbeat(fleet, beat, None, poll_seconds=10,
                                            commands=commands)
    assert answer["action"] == "reboot"
    # Told to leave: not live however fresh its last heartbeat, until it reports again.
    gone = status()
    assert gone["live"] is False and "told to reboot" in gone["reason"]
    assert gone["pending"] is None and gone["last_answer"] == "reboot"
    commands.queue(machine_id, "poweroff")
    again = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names(),
                                         poll_seconds=10, commands=commands)
    assert again["action"] == "poweroff"  # a check-in collects a queued command too
    history = await fleet.history(machine_id)
    assert history[0].message == "Told the agent to poweroff"
    await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names(),
                                 commands=commands)
    assert status()["live"] is True
    await fleet.transition(machine_id, "adopt")
    await fleet.transition(machine_id, "deploy")
    deploying = status()
    assert deploying["live"] is False and "boots its own disk" in deploying["reason"]


def test_report_body_is_not_mutated() -> None:
    body = report_body()
    before = copy.deepcopy(body)
    parse_report(body)
    assert body == before


async def test_uuid_identity_follows_updates_and_deletes(fleet: Fleet) -> None:
    first = await checkin.handle_checkin(fleet, parse_report(report_body()), None, Names())
    machine_id = first["machine_id"]
    assert fleet.find_machine((), UUID) is fleet.get_machine(machine_id)
    new_uuid = "4c4c4544-0042-3510-8052-b4c04f4e4432"

    def move(m: Machine) -> None:
        m.smbios_uuid = new_uuid

    await fleet.update_machine(machine_id, move)
    assert fleet.find_machine((), UUID) is None
    assert fleet.find_machine((), new_uuid) is fleet.get_machine(machine_id)
    await fleet.delete_machine(machine_id)
    assert fleet.find_machine((), new_uuid) is None and not fleet.name_taken("node-a")


def test_parse_bmc_from_an_older_agent() -> None:
    """Agents before ipmitool sent no mac or ip_source: both default to empty."""
    r = parse_report(report_body(bmc={"present": True, "interface": "ipmi0", "ip": ""}))
    assert r.bmc == {"ip": "", "interface": "ipmi0", "mac": "", "ip_source": ""}
