"""The boot edge of an installed server, composed from the settings: proxyDHCP or full DHCP,
TFTP, and the hooks that tie them to the boot log (boot doctor) and the HTTP boot endpoints.

DHCP, TFTP and HTTP all read one ``BootRegistry`` and report to one ``BootLog``; TFTP and HTTP
only see addresses, so they find the MAC through what DHCP learnt.

``BootEdge`` is the service the app runs: it builds the stack from the effective settings
(config file < settings stored by the first-run wizard < command-line flags) and rebuilds it
when the wizard or an admin changes a boot setting, so no restart is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragonfly.auth.allowlist import allowed, parse_address
from dragonfly.boot.discovery import discovery_status
from dragonfly.boot.loaders import Loaders
from dragonfly.boot.log import BootLog
from dragonfly.boot.registry import BootRegistry
from dragonfly.config import Config
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import State
from dragonfly.edge.dhcp.netif import default_route_interface, interface_ipv4
from dragonfly.edge.dhcp.server import DhcpService
from dragonfly.edge.settings import boot_networks, registry_from_settings, service_from_settings
from dragonfly.edge.tftp.server import TftpServer
from dragonfly.edge.tftp.transfer import TransferRecord
from dragonfly.errors import DragonflyError, NotFound, Unavailable
from dragonfly.store import Change, Store

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


def boot_address(config: Mapping[str, Any], interface: str | None) -> str:
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


def build_boot_stack(config: Mapping[str, Any], store: Store, fleet: Fleet, bootlog: BootLog,
                     loaders: Loaders) -> BootStack:
    values = dict(config)
    interface = config["boot.interface"] or default_route_interface()
    registry = registry_from_settings(values)
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
        http_port=config["server.port"], store=store, allow=allow, on_event=bootlog.record,
        registry=registry, clock=bootlog.clock)
    # The boot log writes a DHCP flood's steps once the flood is over, right away.
    bootlog.busy_hint = stack.dhcp.busy
    stack.dhcp.on_calm = bootlog.poke
    networks = boot_networks(values)

    def allow_client(ip: str) -> bool:
        return allowed(networks, parse_address(ip))

    stack.tftp = TftpServer(stack.loader_file, host="0.0.0.0", port=config["boot.tftp_port"],
                            interface=interface, on_transfer=stack.on_tftp_transfer,
                            allow_client=allow_client if networks else None)
    return stack


StackBuilder = Callable[[Mapping[str, Any], Store, Fleet, BootLog, Loaders], BootStack]


def _open_error(service: Any, exc: OSError) -> str:
    """A socket error at start as a sentence (DHCP already raises its own)."""
    port = getattr(service, "requested_port", None)
    where = f"UDP port {port}" if port is not None else "its socket"
    hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" \
        if isinstance(exc, PermissionError) else ""
    return f"cannot open the {service.name.upper()} socket on {where}: " \
           f"{exc.strerror or exc}{hint}"


# Settings whose change rebuilds the DHCP and TFTP services.
BOOT_KEYS = frozenset({"boot.interface", "boot.dhcp_mode", "boot.dhcp_range",
                       "boot.dhcp_reservations", "boot.loader_uefi", "boot.address",
                       "boot.allowed_networks"})
SETTING_KIND = "setting"  # documents the first-run wizard and the security page store
EDGE_KIND, EDGE_KEY = "boot_edge", "state"  # the edge's last state, on the event stream


class BootEdge:
    """Runs the current ``BootStack`` and rebuilds it when a boot setting changes."""

    name = "boot edge"

    def __init__(self, config: Config, store: Store, fleet: Fleet, bootlog: BootLog,
                 pinned: Mapping[str, Any] | None = None,
                 build: StackBuilder = build_boot_stack) -> None:
        self.config = config
        self.store = store
        self.fleet = fleet
        self.bootlog = bootlog
        self.pinned = dict(pinned or {})  # command-line flags: they win over stored settings
        self.loaders = Loaders(config.state_dir)
        self.build = build  # tests build stacks on loopback ports
        self.stack: BootStack | None = None
        self.error = ""
        # Which part failed when ``error`` is set: "settings" (the stack could not be built
        # from them), "dhcp" or "tftp" (that service did not start).
        self.failed = ""
        self.settings: dict[str, Any] = {}  # the effective settings of the last bring-up
        self._restart: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def effective_settings(self) -> dict[str, Any]:
        values = self.config.as_dict()
        for doc in await self.store.list(SETTING_KIND):
            if doc.key in values and "value" in doc.data:
                values[doc.key] = doc.data["value"]
        return {**values, **self.pinned}

    async def start(self) -> None:
        await self._bring_up()
        self.store.add_listener(self._on_change)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.remove_listener(self._on_change)
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
            self._restart = None
        await self._bring_down()

    def _on_change(self, change: Change) -> None:
        if change.kind != SETTING_KIND or change.key not in BOOT_KEYS:
            return
        if change.key in self.pinned or (self._restart and not self._restart.done()):
            return
        self._restart = asyncio.get_running_loop().create_task(self._rebuild(),
                                                               name="boot-edge-rebuild")

    async def _rebuild(self) -> None:
        if self.stack is not None and self.settings == await self.effective_settings():
            return  # stored again unchanged (the Security page saves its whole form)
        log.info("boot settings changed: restarting DHCP and TFTP")
        await self._bring_down()
        await self._bring_up()

    async def _bring_up(self) -> None:
        async with self._lock:
            values = self.settings = await self.effective_settings()
            try:
                stack = self.build(values, self.store, self.fleet, self.bootlog, self.loaders)
            except DragonflyError as exc:
                await self._failed("settings", exc.message)
                return
            started: list[Any] = []
            try:
                for service in (stack.dhcp, stack.tftp):
                    if service is None:
                        continue
                    try:
                        await service.start()
                    except DragonflyError as exc:
                        reason = exc.message
                    except OSError as exc:
                        reason = _open_error(service, exc)
                    else:
                        started.append(service)
                        continue
                    for done in reversed(started):
                        await done.stop()
                    await self._failed(service.name, reason)
                    return
            except BaseException:
                for done in reversed(started):
                    await done.stop()
                raise
            self.stack, self.error, self.failed = stack, "", ""
            await self._publish()
            if stack.dhcp is None:
                log.info("DHCP off (boot.dhcp_mode = off): machines will not PXE-boot here")
            else:
                log.info("DHCP %s mode on %s, TFTP on port %s; machines boot from %s",
                         stack.dhcp.mode, stack.interface or "all interfaces",
                         stack.tftp.port if stack.tftp else "-", stack.address)

    async def _failed(self, part: str, reason: str) -> None:
        # Keep serving the panel: the operator fixes the setting there.
        self.error, self.failed = reason, part
        log.error("boot services not started: %s", reason)
        await self._publish()

    async def _publish(self) -> None:
        """The edge's state as a document, so open dashboards follow it (event stream)."""
        state = self.state()
        try:
            await self.store.put(EDGE_KIND, EDGE_KEY, {
                "state": state, "reason": self.error, "failed": self.failed,
                "dhcp_mode": self.settings.get("boot.dhcp_mode", ""),
                "at": self.fleet.clock()})
        except Exception:
            log.exception("recording the boot edge state failed")

    def state(self) -> str:
        """running, off (boot.dhcp_mode = off), failed (``error`` says why) or starting."""
        if self.error:
            return "failed"
        if self.stack is None:
            return "starting"
        return "off" if self.stack.dhcp is None and self.stack.tftp is None else "running"

    async def status(self) -> dict[str, Any]:
        """Per-service state, bound addresses, counters and what discovery still lacks: the
        boot doctor's view of the edge (``GET /api/boot/status``)."""
        discovery = await asyncio.to_thread(discovery_status, self.config)
        discovery["loaders_missing"] = await asyncio.to_thread(self.loaders.missing)
        stack = self.stack
        settings = self.settings
        state = self.state()
        services = {name: self._service_status(name, stack) for name in ("dhcp", "tftp")}
        reason = self.error
        if state == "off":
            reason = ("boot.dhcp_mode is off: this server answers no DHCP or TFTP, so machines "
                      "PXE-boot here only if another DHCP server sends them")
        return {
            "state": state, "reason": reason, "failed": self.failed, "simulated": False,
            "dhcp_mode": settings.get("boot.dhcp_mode", self.config["boot.dhcp_mode"]),
            "interface": (stack.interface if stack is not None
                          else settings.get("boot.interface") or None),
            "boot_address": stack.address if stack is not None else None,
            "http_port": int(settings.get("server.port", self.config["server.port"])),
            "services": services,
            "discovery": discovery,
        }

    async def loader(self, name: str, peer: str, fetching: bool) -> Path | bytes:
        """An iPXE loader for HTTP, from the running stack's registry (nothing else is ever
        served); a fetch (not a HEAD) is a boot step of the MAC that DHCP saw at ``peer``."""
        stack = self.stack
        if stack is None:
            raise Unavailable("the boot services are not running on this instance"
                              + (f": {self.error}" if self.error else ""))
        found = await asyncio.to_thread(stack.loader_file, name)
        if found is None:
            raise NotFound(f"no loader {name!r}: known loaders are "
                           f"{', '.join(sorted(stack.registry.loaders))}")
        mac = self.bootlog.mac_for_ip(peer)
        if mac is not None and fetching:
            size = len(found) if isinstance(found, bytes) else \
                (await asyncio.to_thread(found.stat)).st_size
            self.bootlog.record(mac, "http_loader", {"file": name, "bytes": size, "ip": peer})
            if stack.dhcp is not None:
                stack.dhcp.note_loader_fetched(mac, name)
        return found

    def _service_status(self, name: str, stack: BootStack | None) -> dict[str, Any]:
        service = getattr(stack, name, None) if stack is not None else None
        if service is not None:
            return {"state": "running" if service.running else "off", "reason": "",
                    **service.status()}
        if self.error:
            if self.failed in (name, "settings"):
                return {"state": "failed", "reason": self.error}
            return {"state": "off", "reason": f"not running: {self.failed.upper()} failed "
                                              "to start, so the boot edge was stopped"}
        if stack is None:
            return {"state": "starting", "reason": "the boot edge is starting"}
        return {"state": "off", "reason": "boot.dhcp_mode is off"}

    async def _bring_down(self) -> None:
        async with self._lock:
            stack, self.stack = self.stack, None
            if stack is None:
                return
            for service in (stack.tftp, stack.dhcp):
                if service is not None:
                    try:
                        await service.stop()
                    except Exception:
                        log.exception("stopping %s failed", service.name)
