"""The DHCP service: sockets on UDP 67 and 4011, served by the event loop, around a
``Responder``.

``DhcpService`` is what the app starts (``Service`` protocol: ``name``, ``start``, ``stop``).
With ``DhcpPorts(host="127.0.0.1", server=0, pxe=0, ...)`` it is also the test controller:
``start()`` binds ephemeral ports and ``bound_ports`` tells which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dragonfly.auth.allowlist import Network
from dragonfly.boot.memory import BootMemory
from dragonfly.boot.registry import BootEndpoints, BootRegistry
from dragonfly.edge.dhcp.leases import LEASE_KIND, FullModeSettings, Lease, LeasePool
from dragonfly.edge.dhcp.netif import dhcp_socket
from dragonfly.edge.dhcp.probe import ProbeOffer, probe_dhcp_servers
from dragonfly.edge.dhcp.responder import (
    MODES,
    AllowCallback,
    DhcpCounters,
    EventCallback,
    ReplyTargets,
    Responder,
)
from dragonfly.errors import Conflict, InvalidInput
from dragonfly.store import Delete, Put, Store

log = logging.getLogger(__name__)

# While DHCP packets arrive faster than this (a rack powering on), the boot doctor's steps of
# fast answers wait (``Responder.deliver_events``) and are handed over a few at a time, so the
# answers get the CPU; once the flood eases they all are, in chunks. The boot log puts its
# store write off at the same rate.
FLOOD_PACKETS_PER_SECOND = 2000
RATE_WINDOW = 0.1  # seconds over which the rate is measured
DRAIN_INTERVAL = 0.05  # seconds between hand-overs while a flood lasts
DRAIN_MACS_FLOODING = 100  # MACs' steps per hand-over while it lasts (a few % of the CPU)
DRAIN_MACS_CALM = 500  # per event-loop turn after it (~10 ms each)


class DhcpConflict(Conflict):
    """Full mode found another DHCP server on the segment."""


@dataclass(frozen=True)
class DhcpPorts:
    host: str = "0.0.0.0"  # must be the wildcard to receive broadcasts
    server: int = 67
    pxe: int | None = 4011  # None: no PXE boot-server socket
    targets: ReplyTargets = field(default_factory=ReplyTargets)
    probe_target: tuple[str, int] = ("255.255.255.255", 67)
    probe_bind: tuple[str, int] = ("0.0.0.0", 68)

    @classmethod
    def loopback(cls, client_port: int, relay_port: int = 9) -> DhcpPorts:
        """For tests: ephemeral ports on 127.0.0.1 (read ``DhcpService.bound_ports`` after
        ``start()``); "broadcast" replies go to 127.0.0.1:``client_port``, relayed ones to
        127.0.0.1:``relay_port``."""
        return cls(host="127.0.0.1", server=0, pxe=0,
                   targets=ReplyTargets(client_port=client_port, relay_port=relay_port,
                                        broadcast="127.0.0.1"),
                   probe_target=("127.0.0.1", 9), probe_bind=("127.0.0.1", 0))


class _Endpoint:
    """One DHCP socket on the event loop: decode-dispatch-send, nothing else.

    It reads the socket itself (``loop.add_reader``) and drains up to ``BATCH`` datagrams per
    readiness event, then tells the service (``after_batch``), which hands the batch's
    boot-doctor events over: the replies leave first. asyncio's datagram transport hands over
    one datagram per event-loop iteration, which under a DISCOVER flood (a rack powering on)
    cost half the throughput: measured ~11k against ~20k replies/s (bench/dhcp_flood.py).
    The batch is bounded so the loop stays responsive; a reply that meets a full send buffer
    is dropped and counted, as
    UDP would drop it anyway, and the client retransmits.
    """

    BATCH = 128

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 responder: Responder, pxe_port: bool,
                 after_batch: Callable[[int], None]) -> None:
        self.loop = loop
        self.sock = sock
        self.responder = responder
        self.pxe_port = pxe_port
        self.after_batch = after_batch
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        received = self.datagram_received
        count = 0
        try:
            for count in range(self.BATCH):  # noqa: B007 (how many, for the flood rate)
                try:
                    data, addr = recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # e.g. a queued ICMP error; the socket stays usable
                    log.debug("DHCP socket error: %s", exc)
                    return
                received(data, addr)
            count = self.BATCH
        finally:
            # The boot doctor's steps for this batch, after its replies have left.
            self.after_batch(count)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.responder.handle(data, addr, self.pxe_port)
        if reply is None:
            return
        try:
            self.sock.sendto(reply.data, reply.addr)
        except (BlockingIOError, InterruptedError):
            self.responder.counters.send_failed += 1
        except OSError as exc:
            self.responder.counters.send_failed += 1
            log.debug("DHCP reply to %s failed: %s", reply.addr, exc)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class DhcpService:
    name = "dhcp"

    def __init__(self, *, interface: str | None, server_ip: str, http_port: int,
                 tftp_server_ip: str | None = None, mode: str = "auto",
                 allow: AllowCallback | None = None, store: Store | None = None,
                 full: FullModeSettings | None = None, on_event: EventCallback | None = None,
                 registry: BootRegistry | None = None, http_host: str | None = None,
                 ports: DhcpPorts | None = None, pxe_discovery_control: bool = True,
                 probe_timeout: float = 5.0,
                 relay_networks: Sequence[Network] = (),
                 clock: Callable[[], float] = time.time) -> None:
        """``server_ip``: the address advertised as server id (54); ``http_host``/
        ``http_port``: where iPXE fetches its script (default: ``server_ip``);
        ``tftp_server_ip``: next-server for loaders (default: ``server_ip``)."""
        if mode not in MODES:
            raise InvalidInput(f"boot.dhcp_mode: {mode!r} is not one of {', '.join(MODES)}")
        if mode == "full" and (full is None or store is None):
            raise InvalidInput("full DHCP mode needs boot.dhcp_range and a store")
        if mode == "selective" and allow is None:
            raise InvalidInput("selective DHCP mode needs an allow(mac) callback")
        self.interface = interface
        self.mode = mode
        self.store = store
        self.full = full
        self.ports = ports or DhcpPorts()
        self.probe_timeout = probe_timeout
        self.registry = registry or BootRegistry()
        self.memory = BootMemory()
        self.pool = (LeasePool(full, server_ip, on_change=self._lease_changed)
                     if mode == "full" and full is not None else None)
        self.responder = Responder(
            registry=self.registry,
            endpoints=BootEndpoints(http_host or server_ip, http_port,
                                    tftp_server_ip or server_ip),
            server_ip=server_ip, mode=mode, allow=allow, on_event=on_event,
            memory=self.memory, pool=self.pool, targets=self.ports.targets,
            pxe_discovery_control=pxe_discovery_control, relay_networks=relay_networks,
            clock=clock)
        self.responder.defer_events = True  # delivered per socket batch, after the replies
        self._window_start = 0.0
        self._window_count = 0
        self._rate = 0.0  # packets per second over the last RATE_WINDOW
        self._last_batch = 0.0
        self._drain_wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        # Called when a flood's steps have all been handed over (the boot log's ``poke``).
        self.on_calm: Callable[[], None] | None = None
        self._endpoints: list[_Endpoint] = []
        self.bound_ports: tuple[int, int | None] = (0, None)
        self._pending: dict[str, Lease | None] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self.other_servers: list[ProbeOffer] = []

    @property
    def counters(self) -> DhcpCounters:
        return self.responder.counters

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.mode == "off":
            log.info("DHCP is off (boot.dhcp_mode = off)")
            return
        if self.mode == "full":
            await self._prepare_full()
        loop = asyncio.get_running_loop()
        sockets: list[tuple[socket.socket, bool]] = []
        try:
            wanted = [(self.ports.server, False)]
            if self.ports.pxe is not None:
                wanted.append((self.ports.pxe, True))
            for port, pxe in wanted:
                sockets.append((dhcp_socket(self.ports.host, port, self.interface), pxe))
        except OSError as exc:
            for sock, _ in sockets:
                sock.close()
            await self._stop_writer()
            hint = " (ports 67/4011 and binding to an interface need root)" \
                if isinstance(exc, PermissionError) else ""
            raise InvalidInput(
                f"cannot open the DHCP sockets on {self.interface or 'all interfaces'}: "
                f"{exc}{hint}") from None
        names = [s.getsockname()[1] for s, _ in sockets]
        for sock, pxe in sockets:
            self._endpoints.append(_Endpoint(loop, sock, self.responder, pxe, self._after_batch))
        self._drain_wake = asyncio.Event()
        self._drainer = asyncio.create_task(self._drain(), name="dhcp-boot-steps")
        self.bound_ports = (names[0], names[1] if len(names) > 1 else None)
        log.info("DHCP (%s mode) listening on %s ports %s", self.mode,
                 self.interface or self.ports.host, self.bound_ports)

    async def stop(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        self.responder.deliver_events()  # every step reaches the boot doctor
        await self._stop_writer()

    # --- the boot doctor's steps under a flood --------------------------------------------------

    def _after_batch(self, received: int) -> None:
        now = time.monotonic()
        self._window_count += received
        elapsed = now - self._window_start
        if elapsed >= RATE_WINDOW:
            self._rate = self._window_count / elapsed
            self._window_start, self._window_count = now, 0
        self._last_batch = now
        responder = self.responder
        if self._rate < FLOOD_PACKETS_PER_SECOND and responder.backlog <= DRAIN_MACS_CALM:
            responder.deliver_events()  # calm: this batch's steps, now
            return
        responder.deliver_events(max_macs=0)  # all but the fast answers' steps, now
        if responder.backlog:
            self._drain_wake.set()

    def _flooding(self) -> bool:
        return (self._rate >= FLOOD_PACKETS_PER_SECOND
                and time.monotonic() - self._last_batch < 2 * RATE_WINDOW)

    def busy(self) -> bool:
        """Whether a flood lasts, or its steps are still being handed over."""
        return bool(self.responder.backlog) or self._flooding()

    async def _drain(self) -> None:
        """Hands the waiting fast answers' steps over: a few per interval while the flood
        lasts, then the rest in chunks, each event-loop turn."""
        while True:
            await self._drain_wake.wait()
            self._drain_wake.clear()
            while self.responder.backlog:
                if self._flooding():
                    await asyncio.sleep(DRAIN_INTERVAL)
                    self.responder.deliver_events(DRAIN_MACS_FLOODING)
                else:
                    await asyncio.sleep(0)
                    self.responder.deliver_events(DRAIN_MACS_CALM)
            if self.on_calm is not None:
                self.on_calm()

    # --- full mode ----------------------------------------------------------------------------

    async def _prepare_full(self) -> None:
        assert self.full is not None and self.store is not None and self.pool is not None
        if not self.full.force:
            self.other_servers = await probe_dhcp_servers(
                self.interface, listen_for=self.probe_timeout, target=self.ports.probe_target,
                bind=self.ports.probe_bind)
            if self.other_servers:
                found = "; ".join(o.describe() for o in self.other_servers)
                raise DhcpConflict(
                    f"another DHCP server already answers on "
                    f"{self.interface or 'this network'} ({found}); refusing to start full "
                    f"DHCP mode. Use proxy mode (boot.dhcp_mode = auto) beside it, or set "
                    f"boot.dhcp_force = true if you are sure.",
                    {"servers": [o.describe() for o in self.other_servers]})
        docs = await self.store.list(LEASE_KIND)
        self.pool.load(Lease.from_doc(d.data) for d in docs)
        self._wake = asyncio.Event()
        self._stopping = False
        self._writer = asyncio.create_task(self._write_leases(), name="dhcp-lease-writer")

    def _lease_changed(self, mac: str, lease: Lease | None) -> None:
        self._pending[mac] = lease
        self._wake.set()

    async def _write_leases(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if self._stopping:
                await self._flush()  # changes made while the last commit ran
                return

    async def _flush(self) -> None:
        assert self.store is not None
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        ops: list[Put | Delete] = [
            Put(LEASE_KIND, mac, lease.to_doc()) if lease is not None
            else Delete(LEASE_KIND, mac) for mac, lease in batch.items()]
        try:
            await self.store.commit(ops)
        except Exception:
            log.exception("DHCP: persisting %d lease change(s) failed", len(ops))

    async def _stop_writer(self) -> None:
        if self._writer is None:
            return
        self._stopping = True  # the writer flushes what is pending, then ends
        self._wake.set()
        await self._writer
        self._writer = None

    # --- for TFTP / HTTP / the boot doctor ----------------------------------------------------

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC that holds (full mode) or asked the site server for (proxy) ``ip``."""
        return self.responder.mac_for_ip(ip)

    def note_loader_fetched(self, mac: str, loader: str) -> None:
        self.memory.note_fetched(mac, loader)

    @property
    def running(self) -> bool:
        return bool(self._endpoints)

    def addresses(self) -> list[str]:
        """The bound sockets as "host:port" (the server port, then the PXE port)."""
        if not self._endpoints:
            return []
        return [f"{self.ports.host}:{port}" for port in self.bound_ports if port is not None]

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "interface": self.interface, "ports": self.bound_ports,
                "addresses": self.addresses(), "counters": self.counters.as_dict(),
                "leases": len(self.pool.leases()) if self.pool is not None else None,
                "other_servers": [o.describe() for o in self.other_servers]}
