"""agent.sh itself, run by busybox ash on this host: inventory from a fake /proc and /sys full of
awkward values, and the check-in / wait / heartbeat / command loop against the real routes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from dragonfly.agent.checkin import AgentCommands, parse_report
from dragonfly.agent.initramfs import agent_file
from dragonfly.context import AppContext
from tests.lab.harness import agent_app, make_context

UUID = "abcdef01-2345-4678-9abc-def012345678"


@pytest.fixture(scope="session")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH made of busybox applets only, as in the initramfs."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is required: apt-get install busybox-static")
    d = tmp_path_factory.mktemp("busybox-bin")
    subprocess.run([busybox, "--install", "-s", str(d)], check=True)
    return str(d)


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)


def fake_root(root: Path, cmdline: str = "console=ttyS0") -> Path:
    cpu = "".join(f"processor\t: {i}\nmodel name\t: Xeon \"Gold\" \\ 6130 @ 2.10GHz\n"
                  f"cpu MHz\t\t: 2100.000\nflags\t\t: fpu sse2\n\n" for i in range(4))
    write(root / "proc/cpuinfo", cpu)
    write(root / "proc/meminfo", "MemTotal:       16384000 kB\nMemFree:        1 kB\n")
    write(root / "proc/cmdline", cmdline + "\n")
    for i, (pkg, core) in enumerate([(0, 0), (0, 0), (1, 0), (1, 0)]):
        topo = root / f"sys/devices/system/cpu/cpu{i}/topology"
        write(topo / "physical_package_id", f"{pkg}\n")
        write(topo / "core_id", f"{core}\n")
    sda = root / "sys/block/sda"
    write(sda / "size", "3907029168\n")
    write(sda / "device/model", "Samsung SSD 870 \n")
    write(sda / "device/vendor", "ATA     \n")
    write(sda / "device/vpd_pg80", b"\x00\x80\x00\x0eS5Y1NX0R123456")
    write(sda / "queue/rotational", "0\n")
    write(sda / "removable", "0\n")
    nvme = root / "sys/block/nvme0n1"
    write(nvme / "size", "1000215216\n")
    write(nvme / "device/model", "WDC PC SN730\n")
    write(nvme / "device/serial", "  NVME-SERIAL-1  \n")
    write(nvme / "queue/rotational", "0\n")
    for skipped in ("loop0", "ram0", "sr0", "dm-0"):
        write(root / f"sys/block/{skipped}/size", "2048\n")
    net = root / "sys/class/net"
    write(net / "lo/type", "772\n")
    write(net / "lo/address", "00:00:00:00:00:00\n")
    write(net / "eth0/type", "1\n")
    write(net / "eth0/address", "AA:BB:CC:00:00:01\n")
    write(net / "eth0/speed", "1000\n")
    write(net / "eth0/carrier", "1\n")
    (root / "sys/bus/pci/drivers/igb").mkdir(parents=True)
    (net / "eth0/device").mkdir(parents=True)
    (net / "eth0/device/driver").symlink_to(root / "sys/bus/pci/drivers/igb")
    write(net / "eth1/type", "1\n")
    write(net / "eth1/address", "aa:bb:cc:00:00:02\n")
    write(net / "eth1/speed", "-1\n")
    write(net / "eth1/carrier", "0\n")
    (net / "eth1/device").mkdir(parents=True)
    write(net / "br0/type", "1\n")  # a bridge: no device, not a NIC
    write(net / "br0/address", "aa:bb:cc:00:00:03\n")
    write(net / "ib0/type", "32\n")  # InfiniBand: 20-byte address
    write(net / "ib0/address", "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:51:d1\n")
    (net / "ib0/device").mkdir(parents=True)
    dmi = root / "sys/class/dmi/id"
    write(dmi / "sys_vendor", "Dell Inc.\n")
    write(dmi / "product_name", "PowerEdge \x01R640 \"rack\" \xc3\xbcber\n".encode("latin-1"))
    write(dmi / "product_serial", "S" * 300 + "\n")
    write(dmi / "product_uuid", UUID.upper() + "\n")
    (root / "sys/class/ipmi/ipmi0").mkdir(parents=True)
    return root


def agent_env(root: Path, path: str, work: Path, **extra: str) -> dict[str, str]:
    config = work / "config"
    write(config, "POLL_MIN=1\nPOLL_MAX=5\nBACKOFF_MAX=2\nHTTP_TIMEOUT=5\nIPMI_TIMEOUT=2\n")
    env = {"PATH": path, "DRAGONFLY_SYSROOT": str(root), "DRAGONFLY_WORKDIR": str(work),
           "DRAGONFLY_CONFIG": str(config), "HOME": str(work)}
    env.update(extra)
    return env


def agent_script(tmp_path: Path) -> Path:
    script = tmp_path / "agent.sh"
    script.write_bytes(agent_file("agent.sh"))
    return script


def test_inventory_from_awkward_sysfs(tmp_path: Path, busybox_path: str) -> None:
    root = fake_root(tmp_path / "root", "dragonfly.mac=AA:BB:CC:00:00:01")
    done = subprocess.run(["busybox", "sh", str(agent_script(tmp_path)), "inventory"],
                          env=agent_env(root, busybox_path, tmp_path / "work"),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)  # valid JSON despite quotes, backslashes, control bytes
    assert data["cpu"]["model"] == 'Xeon "Gold" \\ 6130 @ 2.10GHz'
    assert (data["cpu"]["threads"], data["cpu"]["cores"], data["cpu"]["sockets"]) == (4, 2, 2)
    assert data["cpu"]["mhz"] == 2100
    assert data["memory_bytes"] == 16384000 * 1024
    assert data["dmi"]["product"] == 'PowerEdge R640 "rack" ber'  # control/non-ASCII dropped
    assert data["dmi"]["serial"] == "S" * 200  # truncated
    assert data["dmi"]["uuid"] == UUID
    assert data["boot_mac"] == "aa:bb:cc:00:00:01"
    assert data["bmc"] == {"present": True, "interface": "ipmi0", "ip": "", "mac": "",
                           "ip_source": ""}  # no ipmitool on a fake root
    report = parse_report(data)
    assert [(d["name"], d["size_bytes"], d["model"], d["serial"], d["rotational"])
            for d in report.disks] == [
        ("nvme0n1", 1000215216 * 512, "WDC PC SN730", "NVME-SERIAL-1", False),
        ("sda", 3907029168 * 512, "Samsung SSD 870", "S5Y1NX0R123456", False)]
    assert report.disks[1]["vendor"] == "ATA"
    assert [(n["name"], n["mac"], n["speed_mbps"], n["link"], n["driver"])
            for n in report.nics] == [("eth0", "aa:bb:cc:00:00:01", 1000, True, "igb"),
                                      ("eth1", "aa:bb:cc:00:00:02", None, False, "")]
    assert report.vendor == "Dell Inc." and report.virtualization == "none"
    assert report.bmc == {"ip": "", "interface": "ipmi0", "mac": "", "ip_source": ""}


LAN_PRINT = """\
Set in Progress         : Set Complete
Auth Type Support       : NONE MD2 MD5 PASSWORD
IP Address Source       : {source}
IP Address              : {ip}
Subnet Mask             : 255.255.255.0
MAC Address             : {mac}
SNMP Community String   : public
Default Gateway IP      : 10.0.0.1
Backup Gateway IP       : 0.0.0.0
"""


def fake_ipmitool(tmp_path: Path, answers: dict[str, str], sleep: int = 0) -> Path:
    """An ipmitool that records its arguments and answers `lan print [CHANNEL]` from
    ``answers`` (key "" for no channel); other channels fail as a real BMC's do."""
    script = tmp_path / "ipmitool"
    cases = "".join(f"    '{ch}') cat <<'EOF'\n{out}EOF\n    ;;\n" for ch, out in answers.items())
    write(script, f"""#!/bin/sh
echo "$*" >>"{tmp_path / 'ipmitool.calls'}"
# (not holding the output pipe, so that killing this shell ends the command substitution)
[ {sleep} -gt 0 ] && sleep {sleep} >/dev/null 2>&1
echo "IANA PEN registry open failed: No such file or directory" >&2
case "$3" in
{cases}    *) echo "Invalid channel $3" >&2; exit 1 ;;
esac
""")
    script.chmod(0o755)
    return script


def bmc_inventory(tmp_path: Path, busybox_path: str, ipmitool: Path,
                  **extra: str) -> tuple[dict[str, Any], list[str]]:
    root = fake_root(tmp_path / "root")
    done = subprocess.run(["busybox", "sh", str(agent_script(tmp_path)), "inventory"],
                          env=agent_env(root, busybox_path, tmp_path / "work",
                                        DRAGONFLY_IPMITOOL=str(ipmitool), **extra),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)
    parse_report(data)  # what the agent sends validates
    calls = (tmp_path / "ipmitool.calls").read_text().splitlines()
    return data["bmc"], calls


@pytest.mark.parametrize("source, expected", [
    ("Static Address", "static"), ("DHCP Address", "dhcp"),
    ("BIOS Assigned Address", "bios"), ("Other", "other")])
def test_bmc_address_from_ipmitool_lan_print(tmp_path: Path, busybox_path: str, source: str,
                                             expected: str) -> None:
    out = LAN_PRINT.format(source=source, ip="192.0.2.77", mac="52:54:00:BE:EF:01")
    bmc, calls = bmc_inventory(tmp_path, busybox_path, fake_ipmitool(tmp_path, {"": out}))
    assert bmc == {"present": True, "interface": "ipmi0", "ip": "192.0.2.77",
                   "mac": "52:54:00:be:ef:01", "ip_source": expected}
    assert calls == ["lan print"]


def test_bmc_address_on_a_later_channel(tmp_path: Path, busybox_path: str) -> None:
    """The default channel shows no address (0.0.0.0), channel 1 fails, channel 2 has it."""
    unset = LAN_PRINT.format(source="Static Address", ip="0.0.0.0", mac="00:00:00:00:00:00")
    ch2 = LAN_PRINT.format(source="DHCP Address", ip="10.20.0.5", mac="aa:bb:cc:dd:ee:02")
    bmc, calls = bmc_inventory(tmp_path, busybox_path,
                               fake_ipmitool(tmp_path, {"": unset, "2": ch2}))
    assert bmc["ip"] == "10.20.0.5" and bmc["mac"] == "aa:bb:cc:dd:ee:02"
    assert bmc["ip_source"] == "dhcp"
    assert calls == ["lan print", "lan print 1", "lan print 2"]


def test_bmc_without_an_address(tmp_path: Path, busybox_path: str) -> None:
    """No channel has an address: present, with whatever MAC the BMC showed; garbage in the
    address field is not reported."""
    out = LAN_PRINT.format(source="Static Address", ip="not-an-ip", mac="52:54:00:be:ef:01")
    bmc, calls = bmc_inventory(tmp_path, busybox_path, fake_ipmitool(tmp_path, {"": out}))
    assert bmc == {"present": True, "interface": "ipmi0", "ip": "", "mac": "52:54:00:be:ef:01",
                   "ip_source": "static"}
    assert calls == ["lan print", "lan print 1", "lan print 2", "lan print 3"]


def test_a_hanging_ipmitool_is_cut_short(tmp_path: Path, busybox_path: str) -> None:
    out = LAN_PRINT.format(source="Static Address", ip="192.0.2.77", mac="52:54:00:be:ef:01")
    started = time.monotonic()
    bmc, calls = bmc_inventory(tmp_path, busybox_path,
                               fake_ipmitool(tmp_path, {"": out}, sleep=30))
    assert time.monotonic() - started < 15  # IPMI_TIMEOUT=2 in the test config
    assert bmc["present"] is True and bmc["ip"] == ""
    assert calls == ["lan print"]  # a timeout ends the search


def test_inventory_of_this_host_validates(tmp_path: Path, busybox_path: str) -> None:
    env = {"PATH": busybox_path, "DRAGONFLY_WORKDIR": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(["busybox", "sh", str(agent_script(tmp_path)), "inventory"],
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    report = parse_report(json.loads(done.stdout))
    assert report.cpu["threads"] == os.cpu_count()
    with open("/proc/meminfo") as fh:
        kb = int(fh.readline().split()[1])
    assert report.memory_bytes == kb * 1024


async def test_agent_protocol_loop(tmp_path: Path, busybox_path: str,
                                   aiohttp_server: Callable[..., Awaitable[TestServer]]
                                   ) -> None:
    """500 -> backoff -> check-in -> wait -> heartbeat 404 (machine deleted) -> check-in
    again -> wait -> heartbeat -> poweroff."""
    calls = 0

    async def flaky_name(ip: str | None, mac: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("name service hiccup")
        return f"node{calls}"

    ctx: AppContext = make_context(tmp_path / "state", poll_seconds=2,
                                   resolve_name=flaky_name)
    server = await aiohttp_server(agent_app(ctx))
    root = fake_root(tmp_path / "root", f"dragonfly.url=http://127.0.0.1:{server.port}/ "
                                        "dragonfly.mac=aa:bb:cc:00:00:01")
    env = agent_env(root, busybox_path, tmp_path / "work",
                    DRAGONFLY_POWEROFF_CMD="echo AGENT-POWEROFF; exit 0",
                    DRAGONFLY_REBOOT_CMD="echo AGENT-REBOOT; exit 3")
    proc = await asyncio.create_subprocess_exec(
        "busybox", "sh", str(agent_script(tmp_path)), "run", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def machine_named(name: str) -> Any:
        for _ in range(300):
            found = [m for m in ctx.fleet.list_machines().items if m.name == name]
            if found:
                return found[0]
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        pytest.fail(f"no machine {name!r}")

    try:
        first = await machine_named("node2")
        await ctx.fleet.delete_machine(first.id)
        second = await machine_named("node3")  # the agent noticed and checked in again
        assert second.id != first.id
        commands = ctx.commands
        assert isinstance(commands, AgentCommands)
        commands.queue(second.id, "poweroff")
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = out.decode()
    assert proc.returncode == 0, log
    assert "AGENT-POWEROFF" in log and "AGENT-REBOOT" not in log
    assert "failed" in log and "retrying in" in log  # the 500 was retried
    assert "no longer knows this machine" in log
    assert ctx.fleet.machine_count() == 1
    assert ctx.fleet.get_machine(second.id).macs == ["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"]
