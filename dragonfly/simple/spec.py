"""One description of an install (disk, partitioning, user, SSH keys, packages, locale,
timezone, network with VLANs and bonds, hostname), validated once and rendered per family.

Never a plaintext password: the user gets a crypt(3) hash (``$6$...``, ``$y$...``) or no
password at all (keys only; the account's password is locked)."""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dragonfly.domain.model import Machine
from dragonfly.errors import InvalidInput
from dragonfly.simple.kickstart_net import kickstart_network
from dragonfly.simple.names import OPTION_KEYS
from dragonfly.templates.network import NetworkSettings, network_config, parse_network

FAMILIES = ("debian", "ubuntu", "rhel", "proxmox")
PARTITIONING = ("lvm", "plain")
FILESYSTEMS = ("ext4", "xfs")
_HASH = re.compile(r"^\$(?:1|5|6|y|2[aby]|gy|7)\$[./A-Za-z0-9$=,]{8,200}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                     r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_PACKAGE = re.compile(r"^[A-Za-z0-9@][A-Za-z0-9.+_:-]{0,99}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2})?(?:\.UTF-8)?$")
_KEYMAP = re.compile(r"^[a-z]{2,8}(?:-[a-z0-9]{1,16})?$")
_TIMEZONE = re.compile(r"^[A-Za-z]+(?:[/_+-][A-Za-z0-9_+-]+){0,3}$")
_DISK = re.compile(r"^/dev/[A-Za-z0-9/_.-]{1,120}$")
_KEY = re.compile(r"^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|"
                  r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) "
                  r"[A-Za-z0-9+/]+={0,3}(?: [^\n\r'\"\\`$]{0,200})?$")
_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~%/+-]*)?$")


@dataclass(frozen=True)
class InstallSpec:
    family: str
    version: str
    hostname: str
    boot_mac: str
    domain: str = ""
    disk: str = ""  # empty: the installer's first disk
    partitioning: str = "lvm"
    filesystem: str = "ext4"
    user: str = "admin"
    password_hash: str = ""  # empty: password locked, SSH keys only
    ssh_keys: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    locale: str = "en_US.UTF-8"
    keyboard: str = "us"
    timezone: str = "Etc/UTC"
    mirror: str = ""  # the distribution's repository; empty: the installer's default
    network: NetworkSettings = field(default_factory=NetworkSettings)
    netplan: dict[str, Any] = field(default_factory=dict)  # network-config v2 of ``network``
    macs: tuple[str, ...] = ()
    # Where the installer reports (``<callback>/stage/<name>``, ``.../done``, ``.../failed``,
    # ``.../events`` for subiquity's webhook); empty in a preview without an install.
    callback: str = ""
    # The machine's answer directory (``<answers>/first-boot.sh``: Proxmox's first-boot hook).
    answers: str = ""

    def facts(self) -> dict[str, Any]:
        """What the answer-file templates see."""
        primary = self.network.primary
        static = [a for a in primary.addresses if ipaddress.ip_interface(a).version == 4]
        first = ipaddress.ip_interface(static[0]) if static else None
        return {
            "family": self.family, "version": self.version, "hostname": self.hostname,
            "domain": self.domain, "fqdn": f"{self.hostname}.{self.domain}" if self.domain
            else self.hostname, "boot_mac": self.boot_mac, "disk": self.disk,
            "partitioning": self.partitioning, "filesystem": self.filesystem,
            "user": self.user, "password_hash": self.password_hash,
            "ssh_keys": list(self.ssh_keys), "packages": list(self.packages),
            "locale": self.locale, "keyboard": self.keyboard, "timezone": self.timezone,
            "mirror": self.mirror, "netplan": self.netplan, "macs": list(self.macs),
            "callback": self.callback,
            "ipv4": None if first is None else {
                "address": str(first.ip), "netmask": str(first.netmask),
                "prefix": first.network.prefixlen, "gateway": primary.gateway4},
            "nameservers": list(self.network.nameservers),
            "search": list(self.network.search),
            "bonds": [{"name": b.name, "interfaces": list(b.interfaces), "mode": b.mode}
                      for b in self.network.bonds],
            "vlans": [{"id": v.id, "link": v.link, "name": v.name} for v in self.network.vlans],
            "kickstart_network": kickstart_network(
                self.network, self.boot_mac,
                f"{self.hostname}.{self.domain}" if self.domain else self.hostname)
            if self.family == "rhel" else [],
            "primary_bond": next((b.name for b in self.network.bonds
                                  if self.boot_mac in b.interfaces), ""),
            "first_boot_unit": first_boot_unit(self.callback) if self.callback else [],
            # The same lines as shell words (for printf '%s\n' in a one-line command).
            "first_boot_unit_shell": " ".join(shlex.quote(line) for line in
                                              first_boot_unit(self.callback))
            if self.callback else "",
            "mirror_url": _mirror_parts(self.mirror or DEFAULT_MIRRORS.get(self.family, "")),
            "proxmox": proxmox_facts(self) if self.family == "proxmox" else {},
        }


# Proxmox's keyboard names for the layouts that differ from the Debian ones.
_PROXMOX_KEYBOARDS = {"us": "en-us", "gb": "en-gb", "uk": "en-gb", "br": "pt-br",
                      "ch": "de-ch", "be": "fr-be"}


def proxmox_facts(spec: InstallSpec) -> dict[str, Any]:
    """What answer.toml needs beyond the common facts. Proxmox VE 8 names its keys in
    snake_case (root_password_hashed); 9 in kebab-case (root-password-hashed)."""
    def key(name: str) -> str:
        return name if spec.version == "8" else name.replace("_", "-")

    first = next((ipaddress.ip_interface(a) for a in spec.network.primary.addresses
                  if ipaddress.ip_interface(a).version == 4), None)
    domain = spec.domain or "localdomain"  # the installer wants a fully qualified name
    country = spec.locale.split(".")[0].partition("_")[2].lower() or "us"
    return {
        "names": {n: key(n) for n in ("root_password_hashed", "root_ssh_keys", "disk_list")},
        "keyboard": _PROXMOX_KEYBOARDS.get(spec.keyboard, spec.keyboard),
        "country": country, "fqdn": f"{spec.hostname}.{domain}",
        "mailto": f"root@{spec.hostname}.{domain}",
        "timezone": "UTC" if spec.timezone in ("Etc/UTC", "UTC") else spec.timezone,
        "disk": spec.disk.removeprefix("/dev/"),
        "cidr": str(first) if first is not None else "",
        "gateway": spec.network.primary.gateway4 or "",
        "dns": spec.network.nameservers[0] if spec.network.nameservers else "",
        # Matches the boot NIC by its MAC (udev's enx<mac> name).
        "mac_filter": "*" + spec.boot_mac.replace(":", "").lower(),
        "first_boot_url": f"{spec.answers}/first-boot.sh" if spec.answers else "",
    }


# The layouts Proxmox's answer file takes (its KeyboardLayout).
PROXMOX_KEYBOARDS = ("de", "de-ch", "dk", "en-gb", "en-us", "es", "fi", "fr", "fr-be",
                     "fr-ca", "fr-ch", "hu", "is", "it", "jp", "lt", "mk", "nl", "no", "pl",
                     "pt", "pt-br", "se", "si", "tr")


def proxmox_problems(spec: InstallSpec, preview: bool) -> None:
    """What Proxmox's automated installer cannot take, refused at the start of an install."""
    keyboard = _PROXMOX_KEYBOARDS.get(spec.keyboard, spec.keyboard)
    if keyboard not in PROXMOX_KEYBOARDS:
        raise InvalidInput(f"keyboard: Proxmox VE's installer knows {', '.join(PROXMOX_KEYBOARDS)}"
                           f", not {spec.keyboard!r}")
    if spec.packages:
        raise InvalidInput("packages: Proxmox VE's installer installs no extra packages; "
                           "add them after the first boot")
    if spec.network.bonds or spec.network.vlans:
        raise InvalidInput("network: Proxmox VE's installer configures one NIC (vmbr0 over "
                           "it); add bonds and VLANs after the first boot")
    if not re.fullmatch(r"/dev/[a-z0-9]{2,32}", spec.disk):
        raise InvalidInput("disk: Proxmox VE's installer needs the target disk by its kernel "
                           "name, such as /dev/sda or /dev/nvme0n1")
    first = next((a for a in spec.network.primary.addresses
                  if ipaddress.ip_interface(a).version == 4), None)
    if first is not None and not (spec.network.primary.gateway4 and spec.network.nameservers):
        raise InvalidInput("network: a static address for Proxmox VE needs a gateway4 and a "
                           "nameserver")
    if not spec.password_hash and not preview:
        raise InvalidInput("password_hash: Proxmox VE's installer requires a root password; "
                           "give its crypt(3) hash (mkpasswd -m sha-512)")


FIRST_BOOT_UNIT = "dragonfly-first-boot.service"


def first_boot_unit(callback: str) -> list[str]:
    """A one-shot systemd unit for the installed OS: its first boot calls ``booted`` (that
    marks the machine Installed), then it disables itself."""
    url = f"{callback}/booted"
    return ["[Unit]", "Description=Dragonfly: report the first boot",
            "Wants=network-online.target", "After=network-online.target", "[Service]",
            "Type=oneshot",
            f"ExecStart=/bin/sh -c 'wget -q -O /dev/null {url} || curl -fsS -o /dev/null {url}'",
            f"ExecStartPost=/bin/systemctl disable {FIRST_BOOT_UNIT}", "[Install]",
            "WantedBy=multi-user.target"]


# The distribution's own repository when neither the template nor the site names one.
DEFAULT_MIRRORS = {"debian": "http://deb.debian.org/debian"}


def _mirror_parts(url: str) -> dict[str, str]:
    """A mirror URL as preseed wants it: protocol, host[:port], directory."""
    parts = urlsplit(url) if url else None
    if parts is None or not parts.hostname:
        return {"scheme": "http", "host": "", "directory": ""}
    return {"scheme": parts.scheme, "host": parts.netloc, "directory": parts.path or "/"}


def _text(options: dict[str, Any], key: str, default: str, pattern: re.Pattern[str] | None,
          what: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be text")
    value = value.strip()
    if value and pattern is not None and not pattern.match(value):
        raise InvalidInput(f"{key}: {value!r} is not {what}")
    return value


def _strings(options: dict[str, Any], key: str, pattern: re.Pattern[str], what: str,
             limit: int = 64) -> tuple[str, ...]:
    value = options.get(key, [])
    if not isinstance(value, list) or len(value) > limit or \
            not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{key} must be a list of at most {limit} strings")
    out: list[str] = []
    for item in (v.strip() for v in value):
        if not pattern.match(item):
            raise InvalidInput(f"{key}: {item[:60]!r} is not {what}")
        if item not in out:
            out.append(item)
    return tuple(out)


def build_spec(machine: Machine, family: str, version: str, options: dict[str, Any], *,
               callback: str = "", default_mirror: str = "", preview: bool = False,
               answers: str = "") -> InstallSpec:
    """The install of ``machine`` as ``options`` describe it (keys: ``OPTION_KEYS``), or
    InvalidInput naming the first thing wrong. A ``preview`` may lack a way to log in."""
    if family not in FAMILIES:
        raise InvalidInput(f"Simple mode installs {', '.join(FAMILIES)}, not {family!r}")
    if "password" in options:
        raise InvalidInput("a plaintext password is never accepted: give password_hash "
                           "(mkpasswd -m sha-512) or SSH keys")
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InvalidInput(f"unknown install option{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}", {"known": list(OPTION_KEYS)})
    hostname = _text(options, "hostname", machine.name, _LABEL, "a hostname (one DNS label)")
    password_hash = _text(options, "password_hash", "", _HASH,
                          "a crypt(3) hash such as $6$... (mkpasswd -m sha-512)")
    keys = _strings(options, "ssh_keys", _KEY, "an SSH public key")
    settings = parse_network(options.get("network"))
    if family == "debian" and settings.bonds:
        raise InvalidInput("network.bonds: Debian's installer (netcfg) cannot configure a "
                           "bond; install with one NIC and add the bond afterwards, or use "
                           "an image template")
    if family == "debian" and len(settings.vlans) > 1:
        raise InvalidInput("network.vlans: Debian's installer configures one VLAN, on the "
                           "boot NIC")
    if family == "debian" and settings.vlans and settings.vlans[0].link != machine.mac:
        raise InvalidInput("network.vlans: Debian's installer puts its VLAN on the boot NIC "
                           f"({machine.mac})")
    spec = InstallSpec(
        family=family, version=version, hostname=hostname, boot_mac=machine.mac,
        domain=_text(options, "domain", "", _DOMAIN, "a domain name"),
        disk=_text(options, "disk", "", _DISK, "a device path such as /dev/sda"),
        partitioning=_choice(options, "partitioning", "lvm", PARTITIONING),
        filesystem=_choice(options, "filesystem", "xfs" if family == "rhel" else "ext4",
                           FILESYSTEMS),
        user=_text(options, "user", "admin", _USER, "a user name") or "admin",
        password_hash=password_hash, ssh_keys=keys,
        packages=_strings(options, "packages", _PACKAGE, "a package name", 200),
        locale=_text(options, "locale", "en_US.UTF-8", _LOCALE, "a locale (en_US.UTF-8)")
        or "en_US.UTF-8",
        keyboard=_text(options, "keyboard", "us", _KEYMAP, "a keyboard layout (us, de)")
        or "us",
        timezone=_text(options, "timezone", "Etc/UTC", _TIMEZONE, "a time zone (Europe/Paris)")
        or "Etc/UTC",
        mirror=_text(options, "mirror", default_mirror, _URL, "an http(s) URL"),
        network=settings, netplan=network_config(machine, settings),
        macs=tuple(dict.fromkeys([machine.mac, *machine.macs])), callback=callback,
        answers=answers)
    if family == "proxmox":
        proxmox_problems(spec, preview)
    if not spec.password_hash and not spec.ssh_keys and not preview:
        raise InvalidInput("give ssh_keys or a password_hash: without either nobody could "
                           "log in to the installed machine")
    return spec


def _choice(options: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = options.get(key, default)
    if value not in choices:
        raise InvalidInput(f"{key} must be one of {', '.join(choices)}")
    return str(value)
