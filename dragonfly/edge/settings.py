"""Build the DHCP service from the settings table (``boot.*``), for the composition root."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dragonfly.auth.allowlist import Network, parse_networks
from dragonfly.boot.registry import BootRegistry
from dragonfly.edge.dhcp.leases import FullModeSettings
from dragonfly.edge.dhcp.netif import interface_ipv4
from dragonfly.edge.dhcp.responder import AllowCallback, EventCallback
from dragonfly.edge.dhcp.server import DhcpService
from dragonfly.errors import InvalidInput
from dragonfly.store import Store


def registry_from_settings(values: Mapping[str, Any]) -> BootRegistry:
    get = values.__getitem__
    loader = get("boot.loader_uefi")
    try:
        return BootRegistry(loaders={"uefi-x64": loader, "uefi-http-x64": loader},
                            chainload_foreign_ipxe=bool(get("boot.ipxe_chainload")))
    except ValueError as exc:
        raise InvalidInput(f"boot.loader_uefi: {exc}") from None


def full_settings(values: Mapping[str, Any], interface: str | None) -> FullModeSettings:
    get = values.__getitem__
    if not get("boot.dhcp_range"):
        raise InvalidInput("boot.dhcp_mode = full needs boot.dhcp_range (e.g. "
                           "\"10.0.0.100-10.0.0.200\")")
    netmask = get("boot.dhcp_netmask")
    if not netmask and interface:
        found = interface_ipv4(interface)
        netmask = found[1] if found else ""
    try:
        return FullModeSettings.parse(
            get("boot.dhcp_range"), get("boot.dhcp_reservations"),
            netmask=netmask or "255.255.255.0", router=get("boot.dhcp_router") or None,
            dns=tuple(get("boot.dhcp_dns")), lease_time=int(get("boot.dhcp_lease_time")),
            force=bool(get("boot.dhcp_force")))
    except ValueError as exc:
        raise InvalidInput(f"full DHCP mode settings: {exc}") from None


def boot_networks(values: Mapping[str, Any]) -> list[Network]:
    """``boot.allowed_networks`` as networks (empty: any address)."""
    try:
        return parse_networks(values.get("boot.allowed_networks", ()))
    except ValueError as exc:
        raise InvalidInput(f"boot.allowed_networks: {exc}") from None


def service_from_settings(values: Mapping[str, Any], *, server_ip: str, http_port: int,
                          store: Store | None = None, allow: AllowCallback | None = None,
                          on_event: EventCallback | None = None,
                          http_host: str | None = None,
                          registry: BootRegistry | None = None,
                          clock: Callable[[], float] = time.time) -> DhcpService:
    """``values``: ``Config.as_dict()``. ``server_ip``: the boot interface's address.
    ``registry``: the boot edge's one registry, which TFTP and HTTP read too (built from
    ``values`` when a caller runs DHCP alone)."""
    get = values.__getitem__
    interface = get("boot.interface") or None
    mode = get("boot.dhcp_mode")
    return DhcpService(
        interface=interface, server_ip=server_ip, http_port=http_port,
        tftp_server_ip=get("boot.tftp_server") or None, mode=mode, allow=allow, store=store,
        full=full_settings(values, interface) if mode == "full" else None,
        on_event=on_event, registry=registry or registry_from_settings(values),
        http_host=http_host,
        relay_networks=boot_networks(values), clock=clock)
