"""A believable simulated fleet for the demo: real vendor models, CPUs, disks, NICs and BMCs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from dragonfly.domain.model import Machine, State, new_id


@dataclass(frozen=True)
class Chassis:
    vendor: str
    product: str
    oui: str
    bmc: str  # BMC flavour: how the vendor calls it and which protocol it speaks
    bmc_protocol: str


CHASSIS = (
    Chassis("Dell Inc.", "PowerEdge R650", "b0:7b:25", "iDRAC9", "redfish"),
    Chassis("Dell Inc.", "PowerEdge R750xs", "b0:7b:25", "iDRAC9", "redfish"),
    Chassis("Dell Inc.", "PowerEdge R6525", "4c:d9:8f", "iDRAC9", "redfish"),
    Chassis("HPE", "ProLiant DL360 Gen10 Plus", "94:40:c9", "iLO 5", "redfish"),
    Chassis("HPE", "ProLiant DL385 Gen11", "94:40:c9", "iLO 6", "redfish"),
    Chassis("Supermicro", "SYS-1029U-TRT", "ac:1f:6b", "IPMI", "ipmi"),
    Chassis("Supermicro", "AS-1114S-WN10RT", "3c:ec:ef", "IPMI", "ipmi"),
    Chassis("Lenovo", "ThinkSystem SR630 V2", "08:94:ef", "XClarity", "redfish"),
    Chassis("GIGABYTE", "R282-Z91", "18:c0:4d", "IPMI", "ipmi"),
)

CPUS = (
    ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 32, 2),
    ("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", 16, 2),
    ("Intel(R) Xeon(R) Gold 6430", 32, 2),
    ("AMD EPYC 7443P 24-Core Processor", 24, 1),
    ("AMD EPYC 9354 32-Core Processor", 32, 1),
    ("AMD EPYC 7713 64-Core Processor", 64, 2),
)

DISKS = (
    ("SAMSUNG MZQL23T8HCLS-00A07", 3_840_755_982_336, False, "nvme"),
    ("Micron_7450_MTFDKCC1T9TFR", 1_920_383_410_176, False, "nvme"),
    ("MZ7LH960HAJR-00005", 960_197_124_096, False, "sd"),
    ("ST18000NM000J-2TV103", 18_000_207_937_536, True, "sd"),
    ("KINGSTON SEDC600M480G", 480_103_981_056, False, "sd"),
)

NICS = (
    ("Intel Ethernet Controller X710 for 10GbE SFP+", 10_000),
    ("Mellanox ConnectX-5 EN 25GbE", 25_000),
    ("Broadcom BCM57416 NetXtreme-E 10GBASE-T", 10_000),
    ("Intel Ethernet Controller E810-XXV", 25_000),
)

ROLES = {
    "k8s-control": ["k8s", "prod"],
    "k8s-worker": ["k8s", "prod"],
    "ceph-osd": ["ceph", "storage"],
    "hypervisor": ["proxmox"],
    "ci-runner": ["ci", "staging"],
    "db": ["postgres", "prod"],
}

# How many machines of each state the demo starts with (24 in all).
START_STATES = (
    [State.INSTALLED] * 10 + [State.DEPLOYING] * 4 + [State.READY] * 3
    + [State.DISCOVERED] * 3 + [State.FAILED] * 2 + [State.MAINTENANCE] * 2
)

FAILURES = (
    "stream image: checksum mismatch on /dev/nvme0n1 (expected sha256 9f2c41d0…, got "
    "41ab07e3…); the image cache entry was evicted, retry will fetch it again",
    "partition disk: /dev/sda (480 GB) is smaller than the image's minimum disk size (512 GB)",
    "reboot into OS: no phone-home within 10 minutes; the console shows "
    "'No bootable device' — check the boot order in the BMC",
    "boot deployment environment: the machine stopped answering heartbeats after DHCP "
    "(cable or switch port down?)",
    "write cloud-init seed: /dev/md127 is busy (a leftover software RAID); wipe the disk "
    "signatures and retry",
)

# Why a deployment stops, by the stage (native) or action (Tinkerbell) it stops in, so the
# reason always names the step the progress bar shows as failed. ``FAILURES`` are among them.
STAGE_FAILURES: dict[str, tuple[str, ...]] = {
    "boot deployment environment": (
        FAILURES[3],
        "boot deployment environment: no DHCP request within 5 minutes of the BMC power "
        "cycle; is network boot enabled on eno1np0?",
    ),
    "partition disk": (FAILURES[1],),
    "stream image": (
        FAILURES[0],
        "stream image: the image server connection dropped and 3 retries failed "
        "(connection reset by peer)",
    ),
    "write cloud-init seed": (FAILURES[4],),
    "install bootloader": (
        "install bootloader: no EFI system partition on the target disk; the machine booted "
        "in legacy BIOS mode, switch it to UEFI in the BMC",
    ),
    "reboot into OS": (FAILURES[2],),
    "stream-image": (
        "stream-image (image2disk): HTTP 404 fetching the image from the Hook image server; "
        "sync the OS image and retry",
        "stream-image (image2disk): write /dev/nvme0n1: input/output error; the drive "
        "logged media errors",
    ),
    "write-seed": (
        "write-seed (writefile): mount /dev/disk/by-label/cloudimg-rootfs: no such device; "
        "the image's root filesystem has another label than the template's root_label",
    ),
    "boot-os": (
        "boot-os (kexec): no phone-home within 10 minutes of the kexec; the console shows a "
        "kernel panic (VFS: unable to mount root fs)",
    ),
}

MAINTENANCE_REASONS = (
    "DIMM B2 reports correctable ECC errors; replacement ordered",
    "Moved to rack C3; cabling not finished",
    "BMC firmware update scheduled (iDRAC/iLO to the latest release)",
    "PSU 2 failed; the vendor's engineer is due tomorrow",
    "Disk 3 predicted to fail (SMART: reallocated sectors rising); swap pending",
)

# The simulated operator decommissions old machines through maintenance, then deletes them.
RETIRE_REASONS = (
    "Decommissioning: out of warranty; will be removed from the inventory",
    "Decommissioning: replaced by newer hardware; will be removed from the inventory",
    "Decommissioning: lease ends this month; will be removed from the inventory",
)


def _mac(rng: random.Random, oui: str) -> str:
    return oui + ":" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))


def make_machine(rng: random.Random, index: int, state: State, name: str,
                 now: float) -> Machine:
    chassis = rng.choice(CHASSIS)
    cpu_model, cores, sockets = rng.choice(CPUS)
    nic_model, speed = rng.choice(NICS)
    nics: list[dict[str, Any]] = []
    for port in range(2):
        nics.append({"name": f"eno{port + 1}np{port}", "mac": _mac(rng, chassis.oui),
                     "speed_mbps": speed if port == 0 or rng.random() < 0.7 else 0,
                     "link": port == 0 or rng.random() < 0.7, "model": nic_model})
    disk_model, disk_size, rotational, kind = rng.choice(DISKS)
    count = rng.choice((1, 2, 2, 4)) if rotational else rng.choice((1, 2))
    disks = [{"name": f"nvme{i}n1" if kind == "nvme" else f"sd{chr(97 + i)}",
              "size_bytes": disk_size, "model": disk_model,
              "serial": f"S{rng.randrange(10**9):09d}", "rotational": rotational}
             for i in range(count)]
    ip = f"10.20.{10 + index // 200}.{10 + index % 200}"
    role = rng.choice(list(ROLES)) if state not in (State.DISCOVERED,) else ""
    tags = [f"rack-{rng.choice('abcd')}{rng.randrange(1, 5)}"]
    if role:
        tags += ROLES[role]
    if kind == "nvme":
        tags.append("nvme")
    serial_prefix = {"Dell Inc.": "", "HPE": "CZ", "Lenovo": "J"}.get(chassis.vendor, "S")
    machine = Machine(
        id=new_id(), name=name, state=state, mac=nics[0]["mac"], macs=[n["mac"] for n in nics],
        ip=ip, vendor=chassis.vendor, product=chassis.product,
        serial=serial_prefix + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
                                       for _ in range(7)),
        smbios_uuid=str(__import__("uuid").UUID(int=rng.getrandbits(128), version=4)),
        cpu={"model": cpu_model, "sockets": sockets, "cores": cores * sockets,
             "threads": cores * sockets * 2},
        memory_bytes=rng.choice((64, 128, 256, 384, 512, 768, 1024)) * 1024**3,
        disks=disks, nics=nics,
        # The fields a discovery agent reports (ip, ip_source, mac), and the chassis' kind.
        bmc={"ip": f"10.20.250.{10 + index}", "ip_source": "static",
             "mac": f"02:dd:fa:{index >> 8 & 0xff:02x}:{index & 0xff:02x}:01",
             "type": chassis.bmc_protocol, "vendor": chassis.bmc},
        tags=tags, role=role, power="on", last_seen=now - rng.uniform(5, 3600),
        created_at=now - rng.uniform(86400, 86400 * 90),
    )
    return machine
