"""Full-mode address pool: offers, bindings, reservations, declines (RFC 2131 §4.3).

Pure and synchronous (the DHCP responder calls it from ``datagram_received``). Bound leases
are reported through ``on_change`` so the service can persist them in the store as kind
``lease`` keyed by MAC; offers live in memory only, for ``OFFER_HOLD`` seconds.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

OFFER_HOLD = 60.0
LEASE_KIND = "lease"


@dataclass(frozen=True)
class FullModeSettings:
    """Settings of full mode (Dragonfly is the network's only DHCP server)."""

    range_start: str
    range_end: str
    netmask: str = "255.255.255.0"
    router: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600
    reservations: Mapping[str, str] = field(default_factory=dict)  # mac -> ip
    force: bool = False  # start even when another DHCP server answers on the segment

    def __post_init__(self) -> None:
        start = ipaddress.IPv4Address(self.range_start)
        end = ipaddress.IPv4Address(self.range_end)
        if end < start:
            raise ValueError(f"DHCP range {self.range_start}-{self.range_end} is backwards")
        ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}")
        for address in (self.router, *self.dns):
            if address:
                ipaddress.IPv4Address(address)
        for mac, ip in self.reservations.items():
            ipaddress.IPv4Address(ip)
            if len(bytes.fromhex(mac.replace(":", "").replace("-", ""))) != 6:
                raise ValueError(f"reservation {mac!r} is not a MAC address")
        if self.lease_time < 60:
            raise ValueError("lease time must be at least 60 seconds")

    @classmethod
    def parse(cls, range_text: str, reservations: Iterable[str] = (), **kw: Any
              ) -> FullModeSettings:
        """From config strings: ``"10.0.0.100-10.0.0.200"`` and ``["aa:bb:..=10.0.0.5"]``."""
        start, sep, end = range_text.partition("-")
        if not sep:
            raise ValueError(f"DHCP range {range_text!r} is not START-END")
        table: dict[str, str] = {}
        for item in reservations:
            mac, sep, ip = item.partition("=")
            if not sep:
                raise ValueError(f"reservation {item!r} is not MAC=IP")
            table[normalise_mac(mac)] = ip.strip()
        return cls(start.strip(), end.strip(), reservations=table, **kw)


def normalise_mac(mac: str) -> str:
    raw = bytes.fromhex(mac.strip().replace(":", "").replace("-", ""))
    return raw.hex(":")


@dataclass
class Lease:
    mac: str
    ip: str
    expires: float  # wall-clock seconds
    state: str = "bound"  # or "offered"
    hostname: str = ""

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, data: Mapping[str, Any]) -> Lease:
        return cls(str(data["mac"]), str(data["ip"]), float(data["expires"]),
                   str(data.get("state", "bound")), str(data.get("hostname", "")))


class LeasePool:
    def __init__(self, settings: FullModeSettings, server_ip: str, *,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[str, Lease | None], None] | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._start = int(ipaddress.IPv4Address(settings.range_start))
        self._end = int(ipaddress.IPv4Address(settings.range_end))
        self._network = ipaddress.IPv4Network(f"{server_ip}/{settings.netmask}", strict=False)
        self._excluded = {server_ip, str(self._network.network_address),
                          str(self._network.broadcast_address)}
        self._by_mac: dict[str, Lease] = {}
        self._by_ip: dict[str, Lease] = {}
        self._reserved_ips = {ip: mac for mac, ip in settings.reservations.items()}
        self._declined: dict[str, float] = {}  # ip -> until
        self._hint = self._start

    # --- state ------------------------------------------------------------------------------

    def load(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            self._put(lease, notify=False)

    def leases(self) -> list[Lease]:
        return sorted(self._by_mac.values(), key=lambda lease: ipaddress.IPv4Address(lease.ip))

    def lease_for(self, mac: str) -> Lease | None:
        return self._by_mac.get(mac)

    def mac_for_ip(self, ip: str) -> str | None:
        lease = self._by_ip.get(ip)
        return lease.mac if lease is not None else None

    def _put(self, lease: Lease, notify: bool = True) -> None:
        old = self._by_mac.pop(lease.mac, None)
        if old is not None and self._by_ip.get(old.ip) is old:
            del self._by_ip[old.ip]
        other = self._by_ip.get(lease.ip)
        if other is not None and other.mac != lease.mac:
            self._drop(other.mac)
        self._by_mac[lease.mac] = lease
        self._by_ip[lease.ip] = lease
        if notify and lease.state == "bound" and self._on_change is not None:
            self._on_change(lease.mac, lease)

    def _drop(self, mac: str) -> None:
        lease = self._by_mac.pop(mac, None)
        if lease is None:
            return
        if self._by_ip.get(lease.ip) is lease:
            del self._by_ip[lease.ip]
        if lease.state == "bound" and self._on_change is not None:
            self._on_change(mac, None)

    # --- allocation -------------------------------------------------------------------------

    def in_subnet(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self._network
        except ValueError:
            return False

    def _usable_for(self, ip: str, mac: str, now: float) -> bool:
        if ip in self._excluded or not self.in_subnet(ip):
            return False
        owner = self._reserved_ips.get(ip)
        if owner is not None:
            return owner == mac
        if not self._start <= int(ipaddress.IPv4Address(ip)) <= self._end:
            return False
        if self._declined.get(ip, 0.0) > now:
            return False
        holder = self._by_ip.get(ip)
        return holder is None or holder.mac == mac or holder.expires <= now

    def _choose(self, mac: str, requested: str | None, now: float) -> str | None:
        reserved = self.settings.reservations.get(mac)
        if reserved is not None:
            return reserved
        current = self._by_mac.get(mac)
        if current is not None and self._usable_for(current.ip, mac, now):
            return current.ip
        if requested and self._usable_for(requested, mac, now):
            return requested
        size = self._end - self._start + 1
        for step in range(size):
            value = self._start + (self._hint - self._start + step) % size
            ip = str(ipaddress.IPv4Address(value))
            if self._usable_for(ip, mac, now):
                self._hint = value + 1 if value < self._end else self._start
                return ip
        return None

    def offer(self, mac: str, requested: str | None = None) -> str | None:
        now = self._clock()
        ip = self._choose(mac, requested, now)
        if ip is None:
            return None
        current = self._by_mac.get(mac)
        if current is not None and current.ip == ip and current.state == "bound" \
                and current.expires > now:
            return ip  # keep the binding; the REQUEST renews it
        self._put(Lease(mac, ip, now + OFFER_HOLD, "offered"), notify=False)
        return ip

    def request(self, mac: str, requested: str | None, ciaddr: str, hostname: str = ""
                ) -> tuple[bool, str]:
        """(True, ip) to ACK or (False, reason) to NAK. SELECTING and INIT-REBOOT carry the
        address in option 50; RENEWING/REBINDING in ciaddr."""
        now = self._clock()
        wanted = requested or (ciaddr if ciaddr != "0.0.0.0" else None)
        if wanted is None:
            return False, "no address requested"
        if not self.in_subnet(wanted):
            return False, f"{wanted} is not on this network"
        if not self._usable_for(wanted, mac, now):
            return False, f"{wanted} is not available to {mac}"
        reserved = self.settings.reservations.get(mac)
        if reserved is not None and reserved != wanted:
            return False, f"{mac} is reserved {reserved}"
        lease = Lease(mac, wanted, now + self.settings.lease_time, "bound", hostname)
        self._put(lease)
        return True, wanted

    def decline(self, mac: str, ip: str | None) -> None:
        """The client found ``ip`` in use (ARP): keep it out of the pool for a lease time."""
        if ip:
            self._declined[ip] = self._clock() + self.settings.lease_time
        lease = self._by_mac.get(mac)
        if lease is not None and (ip is None or lease.ip == ip):
            self._drop(mac)

    def release(self, mac: str, ip: str) -> None:
        lease = self._by_mac.get(mac)
        if lease is not None and lease.ip == ip:
            self._drop(mac)

    def forget_offer(self, mac: str) -> None:
        """The client chose another server."""
        lease = self._by_mac.get(mac)
        if lease is not None and lease.state == "offered":
            self._drop(mac)
