"""The boot edge of an installed server, composed from the settings: boot log (boot doctor),
proxyDHCP or full DHCP, TFTP, and the hooks that tie them to the HTTP boot endpoints.

DHCP, TFTP and HTTP all read one ``BootRegistry`` and report to one ``BootLog``; TFTP and HTTP
only see addresses, so they find the MAC through what DHCP learnt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragonfly.boot.registry import BootRegistry
from dragonfly.bootlog import BootLog
from dragonfly.config import Config
from dragonfly.dhcp.netif import default_route_interface, interface_ipv4
from dragonfly.dhcp.server import DhcpService
from dragonfly.dhcp.wiring import registry_from_settings, service_from_settings
from dragonfly.errors import DragonflyError
from dragonfly.fleet import Fleet
from dragonfly.loaders import Loaders
from dragonfly.model import State
from dragonfly.store import Store
from dragonfly.tftp.server import TftpServer
from dragonfly.tftp.transfer import TransferRecord

log = logging.getLogger(__name__)

@dataclass
class BootStack:
    registry: BootRegistry
    loaders: Loaders
    bootlog: BootLog
    interface: str | None
    address: str
    dhcp: DhcpService | None
    tftp: TftpServer | None

    @property
    def services(self) -> list[Any]:
        return [s for s in (self.bootlog, self.dhcp, self.tftp) if s is not None]

    def loader_file(self, path: str) -> Path | bytes | None:
        """What a TFTP or HTTP path names: only registry loaders, never anything else."""
        name = self.registry.loader_for_path(path)
        return self.loaders.locate(name) if name is not None else None

    def on_tftp_transfer(self, record: TransferRecord) -> None:
        mac = self.bootlog.mac_for_ip(record.client_ip) or (
            self.dhcp.mac_for_ip(record.client_ip) if self.dhcp is not None else None)
        if mac is None:
            log.info("TFTP %s to %s (%s): no DHCP seen for this address", record.filename,
                     record.client_ip, record.outcome)
            return
        if record.outcome == "size_probe":
            return  # EDK2 asks for the size first; the real download follows
        detail = {"file": record.filename, "bytes": record.bytes_sent, "ip": record.client_ip,
                  "seconds": round(record.duration, 3), "blksize": record.blksize}
        if record.ok:
            self.bootlog.record(mac, "tftp", detail)
            if self.dhcp is not None:
                loader = self.registry.loader_for_path(record.filename)
                if loader is not None:
                    self.dhcp.note_loader_fetched(mac, loader)
        else:
            self.bootlog.record(mac, "tftp_error", {**detail, "error": record.error
                                                    or record.outcome})


def boot_address(config: Config, interface: str | None) -> str:
    if config["boot.address"]:
        return str(config["boot.address"])
    if interface:
        found = interface_ipv4(interface)
        if found is not None:
            return found[0]
    bind = config["server.bind"]
    if bind not in ("0.0.0.0", "::", ""):
        return str(bind)
    raise DragonflyError(
        f"cannot tell which address machines should boot from: the boot interface "
        f"{interface or '(none found)'} has no IPv4 address. Set boot.interface or "
        f"boot.address, or run with --dhcp-mode off")


def build_boot_stack(config: Config, store: Store, fleet: Fleet) -> BootStack:
    values = config.as_dict()
    interface = config["boot.interface"] or default_route_interface()
    registry = registry_from_settings(values)
    loaders = Loaders(config.state_dir)
    bootlog = BootLog(store)
    mode = config["boot.dhcp_mode"]
    if mode == "off":
        address = config["boot.address"] or (
            config["server.bind"] if config["server.bind"] not in ("0.0.0.0", "::") else "")
        return BootStack(registry, loaders, bootlog, interface, address, None, None)
    address = boot_address(config, interface)
    stack = BootStack(registry, loaders, bootlog, interface, address, None, None)

    def allow(mac: str) -> bool:
        # Selective mode: only machines registered beforehand, and not those in maintenance.
        machine = fleet.find_machine([mac])
        return machine is not None and machine.state is not State.MAINTENANCE

    stack.dhcp = service_from_settings(
        {**values, "boot.interface": interface or ""}, server_ip=address,
        http_port=config["server.port"], store=store, allow=allow, on_event=bootlog.record)
    stack.tftp = TftpServer(stack.loader_file, host="0.0.0.0", port=config["boot.tftp_port"],
                            interface=interface, on_transfer=stack.on_tftp_transfer)
    return stack
