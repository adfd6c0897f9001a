"""The boot doctor: a per-MAC timeline of every boot step seen, and why a chain stopped.

DHCP, TFTP, the HTTP boot endpoints and the agent check-in all report here. Steps are kept in
memory (bounded) and flushed to the store as one ``boot`` document per MAC at most once a
second, so a DHCP flood never turns into a write storm, yet the panel sees timelines live over
SSE and they survive a restart. During a flood of steps (thousands a second) that write
waits until the flood eases, up to ``MAX_DEFER_SECONDS``: recording stays a few dictionary
operations on the answer path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dragonfly.store import Put, Store

log = logging.getLogger(__name__)

BOOT = "boot"
MAX_MACS = 10_000
MAX_STEPS = 60
COALESCE_SECONDS = 10.0
# A DHCP flood (a rack powering on) records thousands of steps a second. Writing them then
# would compete with the answers for the one event loop (and the GIL: the store encodes and
# writes in a thread), so while steps arrive faster than this the periodic write waits, for at
# most MAX_DEFER_SECONDS. Timelines stay complete and live in memory (the API reads them
# there); only their copy in the store lags.
BUSY_STEPS_PER_SECOND = 2000
MAX_DEFER_SECONDS = 10.0
FLUSH_CHUNK = 25  # timelines per store commit: neither the loop nor the GIL is held long
DISCOVER_UNANSWERED = 10.0  # seconds of discovers without our offer before saying so

# The chain, in order. A machine is expected to go through these; where it stops, diagnose()
# explains in plain language. Each entry: step, how long the next step may take, the reason.
STEP_LABELS: dict[str, str] = {
    "dhcp_discover": "DHCP discover",
    "dhcp_offer": "Offer sent",
    "dhcp_ignored": "Not answered",
    "dhcp_request": "DHCP request",
    "dhcp_ack": "DHCP ack",
    "tftp": "TFTP transfer",
    "tftp_error": "TFTP failed",
    "http_loader": "Loader over HTTP",
    "ipxe_script": "iPXE script fetched",
    "kernel": "Kernel fetched",
    "initrd": "Initrd fetched",
    "checkin": "Agent check-in",
    "heartbeat": "Heartbeat",
    "boot_refused": "Refused (boot networks)",
}


@dataclass(frozen=True)
class Expectation:
    after: str
    within: float
    reason: str


EXPECTATIONS: tuple[Expectation, ...] = (
    Expectation("dhcp_offer", 20, "took the offer but never fetched the loader {file}: check "
                "that TFTP (UDP 69) reaches this server from the machine's network and that "
                "no firewall drops it"),
    Expectation("tftp", 60, "loaded {file} but iPXE never asked for its script: the loader may "
                "not drive this NIC (try snponly.efi for UEFI) or HTTP to this server is "
                "blocked"),
    Expectation("ipxe_script", 60, "fetched its iPXE script but never the discovery kernel: "
                "check the console for an iPXE error"),
    Expectation("kernel", 120, "fetched the kernel but not the initrd: the transfer may have "
                "stalled; check the console"),
    Expectation("initrd", 240, "booted the discovery environment but the agent never checked "
                "in: the kernel may lack a driver for this NIC, or DHCP inside the initramfs "
                "failed; check the console"),
)
_EXPECT_BY_STEP = {e.after: e for e in EXPECTATIONS}


def diagnose(steps: list[dict[str, Any]], now: float) -> str | None:
    """Plain-language reason where the chain stopped, or None while it is healthy/complete."""
    if not steps:
        return None
    last = steps[-1]
    step = last["step"]
    if step in ("checkin", "heartbeat"):
        return None
    if step == "dhcp_ignored":
        return f"its DHCP request was not answered: {last['detail'].get('reason', 'unknown')}"
    if step == "boot_refused":
        return (f"its request for {last['detail'].get('path', 'a boot file')} came from "
                f"{last['detail'].get('ip', '?')}, outside boot.allowed_networks: add its "
                "network there (Security page or `dragonfly security set`)")
    if step == "tftp_error":
        return (f"the loader transfer failed: {last['detail'].get('error', 'unknown error')} "
                f"({last['detail'].get('file', '?')})")
    if step == "dhcp_discover" and now - last["at"] > DISCOVER_UNANSWERED:
        return "sent DHCP discovers but got no offer from Dragonfly"
    expectation = _EXPECT_BY_STEP.get(step)
    if expectation is not None and now - last["last_at"] > expectation.within:
        file = last["detail"].get("file") or last["detail"].get("loader") or "the loader"
        return expectation.reason.format(file=file)
    return None


class BootLog:
    name = "boot log"

    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 flush_interval: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.flush_interval = flush_interval
        self._timelines: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._ip_to_mac: OrderedDict[str, str] = OrderedDict()
        self._dirty: set[str] = set()
        # When a chain would count as stalled: the timeline is written again then, so the
        # diagnosis reaches the panel as an event even though no packet arrived.
        self._deadlines: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._recorded = 0  # steps since the flush loop last looked (flood detection)
        self._deferred_since: float | None = None
        # Set by the boot edge: whether its DHCP server is in a flood (or still handing a
        # flood's steps over), which hands its steps over late (``record(at=...)``), in
        # bursts that say nothing about the rate they came at.
        self.busy_hint: Callable[[], bool] | None = None
        self._poked = asyncio.Event()

    # --- Service ------------------------------------------------------------------------------

    async def start(self) -> None:
        for doc in await self.store.list(BOOT):
            self._timelines[doc.key] = list(doc.data.get("steps", []))
        self._task = asyncio.create_task(self._flush_loop(), name="bootlog-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def poke(self) -> None:
        """Look now whether to write (the DHCP server's flood is over): the write then
        starts before the next flood can, rather than up to a flush interval later."""
        self._poked.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._poked.wait()
            self._poked.clear()
            if self._busy():
                continue
            try:
                await self.flush()
            except Exception:
                log.exception("flushing boot timelines failed; will retry")

    def _busy(self) -> bool:
        """Whether to put the periodic write off: steps arrive as in a flood, and it has not
        been put off for MAX_DEFER_SECONDS already."""
        recorded, self._recorded = self._recorded, 0
        flood = (recorded > BUSY_STEPS_PER_SECOND * self.flush_interval
                 or (self.busy_hint is not None and self.busy_hint()))
        if not flood or not self._dirty:
            self._deferred_since = None
            return False
        now = time.monotonic()
        if self._deferred_since is None:
            self._deferred_since = now
        if now - self._deferred_since < MAX_DEFER_SECONDS:
            return True
        self._deferred_since = None
        return False

    async def flush(self) -> None:
        now = self.clock()
        if self._deadlines:
            expired = [mac for mac, deadline in self._deadlines.items() if deadline <= now]
            for mac in expired:
                del self._deadlines[mac]
            self._dirty.update(expired)
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        macs = [mac for mac in dirty if mac in self._timelines]
        for start in range(0, len(macs), FLUSH_CHUNK):
            chunk = macs[start:start + FLUSH_CHUNK]
            try:
                await self.store.commit([Put(BOOT, mac, self.timeline(mac)) for mac in chunk])
            except BaseException:
                self._dirty.update(macs[start:])  # written by the next flush
                raise

    # --- recording ----------------------------------------------------------------------------

    def learn_ip(self, ip: str, mac: str) -> None:
        """Remember which MAC uses an address (TFTP and HTTP only see addresses)."""
        self._ip_to_mac[ip] = mac
        self._ip_to_mac.move_to_end(ip)
        while len(self._ip_to_mac) > MAX_MACS:
            self._ip_to_mac.popitem(last=False)

    def mac_for_ip(self, ip: str) -> str | None:
        return self._ip_to_mac.get(ip)

    def record(self, mac: str, step: str, detail: dict[str, Any] | None = None,
               at: float | None = None) -> None:
        """``at``: when the step happened, on ``clock`` (default: now); DHCP hands a flood's
        steps over after its answers."""
        # Once per DISCOVER and per OFFER: keep it to a few dictionary operations; the store
        # write is the flush loop's.
        mac = mac.lower()
        if at is None:
            now = self.clock()
            self._recorded += 1
        else:  # handed over late: ``busy_hint`` says whether that is a flood
            now = at
        if detail is None:
            detail = {}
        timelines = self._timelines
        steps = timelines.get(mac)
        if steps is None:
            steps = timelines[mac] = []
            while len(timelines) > MAX_MACS:
                evicted, _ = timelines.popitem(last=False)
                self._dirty.discard(evicted)
                self._deadlines.pop(evicted, None)
        else:
            timelines.move_to_end(mac)
        last = steps[-1] if steps else None
        # Firmware retransmits: fold repeats of the same step into one line with a count.
        if (last is not None and last["step"] == step and last["detail"] == detail
                and now - last["last_at"] < COALESCE_SECONDS):
            last["count"] += 1
            last["last_at"] = now
        else:
            steps.append({"at": now, "last_at": now, "step": step, "count": 1,
                          "label": STEP_LABELS.get(step, step), "detail": detail})
            if len(steps) > MAX_STEPS:
                del steps[:-MAX_STEPS]
        self._dirty.add(mac)
        expectation = _EXPECT_BY_STEP.get(step)
        if expectation is not None:
            self._deadlines[mac] = now + expectation.within + 0.5
        elif step == "dhcp_discover":
            self._deadlines[mac] = now + DISCOVER_UNANSWERED + 0.5
        else:
            self._deadlines.pop(mac, None)
        ip = detail.get("ip")
        if isinstance(ip, str) and ip:
            self.learn_ip(ip, mac)

    def record_by_ip(self, ip: str, step: str, detail: dict[str, Any]) -> bool:
        mac = self.mac_for_ip(ip)
        if mac is None:
            return False
        self.record(mac, step, detail)
        return True

    # --- reading ------------------------------------------------------------------------------

    def timeline(self, mac: str) -> dict[str, Any]:
        steps = self._timelines.get(mac.lower(), [])
        return {"mac": mac.lower(), "steps": steps, "diagnosis": diagnose(steps, self.clock())}

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        macs = list(reversed(self._timelines))[:limit]
        return [{**self.timeline(mac), "steps": self._timelines[mac][-1:]} for mac in macs]
