"""The proxy's OFFER to the usual PXE DISCOVER, made straight from the datagram's bytes.

A rack powering on sends thousands of DISCOVERs that differ only in xid, flags, MAC and
option 97 (the machine's UUID): one model's firmware sends the same options otherwise, byte
for byte. The first DISCOVER of each kind goes through the decoder and the boot registry
(``Responder``); the OFFER made for it is kept here as a template, keyed by the DISCOVER's
options with the UUID cut out, and the next ones are answered by splicing their xid, flags,
chaddr and UUID into it: no decoding, no ``Packet``, no decision. That is what lets one
Python process answer a flood at the rate dnsmasq does (bench/dhcp_flood.py).

Only what the full path would answer the same way is learnt: a local client (no relay, no
addresses set), Ethernet, no option overload, option 97 (if any) exactly where the search for
it lands; and the caller only asks for MACs it has no memory of (``BootMemory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dragonfly.boot.registry import BootDecision
from dragonfly.edge.dhcp.codec import MAGIC_COOKIE

OPTIONS_AT = 240  # after the fixed header (236) and the magic cookie
# BOOTREQUEST, Ethernet, 6-byte hardware address, no relay hops.
_REQUEST_START = b"\x01\x01\x06\x00"
_NO_ADDRESSES = bytes(16)  # ciaddr, yiaddr, siaddr, giaddr
_CHADDR_PADDING = bytes(10)  # chaddr beyond the 6-byte MAC
# Option 97, length 17, type 0 (a 16-byte GUID follows: RFC 4578 2.3).
UUID_OPTION = b"\x61\x11\x00"
_UUID_OPTION_SIZE = 19
_OVERLOAD = 52
_CLIENT_UUID = 97
MAX_KINDS = 256  # kinds of client remembered; more than a site has models

Key = tuple[int, bytes]


def offer_key(data: bytes) -> Key | None:
    """(where option 97 starts or -1, the options without its 19 bytes), or None when the
    datagram is not a local Ethernet BOOTREQUEST without addresses."""
    if (len(data) < OPTIONS_AT + 4 or data[:4] != _REQUEST_START
            or data[12:28] != _NO_ADDRESSES or data[34:44] != _CHADDR_PADDING
            or data[236:240] != MAGIC_COOKIE):
        return None
    at = data.find(UUID_OPTION, OPTIONS_AT)
    if at < 0:
        return at, data[OPTIONS_AT:]
    return at, data[OPTIONS_AT:at] + data[at + _UUID_OPTION_SIZE:]


def _options_learnable(data: bytes, uuid_at: int) -> bool:
    """Whether the options parse, carry no overload and option 97 is only where ``uuid_at``
    says (a search can land inside another option's value)."""
    i, end = OPTIONS_AT, len(data)
    seen_uuid = False
    while i < end:
        code = data[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            return seen_uuid == (uuid_at >= 0)
        if i + 1 >= end or code == _OVERLOAD:
            return False
        if code == _CLIENT_UUID:
            if seen_uuid or i != uuid_at:
                return False
            seen_uuid = True
        i += 2 + data[i + 1]
    return False


@dataclass(frozen=True, slots=True)
class KnownOffer:
    """One kind of DISCOVER's OFFER, in the pieces that stay, and what the boot doctor is
    told about it."""

    decision: BootDecision
    head: bytes  # reply[0:4]: op, htype, hlen, hops
    secs: bytes  # reply[8:10]
    addresses: bytes  # reply[12:28]
    before_uuid: bytes  # from sname to option 97's GUID (or to the end without one)
    after_uuid: bytes
    client: dict[str, Any]  # the DISCOVER step's detail about the client
    summary: dict[str, Any]  # the OFFER step's detail about the decision
    to: str

    def render(self, data: bytes, uuid_at: int) -> bytes:
        if uuid_at < 0:
            return b"".join((self.head, data[4:8], self.secs, data[10:12], self.addresses,
                             data[28:44], self.before_uuid))
        return b"".join((self.head, data[4:8], self.secs, data[10:12], self.addresses,
                         data[28:44], self.before_uuid, data[uuid_at + 3:uuid_at + 19],
                         self.after_uuid))


class KnownOffers:
    def __init__(self, limit: int = MAX_KINDS) -> None:
        self.limit = limit
        self._offers: dict[Key, KnownOffer] = {}

    def get(self, key: Key) -> KnownOffer | None:
        return self._offers.get(key)

    def learn(self, key: Key, data: bytes, reply: bytes, decision: BootDecision,
              client: dict[str, Any], to: str) -> KnownOffer | None:
        """Keep ``reply`` (the full path's answer to ``data``) as the template for ``key``,
        if it can be one; returns what was kept."""
        uuid_at = key[0]
        if not _options_learnable(data, uuid_at) or len(reply) < OPTIONS_AT:
            return None
        if uuid_at < 0:
            before, after = reply[44:], b""
        else:
            where = reply.find(UUID_OPTION + data[uuid_at + 3:uuid_at + 19], OPTIONS_AT)
            if where < 0:
                return None
            before, after = reply[44:where + 3], reply[where + _UUID_OPTION_SIZE:]
        offer = KnownOffer(decision, reply[:4], reply[8:10], reply[12:28], before, after,
                           client, decision.summary, to)
        if offer.render(data, uuid_at) != reply:  # only what splicing reproduces exactly
            return None
        if len(self._offers) >= self.limit:
            self._offers.clear()
        self._offers[key] = offer
        return offer
