"""What to answer to one DHCP datagram: proxyDHCP (auto, selective) and full mode.

Synchronous and socket-free: ``Responder.handle`` takes the datagram's bytes and where it came
from and returns the reply bytes and destination, or None. The transports in
``dragonfly.edge.dhcp.server`` only decode-dispatch-send; everything testable lives here.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dragonfly.auth.allowlist import Network, allowed, parse_address
from dragonfly.boot.memory import BootMemory
from dragonfly.boot.registry import (
    BootDecision,
    BootEndpoints,
    BootRegistry,
    ClientFacts,
    arch_name,
)
from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    HEADER_SIZE,
    MessageType,
    Packet,
    decode,
    encode,
    encode_options,
    encode_reply_fast,
)
from dragonfly.edge.dhcp.fastpath import Key, KnownOffer, KnownOffers, offer_key
from dragonfly.edge.dhcp.leases import LeasePool

log = logging.getLogger(__name__)

MODES = ("off", "selective", "auto", "full")
ZERO = "0.0.0.0"
AllowCallback = Callable[[str], bool]
# The boot doctor's steps of a MAC's fast answers waiting for delivery: more MACs than the
# boot log keeps timelines for (``dragonfly.boot.log.MAX_MACS``) would be evicted there at
# once, so the oldest are let go here (counted) instead of being expanded for nothing.
BACKLOG_MACS = 10_000


class EventCallback(Protocol):
    """Where each boot step goes (the boot log's ``record``): ``at`` is when it happened,
    on the responder's clock."""

    def __call__(self, mac: str, step: str, detail: dict[str, Any], at: float) -> None: ...


# A fast answer's step, kept compact until delivery: (at, xid, GUID bytes or None, offer).
FastStep = tuple[float, int, bytes | None, KnownOffer]


@dataclass(frozen=True)
class ReplyTargets:
    """Where replies go. Real networks use the defaults; loopback tests point them at the
    test's own sockets since nothing on loopback listens to 255.255.255.255:68."""

    client_port: int = 68
    relay_port: int = 67
    broadcast: str = "255.255.255.255"


@dataclass
class DhcpCounters:
    received: int = 0
    answered: int = 0
    ignored: int = 0
    malformed: int = 0
    errors: int = 0  # bugs: an exception while handling a packet (logged, never raised)
    send_failed: int = 0  # replies the kernel refused (full send buffer, no route)
    fast: int = 0  # answered from a known offer's bytes (fastpath), also counted in answered
    steps_let_go: int = 0  # flood steps of MACs the boot log would have evicted at once
    ignored_by_reason: Counter[str] = field(default_factory=Counter)
    malformed_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "answered": self.answered,
                "ignored": self.ignored, "malformed": self.malformed, "errors": self.errors,
                "send_failed": self.send_failed, "fast": self.fast,
                "steps_let_go": self.steps_let_go,
                "ignored_by_reason": dict(self.ignored_by_reason),
                "malformed_by_reason": dict(self.malformed_by_reason)}


_DIGITS = re.compile(r"\d+")


def reason_key(reason: str) -> str:
    """A bounded label for counters: numbers in a decode error become N."""
    return _DIGITS.sub("N", reason)


_UUID_ONLY = frozenset({int(o.Opt.CLIENT_UUID)})


@dataclass(frozen=True)
class Reply:
    data: bytes
    addr: tuple[str, int]


class Responder:
    def __init__(self, *, registry: BootRegistry, endpoints: BootEndpoints, server_ip: str,
                 mode: str = "auto", allow: AllowCallback | None = None,
                 on_event: EventCallback | None = None, memory: BootMemory | None = None,
                 pool: LeasePool | None = None, targets: ReplyTargets | None = None,
                 pxe_discovery_control: bool = True,
                 relay_networks: Sequence[Network] = (),
                 clock: Callable[[], float] = time.time) -> None:
        """``relay_networks``: ``boot.allowed_networks``; when not empty, relayed requests
        are answered only for relays (giaddr) inside them. Requests on the local segment
        carry no address to judge and are answered as before. ``clock``: the event
        callback's (the boot log's) clock, for each step's ``at``."""
        if mode not in MODES:
            raise ValueError(f"DHCP mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "full" and pool is None:
            raise ValueError("full mode needs an address pool")
        self.registry = registry
        self.endpoints = endpoints
        self.server_ip = server_ip
        self._server_id = socket.inet_aton(server_ip)
        self.mode = mode
        self.allow = allow
        self.on_event = on_event
        self.memory = memory if memory is not None else BootMemory()
        self.pool = pool
        self.targets = targets or ReplyTargets()
        self.pxe_discovery_control = pxe_discovery_control
        self.relay_networks = list(relay_networks)
        self._pxe_vendor = o.build_pxe_vendor() if pxe_discovery_control else b""
        self.counters = DhcpCounters()
        self._decisions: dict[tuple[Any, ...], BootDecision] = {}
        self._static: dict[tuple[int, str, bool], bytes] = {}
        self._discover_details: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._raw_ips: dict[str, bytes] = {}
        self.clock = clock
        # Deferred events (``defer_events``): the server sends a whole batch of replies first
        # and then hands the batch's events to ``on_event`` (``deliver_events``), so the boot
        # doctor's bookkeeping is never between a DISCOVER and its OFFER. Fast answers' steps
        # wait per MAC in ``_backlog`` (compact), which the server may hand over later while a
        # flood lasts; any other step of such a MAC brings its waiting ones out first.
        self.defer_events = False
        self._queued: list[tuple[str, str, dict[str, Any], float]] = []
        # Oldest MAC first; an OrderedDict, because a dict whose front is popped again and
        # again makes every next(iter(...)) walk the holes left there.
        self._backlog: OrderedDict[str, list[FastStep]] = OrderedDict()
        self.backlog_limit = BACKLOG_MACS
        self._known = KnownOffers() if mode in ("auto", "selective") else None
        self._learning: tuple[BootDecision, dict[str, Any], str] | None = None
        self._local_dest = (self.targets.broadcast, self.targets.client_port)
        self._local_to = f"{self._local_dest[0]}:{self._local_dest[1]}"

    # --- entry point --------------------------------------------------------------------------

    def handle(self, data: bytes, source: tuple[str, int], pxe_port: bool = False
               ) -> Reply | None:
        key = None
        if self._known is not None and not pxe_port:
            key = offer_key(data)
            if key is not None:
                reply = self._answer_known(key, data)
                if reply is not None:
                    return reply
        self.counters.received += 1
        result = decode(data)
        packet = result.packet
        if packet is None:
            self.counters.malformed += 1
            self.counters.malformed_by_reason[reason_key(result.invalid_reason)] += 1
            return None
        # Only a MAC without history gets the answer a new machine of its kind gets.
        fresh = key is not None and packet.mac not in self.memory
        self._learning = None
        try:
            reply = self._dispatch(packet, source, pxe_port)
        except Exception:
            self.counters.errors += 1
            log.exception("DHCP: failed to handle a packet from %s (%s)", source, packet.mac)
            return None
        if reply is None:
            return None
        self.counters.answered += 1
        learning, self._learning = self._learning, None
        if fresh and learning is not None and key is not None and self._known is not None:
            self._known.learn(key, data, reply.data, *learning)
        return reply

    def _answer_known(self, key: Key, data: bytes) -> Reply | None:
        """The fast path (``fastpath``): a known kind of DISCOVER from a MAC without history."""
        assert self._known is not None
        offer = self._known.get(key)
        if offer is None:
            return None
        mac = data[28:34].hex(":")
        if mac in self.memory:  # a retransmission, or a client we sent a loader to
            return None
        if self.mode == "selective" and not self._allowed_mac(mac):
            return None  # the full path says why, in the counters and the boot doctor
        xid = int.from_bytes(data[4:8], "big")
        self.memory.record(mac, xid, offer.decision)
        counters = self.counters
        counters.received += 1
        counters.answered += 1
        counters.fast += 1
        uuid_at = key[0]
        if self.on_event is not None:
            uuid = data[uuid_at + 3:uuid_at + 19] if uuid_at >= 0 else None
            step: FastStep = (self.clock(), xid, uuid, offer)
            if self.defer_events:
                waiting = self._backlog.get(mac)
                if waiting is None:
                    self._backlog[mac] = [step]
                    if len(self._backlog) > self.backlog_limit:
                        _, let_go = self._backlog.popitem(last=False)
                        counters.steps_let_go += 2 * len(let_go)
                else:
                    waiting.append(step)
            else:
                self._deliver_fast(mac, [step])
        return Reply(offer.render(data, uuid_at), self._local_dest)

    def _ignore(self, reason: str, packet: Packet | None = None, *,
                event: bool = False) -> None:
        self.counters.ignored += 1
        self.counters.ignored_by_reason[reason] += 1
        if event and packet is not None:
            self._emit(packet.mac, "dhcp_ignored", {"xid": packet.xid, "reason": reason})

    def _emit(self, mac: str, step: str, detail: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        if self.defer_events:
            waiting = self._backlog.pop(mac, None)
            if waiting is not None:  # this MAC's earlier steps first
                self._queued.extend(self._expand(mac, waiting))
            self._queued.append((mac, step, detail, self.clock()))
            return
        self._call(mac, step, detail, self.clock())

    def _call(self, mac: str, step: str, detail: dict[str, Any], at: float) -> None:
        assert self.on_event is not None
        try:
            self.on_event(mac, step, detail, at)
        except Exception:
            log.exception("DHCP: on_event callback failed for %s %s", mac, step)

    def _expand(self, mac: str, steps: list[FastStep]
                ) -> list[tuple[str, str, dict[str, Any], float]]:
        """A fast answer's two steps, with the details the full path gives them."""
        out: list[tuple[str, str, dict[str, Any], float]] = []
        for at, xid, uuid, offer in steps:
            discover: dict[str, Any] = {"xid": xid, "port": 67}
            discover.update(offer.client)
            discover["uuid"] = o.uuid_text(uuid) if uuid is not None else None
            discover["relay"] = None
            answer: dict[str, Any] = {"xid": xid, "to": offer.to}
            answer.update(offer.summary)
            out.append((mac, "dhcp_discover", discover, at))
            out.append((mac, "dhcp_offer", answer, at))
        return out

    def _deliver_fast(self, mac: str, steps: list[FastStep]) -> None:
        for event in self._expand(mac, steps):
            self._call(*event)

    @property
    def backlog(self) -> int:
        """MACs whose fast answers' steps wait for delivery."""
        return len(self._backlog)

    def deliver_events(self, max_macs: int | None = None) -> None:
        """Hand the deferred events to ``on_event``, in the order they happened for each MAC:
        all the other steps, then the waiting fast answers' steps of at most ``max_macs``
        MACs, oldest first (None: all of them)."""
        if self.on_event is None:
            self._queued.clear()
            self._backlog.clear()
            return
        if self._queued:
            queued, self._queued = self._queued, []
            for event in queued:
                self._call(*event)
        backlog = self._backlog
        if not backlog or max_macs == 0:
            return
        if max_macs is None or max_macs >= len(backlog):
            self._backlog = OrderedDict()
            for mac, steps in backlog.items():
                self._deliver_fast(mac, steps)
            return
        for _ in range(max_macs):
            self._deliver_fast(*backlog.popitem(last=False))

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC holding a lease on ``ip`` (full mode). Addresses the site's server hands
        out are learnt by the boot log from the "dhcp_request" events, in one map."""
        return self.pool.mac_for_ip(ip) if self.pool is not None else None

    # --- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, p: Packet, source: tuple[str, int], pxe_port: bool) -> Reply | None:
        if p.op != BOOTREQUEST:
            self._ignore("not a client request")
            return None
        mtype = p.message_type
        if mtype is None:
            self._ignore("plain BOOTP (no DHCP message type)")
            return None
        if p.giaddr != ZERO and not allowed(self.relay_networks, parse_address(p.giaddr)):
            self._ignore("relay outside boot.allowed_networks", p, event=True)
            return None
        if self.mode == "full" and not pxe_port:
            return self._full(p, mtype)
        if not self._is_pxe(p):
            self._ignore("not a PXE client")
            return None
        if mtype == MessageType.DISCOVER:
            self._emit_discover(p, pxe_port)
            if not self._allowed(p):
                return None
            decision = self._decide(p)
            if not decision.answer:
                self._ignore("no boot method", p, event=True)
                return None
            return self._answer(p, MessageType.OFFER, decision, pxe_port, source)
        if mtype in (MessageType.REQUEST, MessageType.INFORM):
            sid = o.server_id(p)
            ours = pxe_port or sid == self.server_ip
            self._emit_request(p, 4011 if pxe_port else 67, sid, ours)
            if not ours:
                self._ignore("request for another server")
                return None
            if not self._allowed(p):
                return None
            decision = self._decide(p)
            if not decision.answer:
                self._ignore("no boot method", p, event=True)
                return None
            return self._answer(p, MessageType.ACK, decision, pxe_port, source)
        self._ignore(f"message type {mtype} not handled in proxy mode")
        return None

    def _allowed(self, p: Packet) -> bool:
        if self.mode != "selective":
            return True
        allowed = self._allowed_mac(p.mac)
        if not allowed:
            self._ignore("not allowed (selective mode)", p, event=True)
        return allowed

    def _allowed_mac(self, mac: str) -> bool:
        try:
            return self.allow is not None and self.allow(mac)
        except Exception:
            log.exception("DHCP: allow callback failed for %s", mac)
            return False

    # --- facts and decisions ------------------------------------------------------------------

    def facts(self, p: Packet, loader_sent: str | None = None) -> ClientFacts:
        vendor = o.vendor_class(p)
        arches = o.client_arches(p)
        arch = arches[0] if arches else o.arch_from_vendor_class(vendor)
        has_175 = o.Opt.IPXE_ENCAP in p.options
        return ClientFacts(
            mac=p.mac, arch=arch, vendor_class=vendor, user_classes=o.user_classes(p),
            has_ipxe_options=has_175,
            ipxe_features=o.ipxe_features(p) if has_175 else frozenset(),
            loader_sent=loader_sent)

    @staticmethod
    def _is_pxe(p: Packet) -> bool:
        """``ClientFacts.is_pxe_client`` straight from the raw options (hot path)."""
        opts = p.options
        if opts.get(60, b"").startswith((b"PXEClient", b"HTTPClient")) or 175 in opts:
            return True
        return 77 in opts and "iPXE" in o.user_classes(p)

    def _decide(self, p: Packet) -> BootDecision:
        mac = p.mac
        # A retransmission or the REQUEST following our OFFER (same xid) gets the same answer.
        decision = self.memory.same_transaction(mac, p.xid)
        if decision is None:
            loader_sent = self.memory.loader_sent(mac)
            # Loader answers depend on what the client said, not on its MAC: during a flood
            # (a rack powering on) most clients say the same thing, so decide once.
            opts = p.options
            key = (opts.get(93), opts.get(60), opts.get(77), opts.get(175), loader_sent)
            decision = self._decisions.get(key)
            if decision is None:
                decision = self.registry.decide(self.facts(p, loader_sent), self.endpoints)
                if not decision.script:  # script URLs name the MAC
                    if len(self._decisions) >= 1024:
                        self._decisions.clear()
                    self._decisions[key] = decision
        self.memory.record(mac, p.xid, decision)
        return decision

    def _emit_discover(self, p: Packet, pxe_port: bool) -> None:
        if self.on_event is None:
            return
        detail: dict[str, Any] = {"xid": p.xid, "port": 4011 if pxe_port else 67}
        detail.update(self._client_detail(p))
        detail["uuid"] = o.client_uuid(p)
        detail["relay"] = p.giaddr if p.giaddr != ZERO else None
        self._emit(p.mac, "dhcp_discover", detail)

    def _client_detail(self, p: Packet) -> dict[str, Any]:
        """What the client says about itself, for the boot doctor. The same for most of a
        flood (a rack of one model): derived once per kind of client, as the decisions are."""
        opts = p.options
        key = (opts.get(93), opts.get(60), opts.get(77), opts.get(175))
        static = self._discover_details.get(key)
        if static is None:
            facts = self.facts(p)
            static = {"arch": facts.arch, "arch_name": arch_name(facts.arch),
                      "vendor_class": facts.vendor_class,
                      "user_class": list(facts.user_classes), "ipxe": facts.is_ipxe,
                      "ipxe_features": sorted(facts.ipxe_features)}
            if len(self._discover_details) >= 1024:
                self._discover_details.clear()
            self._discover_details[key] = static
        return static

    def _emit_request(self, p: Packet, port: int, sid: str | None, ours: bool) -> None:
        if self.on_event is None:
            return
        # "ip" is the address the client is taking: the boot log maps later TFTP/HTTP
        # requests (which only show an IP) back to this MAC with it.
        ip = o.requested_ip(p) or (p.ciaddr if p.ciaddr != ZERO else None)
        self._emit(p.mac, "dhcp_request", {"xid": p.xid, "port": port, "server_id": sid,
                                           "ip": ip, "ours": ours})

    # --- replies ------------------------------------------------------------------------------

    def _destination(self, p: Packet, source: tuple[str, int], pxe_port: bool
                     ) -> tuple[str, int]:
        if p.giaddr != ZERO:
            return p.giaddr, self.targets.relay_port
        if pxe_port and source[0] != ZERO:
            return source
        if p.ciaddr != ZERO:
            return p.ciaddr, self.targets.client_port
        return self.targets.broadcast, self.targets.client_port

    def _boot_options(self, p: Packet, decision: BootDecision, opts: dict[int, bytes],
                      pxe_port: bool, static: bool = True) -> bytes:
        """Add the PXE options of ``decision`` to ``opts``; return the file field.

        ``static=False`` leaves out option 60 and the usual option 43, which the proxy's
        fast path splices in pre-encoded (see ``_static_options``)."""
        if static:
            opts[o.Opt.VENDOR_CLASS] = decision.vendor_class.encode()
        uuid = p.options.get(o.Opt.CLIENT_UUID)
        if uuid is not None:
            opts[o.Opt.CLIENT_UUID] = uuid
        if decision.vendor_class == "PXEClient":
            boot_item = None
            if pxe_port:  # a boot-server REQUEST names the item it wants; echo it back
                boot_item = (o.pxe_options(p) or {}).get(o.PXE_BOOT_ITEM)
            if boot_item is not None:
                control = o.DISCOVERY_USE_BOOTFILE if self.pxe_discovery_control else None
                opts[o.Opt.VENDOR_SPECIFIC] = o.build_pxe_vendor(control, boot_item)
            elif self._pxe_vendor and static:
                opts[o.Opt.VENDOR_SPECIFIC] = self._pxe_vendor
        boot_file = decision.boot_file.encode()
        if len(boot_file) > 127:  # too long for the file field (it must keep a NUL)
            opts[o.Opt.BOOTFILE_NAME] = boot_file
            return b""
        return boot_file

    def _static_options(self, mtype: int, vendor_class: str, with_vendor: bool) -> bytes:
        """53, 54, 60 and 43 of a proxy reply, encoded once per kind of reply."""
        key = (mtype, vendor_class, with_vendor)
        blob = self._static.get(key)
        if blob is None:
            opts = {53: bytes((mtype,)), 54: self._server_id, 60: vendor_class.encode()}
            if with_vendor and vendor_class == "PXEClient" and self._pxe_vendor:
                opts[o.Opt.VENDOR_SPECIFIC] = self._pxe_vendor
            blob = self._static[key] = encode_options(opts)
        return blob

    def _finish(self, p: Packet, reply: Packet, dest: tuple[str, int], prefix: bytes = b""
                ) -> Reply:
        relay = p.options.get(o.Opt.RELAY_AGENT)
        if relay is not None and p.giaddr != ZERO:
            reply.options[o.Opt.RELAY_AGENT] = relay  # RFC 3046: echo to the relay
        max_size = max(576, o.max_message_size(p) or 576)
        return Reply(encode(reply, max_size=max_size, prefix=prefix), dest)

    def _answer(self, p: Packet, mtype: MessageType, decision: BootDecision, pxe_port: bool,
                source: tuple[str, int]) -> Reply:
        opts: dict[int, bytes] = {}
        file = self._boot_options(p, decision, opts, pxe_port, static=False)
        prefix = self._static_options(mtype, decision.vendor_class,
                                      o.Opt.VENDOR_SPECIFIC not in opts)
        if not pxe_port and p.giaddr == ZERO and opts.keys() <= _UUID_ONLY:
            # The flood case (a PXE ROM on the local segment): straight to bytes.
            data = self._fast_reply(p, decision, file, prefix, opts.get(o.Opt.CLIENT_UUID))
            if data is not None:
                dest = self._destination(p, source, pxe_port)
                self._emit_answer(p, mtype, decision, dest)
                if (mtype == MessageType.OFFER and dest == self._local_dest
                        and not decision.script):
                    # ``handle`` may keep this reply as the template for its kind.
                    self._learning = (decision, self._client_detail(p), self._local_to)
                return Reply(data, dest)
        reply = Packet(BOOTREPLY, p.xid, p.chaddr, p.htype, p.hlen, 0, 0, p.flags,
                       p.ciaddr if pxe_port else ZERO, ZERO, decision.next_server, p.giaddr,
                       b"", file, opts)
        dest = self._destination(p, source, pxe_port)
        self._emit_answer(p, mtype, decision, dest)
        return self._finish(p, reply, dest, prefix)

    def _emit_answer(self, p: Packet, mtype: MessageType, decision: BootDecision,
                     dest: tuple[str, int]) -> None:
        if self.on_event is not None:
            detail: dict[str, Any] = {"xid": p.xid, "to": f"{dest[0]}:{dest[1]}"}
            detail.update(decision.summary)
            self._emit(p.mac, "dhcp_offer" if mtype == MessageType.OFFER else "dhcp_ack",
                       detail)

    def _fast_reply(self, p: Packet, decision: BootDecision, file: bytes, prefix: bytes,
                    uuid: bytes | None) -> bytes | None:
        """``encode``'s bytes for a reply with only option 97 beside the static ones, or None
        when the slow path must decide (odd sizes, a bad address)."""
        siaddr = self._raw_ips.get(decision.next_server)
        if siaddr is None:
            try:
                siaddr = socket.inet_aton(decision.next_server)
            except OSError:
                return None
            if len(self._raw_ips) < 64:
                self._raw_ips[decision.next_server] = siaddr
        options = prefix
        if uuid is not None:
            if len(uuid) > 255:
                return None
            options = prefix + bytes((o.Opt.CLIENT_UUID, len(uuid))) + uuid
        if HEADER_SIZE + 4 + len(options) + 1 > 576 or len(p.chaddr) != 16:
            return None
        return encode_reply_fast(p.xid, p.chaddr, p.htype, p.hlen, p.flags, siaddr, file,
                                 options)

    # --- full mode ----------------------------------------------------------------------------

    def _lease_options(self, opts: dict[int, bytes]) -> None:
        assert self.pool is not None
        s = self.pool.settings
        opts[o.Opt.LEASE_TIME] = o.build_u32(s.lease_time)
        opts[o.Opt.RENEWAL_TIME] = o.build_u32(s.lease_time // 2)
        opts[o.Opt.REBINDING_TIME] = o.build_u32(s.lease_time * 7 // 8)
        opts[o.Opt.SUBNET_MASK] = o.build_ip(s.netmask)
        if s.router:
            opts[o.Opt.ROUTER] = o.build_ip(s.router)
        if s.dns:
            opts[o.Opt.DNS] = o.build_ip_list(s.dns)
        if s.domain:
            opts[o.Opt.DOMAIN_NAME] = s.domain.encode()

    def _full(self, p: Packet, mtype: int) -> Reply | None:
        assert self.pool is not None
        if mtype == MessageType.DISCOVER:
            self._emit_discover(p, False)
            ip = self.pool.offer(p.mac, o.requested_ip(p))
            if ip is None:
                self._ignore("address pool exhausted", p, event=True)
                return None
            return self._full_reply(p, MessageType.OFFER, ip)
        if mtype == MessageType.REQUEST:
            sid = o.server_id(p)
            self._emit_request(p, 67, sid, sid is None or sid == self.server_ip)
            if sid is not None and sid != self.server_ip:
                self.pool.forget_offer(p.mac)
                self._ignore("request for another server")
                return None
            hostname = o.text(p.options.get(o.Opt.HOSTNAME)) or ""
            ok, detail = self.pool.request(p.mac, o.requested_ip(p), p.ciaddr, hostname)
            if not ok:
                return self._nak(p, detail)
            return self._full_reply(p, MessageType.ACK, detail)
        if mtype == MessageType.DECLINE:
            self.pool.decline(p.mac, o.requested_ip(p))
            self._emit(p.mac, "dhcp_decline", {"xid": p.xid, "ip": o.requested_ip(p)})
            self._ignore("decline (noted)")
            return None
        if mtype == MessageType.RELEASE:
            self.pool.release(p.mac, p.ciaddr)
            self._emit(p.mac, "dhcp_release", {"xid": p.xid, "ip": p.ciaddr})
            self._ignore("release (noted)")
            return None
        if mtype == MessageType.INFORM:
            return self._full_reply(p, MessageType.ACK, None)
        self._ignore(f"message type {mtype} not handled")
        return None

    def _full_reply(self, p: Packet, mtype: MessageType, ip: str | None) -> Reply:
        opts: dict[int, bytes] = {53: bytes((mtype,)), 54: self._server_id}
        if ip is not None:
            self._lease_options(opts)
        file = b""
        siaddr = ZERO
        decision: BootDecision | None = None
        if self._is_pxe(p):
            decision = self._decide(p)
            if decision.answer:
                file = self._boot_options(p, decision, opts, False)
                siaddr = decision.next_server
        reply = Packet(BOOTREPLY, p.xid, p.chaddr, p.htype, p.hlen, 0, 0, p.flags,
                       p.ciaddr if mtype == MessageType.ACK else ZERO, ip or ZERO, siaddr,
                       p.giaddr, b"", file, opts)
        if ip is None:  # INFORM: the client has its address already
            dest: tuple[str, int] = (p.ciaddr, self.targets.client_port)
        else:
            dest = self._destination(p, ("0.0.0.0", 0), False)
        if self.on_event is not None:
            detail: dict[str, Any] = {"xid": p.xid, "to": f"{dest[0]}:{dest[1]}", "yiaddr": ip}
            if mtype == MessageType.ACK and ip is not None:
                detail["ip"] = ip
            if decision is not None:
                detail.update(decision.summary)
            self._emit(p.mac, "dhcp_offer" if mtype == MessageType.OFFER else "dhcp_ack",
                       detail)
        return self._finish(p, reply, dest)

    def _nak(self, p: Packet, reason: str) -> Reply:
        opts = {53: bytes((MessageType.NAK,)), 54: self._server_id,
                o.Opt.MESSAGE: reason.encode()[:255]}
        reply = Packet(BOOTREPLY, p.xid, p.chaddr, p.htype, p.hlen, 0, 0, p.flags, ZERO, ZERO,
                       ZERO, p.giaddr, b"", b"", opts)
        if p.giaddr != ZERO:
            reply.flags |= 0x8000  # RFC 2131 4.3.2: the relay must broadcast a NAK
            dest = (p.giaddr, self.targets.relay_port)
        else:
            dest = (self.targets.broadcast, self.targets.client_port)
        self._emit(p.mac, "dhcp_nak", {"xid": p.xid, "reason": reason})
        return self._finish(p, reply, dest)
