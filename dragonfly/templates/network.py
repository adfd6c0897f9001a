"""A machine's network settings for a deployment, and the cloud-init network-config (v2) they
become.

The settings (the ``network`` object of the deploy options; every key optional)::

    {
      "dhcp4": true,                      # on the primary interface; default: true unless
      "addresses": ["10.0.0.5/24"],       #   static addresses are given
      "gateway4": "10.0.0.1", "gateway6": "2001:db8::1",
      "nameservers": ["10.0.0.53"], "search": ["example.com"],
      "mtu": 9000,
      "bonds": [{"name": "bond0", "interfaces": ["52:54:00:..:01", "52:54:00:..:02"],
                 "mode": "802.3ad", "lacp_rate": "fast", "transmit_hash_policy": "layer3+4",
                 "mii_monitor_interval": 100,
                 "dhcp4": false, "addresses": [], "gateway4": "", "gateway6": "", "mtu": 9000}],
      "vlans": [{"id": 100, "link": "bond0",          # a bond's name or one NIC's MAC
                 "name": "bond0.100",                 # default <link>.<id>
                 "dhcp4": false, "addresses": ["10.0.100.5/24"], "gateway4": "10.0.100.1"}]
    }

The **primary interface** is the bond that holds the boot NIC, or else the boot NIC itself;
the top-level addressing keys configure it (a bond that is primary may carry them itself
instead, not both). Without settings the boot NIC gets DHCP, as it did in discovery.

In the network-config, NICs are matched by MAC and keyed ``nic0``, ``nic1``... in the
machine's inventory order; there is no ``set-name``, so each OS keeps its own interface names
(cloud-init and netplan look the MAC up). Default routes are written as ``routes`` (``to:
0.0.0.0/0``) rather than the ``gateway4`` that netplan deprecates; cloud-init's own renderers
(networkd, eni, sysconfig) read both.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from dragonfly.domain.model import Machine
from dragonfly.errors import InvalidInput

BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")
HASH_POLICIES = ("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4")
_IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")  # IFNAMSIZ: 15 characters
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                   r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_ADDRESSING = ("dhcp4", "addresses", "gateway4", "gateway6", "mtu")
MAX_ITEMS = 16


@dataclass(frozen=True)
class Addressing:
    dhcp4: bool | None = None  # None: the default for where it is used
    addresses: tuple[str, ...] = ()
    gateway4: str = ""
    gateway6: str = ""
    mtu: int = 0

    @property
    def given(self) -> bool:
        return self != Addressing()

    def v2(self, default_dhcp: bool) -> dict[str, Any]:
        dhcp = self.dhcp4 if self.dhcp4 is not None else default_dhcp and not self.addresses
        out: dict[str, Any] = {"dhcp4": dhcp}
        if self.addresses:
            out["addresses"] = list(self.addresses)
        routes = [{"to": to, "via": via} for to, via in
                  (("0.0.0.0/0", self.gateway4), ("::/0", self.gateway6)) if via]
        if routes:
            out["routes"] = routes
        if self.mtu:
            out["mtu"] = self.mtu
        return out


@dataclass(frozen=True)
class Bond:
    name: str
    interfaces: tuple[str, ...]  # MACs
    mode: str = "802.3ad"
    lacp_rate: str = ""
    transmit_hash_policy: str = ""
    mii_monitor_interval: int = 100
    addressing: Addressing = field(default_factory=Addressing)


@dataclass(frozen=True)
class Vlan:
    id: int
    link: str  # a bond's name or a MAC
    name: str = ""
    addressing: Addressing = field(default_factory=Addressing)


@dataclass(frozen=True)
class NetworkSettings:
    primary: Addressing = field(default_factory=Addressing)
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    bonds: tuple[Bond, ...] = ()
    vlans: tuple[Vlan, ...] = ()


# --- parsing --------------------------------------------------------------------------------

def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object")
    return value


def _only(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidInput(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(unknown)}; known: {', '.join(known)}")


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InvalidInput(f"{where}.{key} must be a list of at most {MAX_ITEMS} items")
    return value


def _ip(value: object, where: str, version: int | None = None) -> str:
    try:
        address = ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise InvalidInput(f"{where}: {value!r} is not an IP address") from None
    if version and address.version != version:
        raise InvalidInput(f"{where}: {value} is not an IPv{version} address")
    return str(address)


def _cidr(value: object, where: str) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(f"{where}: {value!r} is not an address with a prefix, e.g. "
                           "10.0.0.5/24")
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        raise InvalidInput(f"{where}: {value!r} is not an address with a prefix") from None
    return str(interface)


def _mac(value: object, where: str) -> str:
    text = value.strip().lower().replace("-", ":") if isinstance(value, str) else ""
    if not _MAC.match(text):
        raise InvalidInput(f"{where}: {value!r} is not a MAC address")
    return text


def _addressing(data: dict[str, Any], where: str) -> Addressing:
    dhcp4 = data.get("dhcp4")
    if dhcp4 is not None and not isinstance(dhcp4, bool):
        raise InvalidInput(f"{where}.dhcp4 must be true or false")
    mtu = data.get("mtu", 0)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not (mtu == 0 or 576 <= mtu <= 9216):
        raise InvalidInput(f"{where}.mtu must be between 576 and 9216")
    addresses = tuple(_cidr(a, f"{where}.addresses[{i}]")
                      for i, a in enumerate(_list(data, "addresses", where)))
    gateways = {key: _ip(data[key], f"{where}.{key}", version)
                for key, version in (("gateway4", 4), ("gateway6", 6)) if data.get(key)}
    for key, gateway in gateways.items():
        nets = [ipaddress.ip_interface(a).network for a in addresses]
        if nets and not any(ipaddress.ip_address(gateway) in net for net in nets):
            raise InvalidInput(f"{where}.{key} {gateway} is on none of the addresses' networks")
    return Addressing(dhcp4, addresses, gateways.get("gateway4", ""),
                      gateways.get("gateway6", ""), mtu)


def parse_network(value: object) -> NetworkSettings:
    """Validate the deploy options' ``network`` object (shape in this module's docstring)."""
    if value is None:
        return NetworkSettings()
    data = _obj(value, "network")
    _only(data, (*_ADDRESSING, "nameservers", "search", "bonds", "vlans"), "network")
    nameservers = tuple(_ip(a, f"network.nameservers[{i}]")
                        for i, a in enumerate(_list(data, "nameservers", "network")))
    search = tuple(_list(data, "search", "network"))
    for i, domain in enumerate(search):
        if not isinstance(domain, str) or not _HOST.match(domain):
            raise InvalidInput(f"network.search[{i}]: {domain!r} is not a domain name")
    bonds: list[Bond] = []
    for i, item in enumerate(_list(data, "bonds", "network")):
        bonds.append(_bond(_obj(item, f"network.bonds[{i}]"), f"network.bonds[{i}]"))
    vlans = [_vlan(_obj(item, f"network.vlans[{i}]"), f"network.vlans[{i}]")
             for i, item in enumerate(_list(data, "vlans", "network"))]
    names = [b.name for b in bonds] + [v.name for v in vlans if v.name]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InvalidInput(f"network: the name {duplicate!r} is used twice")
    members = [m for b in bonds for m in b.interfaces]
    shared = next((m for m in members if members.count(m) > 1), None)
    if shared:
        raise InvalidInput(f"network: {shared} is in more than one bond")
    return NetworkSettings(_addressing(data, "network"), nameservers, search, tuple(bonds),
                           tuple(vlans))


def _bond(data: dict[str, Any], where: str) -> Bond:
    _only(data, ("name", "interfaces", "mode", "lacp_rate", "transmit_hash_policy",
                 "mii_monitor_interval", *_ADDRESSING), where)
    name = data.get("name")
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise InvalidInput(f"{where}.name must be an interface name (e.g. bond0), at most 15 "
                           "characters")
    interfaces = tuple(dict.fromkeys(_mac(m, f"{where}.interfaces[{i}]")
                                     for i, m in enumerate(_list(data, "interfaces", where))))
    if not interfaces:
        raise InvalidInput(f"{where}.interfaces must list the MACs of its NICs")
    mode = data.get("mode", "802.3ad")
    if mode not in BOND_MODES:
        raise InvalidInput(f"{where}.mode must be one of {', '.join(BOND_MODES)}")
    lacp_rate = data.get("lacp_rate", "")
    if lacp_rate not in ("", "slow", "fast") or (lacp_rate and mode != "802.3ad"):
        raise InvalidInput(f"{where}.lacp_rate is slow or fast, and only for mode 802.3ad")
    policy = data.get("transmit_hash_policy", "")
    if policy not in ("", *HASH_POLICIES):
        raise InvalidInput(f"{where}.transmit_hash_policy must be one of "
                           f"{', '.join(HASH_POLICIES)}")
    miimon = data.get("mii_monitor_interval", 100)
    if isinstance(miimon, bool) or not isinstance(miimon, int) or not 0 <= miimon <= 10_000:
        raise InvalidInput(f"{where}.mii_monitor_interval is milliseconds, 0 to 10000")
    return Bond(name, interfaces, mode, lacp_rate, policy, miimon, _addressing(data, where))


def _vlan(data: dict[str, Any], where: str) -> Vlan:
    _only(data, ("id", "link", "name", *_ADDRESSING), where)
    vid = data.get("id")
    if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid <= 4094:
        raise InvalidInput(f"{where}.id must be a VLAN id between 1 and 4094")
    link = data.get("link")
    if not isinstance(link, str) or not link:
        raise InvalidInput(f"{where}.link must name a bond or a NIC's MAC")
    if _MAC.match(link.strip().lower().replace("-", ":")):
        link = _mac(link, f"{where}.link")
    name = data.get("name", "")
    if not isinstance(name, str) or (name and not _IFNAME.match(name)):
        raise InvalidInput(f"{where}.name must be an interface name of at most 15 characters")
    return Vlan(vid, link, name, _addressing(data, where))


# --- rendering ------------------------------------------------------------------------------

def machine_macs(machine: Machine) -> list[str]:
    """The machine's MACs in inventory order, the boot MAC first if the inventory lacks it."""
    macs = [str(n.get("mac", "")).lower() for n in machine.nics if n.get("mac")]
    macs += [m.lower() for m in machine.macs]
    if machine.mac and machine.mac.lower() not in macs:
        macs.insert(0, machine.mac.lower())
    return list(dict.fromkeys(macs))


def network_config(machine: Machine, settings: NetworkSettings) -> dict[str, Any]:
    """cloud-init network-config version 2 for ``machine`` under ``settings``."""
    macs = machine_macs(machine)
    if not macs:
        raise InvalidInput(f"{machine.name} has no known MAC address")
    ids = {mac: f"nic{i}" for i, mac in enumerate(macs)}
    boot = machine.mac.lower() if machine.mac else macs[0]
    bonds = {b.name: b for b in settings.bonds}
    primary_bond = next((b for b in settings.bonds if boot in b.interfaces), None)
    if primary_bond and primary_bond.addressing.given and settings.primary.given:
        raise InvalidInput(f"network: give the addressing of {primary_bond.name} (the primary "
                           "interface) either on the bond or at the top level, not both")

    used: dict[str, dict[str, Any]] = {}

    def nic(mac: str, where: str) -> str:
        if mac not in ids:
            raise InvalidInput(f"{where}: {mac} is not a NIC of {machine.name} "
                               f"(its MACs: {', '.join(macs)})")
        used.setdefault(ids[mac], {"match": {"macaddress": mac}, "dhcp4": False})
        return ids[mac]

    config: dict[str, Any] = {"version": 2, "ethernets": used}
    dns = ({"nameservers": {k: list(v) for k, v in (("addresses", settings.nameservers),
                                                     ("search", settings.search)) if v}}
           if settings.nameservers or settings.search else {})
    if primary_bond is None:
        used[nic(boot, "network")] = {"match": {"macaddress": boot},
                                      **settings.primary.v2(True), **dns}
    out_bonds: dict[str, Any] = {}
    for bond in settings.bonds:
        members = [nic(mac, f"network.bonds {bond.name}") for mac in bond.interfaces]
        params: dict[str, Any] = {"mode": bond.mode}
        if bond.lacp_rate:
            params["lacp-rate"] = bond.lacp_rate
        if bond.transmit_hash_policy:
            params["transmit-hash-policy"] = bond.transmit_hash_policy
        if bond.mii_monitor_interval:
            params["mii-monitor-interval"] = bond.mii_monitor_interval
        if bond is primary_bond:
            addressing = bond.addressing if bond.addressing.given else settings.primary
            body = {**addressing.v2(True), **dns}
        else:
            body = bond.addressing.v2(False)
        out_bonds[bond.name] = {"interfaces": members, "parameters": params, **body}
    if out_bonds:
        config["bonds"] = out_bonds
    out_vlans: dict[str, Any] = {}
    for vlan in settings.vlans:
        where = f"network.vlans (id {vlan.id})"
        if vlan.link in bonds:
            link = vlan.link
        elif _MAC.match(vlan.link):
            link = nic(vlan.link, where)
        else:
            raise InvalidInput(f"{where}: link {vlan.link!r} is neither a bond defined here "
                               "nor a MAC of the machine")
        name = vlan.name or f"{link}.{vlan.id}"
        if len(name) > 15:
            raise InvalidInput(f"{where}: the interface name {name!r} is longer than 15 "
                               "characters; give a shorter name")
        if name in out_vlans or name in out_bonds:
            raise InvalidInput(f"{where}: the name {name!r} is used twice")
        out_vlans[name] = {"id": vlan.id, "link": link, **vlan.addressing.v2(False)}
    if out_vlans:
        config["vlans"] = out_vlans
    return config
