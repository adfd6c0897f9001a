"""The driver registry: a BMC record's ``driver`` names a factory here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dragonfly.power.drivers.base import (
    ACTIONS,
    OPERATIONS,
    READS,
    DriverEnv,
    PowerDriver,
    PowerError,
    Unsupported,
)
from dragonfly.power.drivers.fake import FakeDriver
from dragonfly.power.drivers.ipmi import IpmiDriver
from dragonfly.power.drivers.openjbod import OpenJbodDriver
from dragonfly.power.drivers.redfish import RedfishDriver
from dragonfly.power.drivers.wol import WolDriver
from dragonfly.power.records import BmcRecord

__all__ = ["ACTIONS", "OPERATIONS", "READS", "DriverEnv", "DriverSpec", "PowerDriver",
           "PowerError", "Unsupported", "Registry", "default_registry"]

Factory = Callable[[BmcRecord, DriverEnv, "str | None"], PowerDriver]


@dataclass(frozen=True)
class DriverSpec:
    name: str
    supports: frozenset[str]
    factory: Factory
    summary: str


class Registry:
    def __init__(self) -> None:
        self.specs: dict[str, DriverSpec] = {}
        # A record's driver -> the driver that drives it instead (Tinkerbell mode with
        # tinkerbell.power = rufio sends IPMI and Redfish records to "rufio").
        self.route: dict[str, str] = {}

    def register(self, name: str, supports: frozenset[str], factory: Factory,
                 summary: str) -> None:
        self.specs[name] = DriverSpec(name, supports, factory, summary)

    @property
    def names(self) -> frozenset[str]:
        """What a record may name: a driver others are routed to is not one to choose."""
        return frozenset(self.specs) - frozenset(self.route.values())

    def spec_for(self, record: BmcRecord) -> DriverSpec | None:
        return self.specs.get(self.route.get(record.driver, record.driver))

    def make(self, record: BmcRecord, env: DriverEnv, boot_interface: str | None = None
             ) -> PowerDriver:
        spec = self.spec_for(record)
        if spec is None:
            raise PowerError(f"no power driver named {record.driver!r}", "config")
        return spec.factory(record, env, boot_interface)


def default_registry(fake_delay: float = 0.0) -> Registry:
    registry = Registry()
    registry.register(
        "ipmi", IpmiDriver.supports,
        lambda r, env, _i: IpmiDriver(r.address, r.port, r.user, r.password, env),
        "IPMI over LAN (RMCP+), with pyghmi")
    registry.register(
        "redfish", RedfishDriver.supports,
        lambda r, env, _i: RedfishDriver(r.address, r.user, r.password, env, port=r.port,
                                         system=r.system, ca_pem=r.ca_pem,
                                         insecure=r.insecure),
        "Redfish over HTTPS")
    registry.register(
        "wol", WolDriver.supports,
        lambda r, _env, i: WolDriver(r.mac, broadcast=r.broadcast, interface=i, port=r.port,
                                     password=r.password),
        "Wake-on-LAN (power on only)")
    registry.register(
        "openjbod", OpenJbodDriver.supports,
        lambda r, env, _i: OpenJbodDriver(r.address, r.user, r.password, env, port=r.port,
                                          ca_pem=r.ca_pem, insecure=r.insecure),
        "OpenJBOD enclosure controller")
    registry.register(
        "fake", FakeDriver.supports,
        lambda r, _env, _i: FakeDriver(r.address or f"fake-{r.machine}", delay=fake_delay,
                                       password=r.password),
        "Simulated BMC (demo and tests)")
    return registry
