"""The network settings as kickstart ``network`` lines (anaconda).

Kickstart keys a line by its ``--device``, and a VLAN on a bond or NIC that has a line of its
own must be written on that line (``--vlanid``): two lines for one device are an error to
``ksvalidator``. So one VLAN per such device, and the addressing goes to whichever of the two
has it (the VLAN's when given)."""

from __future__ import annotations

import ipaddress

from dragonfly.errors import InvalidInput
from dragonfly.templates.network import Addressing, NetworkSettings


def _addressing(a: Addressing, default_dhcp: bool, nameservers: tuple[str, ...]) -> list[str]:
    v4 = [ipaddress.ip_interface(x) for x in a.addresses
          if ipaddress.ip_interface(x).version == 4]
    v6 = [x for x in a.addresses if ipaddress.ip_interface(x).version == 6]
    dhcp = a.dhcp4 if a.dhcp4 is not None else default_dhcp and not a.addresses
    args: list[str] = []
    if dhcp:
        args.append("--bootproto=dhcp")
    elif v4:
        args += ["--bootproto=static", f"--ip={v4[0].ip}", f"--netmask={v4[0].netmask}"]
        if a.gateway4:
            args.append(f"--gateway={a.gateway4}")
    else:
        args.append("--noipv4")
    if v6:
        args.append(f"--ipv6={v6[0]}")
        if a.gateway6:
            args.append(f"--ipv6gateway={a.gateway6}")
    elif not dhcp:
        args.append("--noipv6")
    if (dhcp or v4) and nameservers:
        args.append("--nameserver=" + ",".join(nameservers))
    if a.mtu:
        args.append(f"--mtu={a.mtu}")
    return args


def kickstart_network(settings: NetworkSettings, boot_mac: str, fqdn: str) -> list[str]:
    primary_bond = next((b for b in settings.bonds if boot_mac in b.interfaces), None)
    # device -> (its own words, its addressing, whether that addressing was given)
    lines: dict[str, list[str]] = {}
    addressing: dict[str, tuple[Addressing, bool]] = {}
    for bond in settings.bonds:
        opts = [f"mode={bond.mode}"]
        if bond.mii_monitor_interval:
            opts.append(f"miimon={bond.mii_monitor_interval}")
        if bond.lacp_rate:
            opts.append(f"lacp_rate={bond.lacp_rate}")
        if bond.transmit_hash_policy:
            opts.append(f"xmit_hash_policy={bond.transmit_hash_policy}")
        lines[bond.name] = [f"--device={bond.name}",
                            "--bondslaves=" + ",".join(bond.interfaces),
                            "--bondopts=" + ",".join(opts)]
        own = bond.addressing
        if bond is primary_bond and not own.given:
            own = settings.primary
        addressing[bond.name] = (own, bond is primary_bond)
    if primary_bond is None:
        lines[boot_mac] = [f"--device={boot_mac}"]
        addressing[boot_mac] = (settings.primary, True)
    primary = primary_bond.name if primary_bond else boot_mac
    vlan_on: set[str] = set()
    for vlan in settings.vlans:
        name = vlan.name or f"vlan{vlan.id}"
        words = [f"--vlanid={vlan.id}", f"--interfacename={name}"]
        if vlan.link in lines:
            if vlan.link in vlan_on:
                raise InvalidInput(f"network.vlans: kickstart carries one VLAN per device; "
                                   f"{vlan.link} has more than one")
            parent, default = addressing[vlan.link]
            if vlan.addressing.given and parent.given:
                raise InvalidInput(f"network.vlans (id {vlan.id}): kickstart writes a VLAN "
                                   f"on {vlan.link}'s own line, so give the addressing to "
                                   "one of them, not both")
            vlan_on.add(vlan.link)
            lines[vlan.link] += words
            if vlan.addressing.given:
                addressing[vlan.link] = (vlan.addressing, default)
        else:
            key = f"{vlan.link}.{vlan.id}"
            lines[key] = [f"--device={vlan.link}", *words]
            addressing[key] = (vlan.addressing, False)
    out = []
    for key, words in lines.items():
        a, default_dhcp = addressing[key]
        tail = ["--onboot=yes"]
        if key == primary:
            tail += [f"--hostname={fqdn}", "--activate"]
        out.append("network " + " ".join(
            [*words, *_addressing(a, default_dhcp, settings.nameservers if key == primary
                                  else ()), *tail]))
    return out
