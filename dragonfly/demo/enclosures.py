"""The demo's OpenJBOD enclosures: two JBOD shelves holding the disks of a few storage
machines, on simulated controllers (nothing on the network is contacted).

Enclosures always use the ``openjbod`` driver. In the demo that driver answers for the
shelves' own addresses (``demo-jbod-...``, and ``unreachable-jbod-...``, which times out like
the demo's unreachable BMC) from memory, through the fake driver's BMCs; any other address,
such as a real controller an operator registers in the demo, gets the real driver.
"""

from __future__ import annotations

from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import State
from dragonfly.power.drivers import DriverEnv, PowerDriver, Registry
from dragonfly.power.drivers.base import PowerError
from dragonfly.power.drivers.fake import BMCS, FakeBmc, FakeDriver
from dragonfly.power.drivers.openjbod import OpenJbodDriver
from dragonfly.power.records import BmcRecord
from dragonfly.power.service import PowerService

DEMO_JBOD = "demo-jbod-"
UNREACHABLE_JBOD = "unreachable-jbod-"  # the fake driver times out on "unreachable..."
DELAY = 2.0  # seconds until a switched shelf says so, like the demo's BMCs
# (name, controller address, how many machines): the first holds the disks of healthy storage
# machines; the second's controller does not answer, so a failing enclosure shows too.
SHELVES = (("shelf-a", f"{DEMO_JBOD}a", 3), ("shelf-b", f"{UNREACHABLE_JBOD}b", 2))
STORAGE_ROLES = ("ceph-osd",)


class DemoEnclosureDriver(FakeDriver):
    """A simulated OpenJBOD controller: only what the real one can do, in its words."""

    name = "openjbod"
    supports = OpenJbodDriver.supports
    cycle_pause = 1.0

    async def _answer(self, call: str) -> FakeBmc:
        try:
            return await super()._answer(call)
        except PowerError as exc:
            message = exc.message.replace("the BMC", "the OpenJBOD controller")
            raise PowerError(message, exc.reason) from None


def use_demo_enclosures(registry: Registry) -> None:
    """Make the registry's openjbod driver answer the demo shelves' addresses from memory."""
    spec = registry.specs.get("openjbod")
    if spec is None:
        return
    original = spec.factory

    def factory(record: BmcRecord, env: DriverEnv, interface: str | None) -> PowerDriver:
        if record.address.startswith((DEMO_JBOD, UNREACHABLE_JBOD)):
            return DemoEnclosureDriver(record.address, delay=DELAY, password=record.password)
        return original(record, env, interface)

    registry.register("openjbod", spec.supports, factory, spec.summary)


async def add_demo_enclosures(fleet: Fleet, power: PowerService) -> None:
    """Register the shelves, attached to installed machines (storage ones first)."""
    use_demo_enclosures(power.registry)
    installed = [m for m in fleet.list_machines(state=State.INSTALLED.value,
                                                limit=100_000).items]
    installed.sort(key=lambda m: (m.role not in STORAGE_ROLES, m.name))
    taken = 0
    for name, address, count in SHELVES:
        machines = [m.id for m in installed[taken:taken + count]]
        taken += count
        if not machines:
            continue
        BMCS[address] = FakeBmc(state="on")
        await power.enclosures.put(name, {"address": address, "user": "admin",
                                          "password": "demo-jbod", "machines": machines},
                                   create=True)
