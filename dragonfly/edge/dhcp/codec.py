"""BOOTP/DHCP messages <-> bytes (RFC 951, 2131, 2132, 3396).

Pure functions, no I/O. ``decode`` never raises: anything it cannot make sense of comes back
as a ``DecodeResult`` with ``packet=None`` and an ``invalid_reason`` for the server's
"malformed" counter. ``encode`` turns a ``Packet`` into wire bytes, splitting options longer
than 255 bytes into consecutive instances (RFC 3396) and, when told the client's maximum
message size, spilling options into the ``file`` and ``sname`` fields (option overload, 52).

Typed readers and builders for individual options live in ``dragonfly.edge.dhcp.options``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000
HEADER_SIZE = 236  # fixed BOOTP header, before the magic cookie
MIN_PACKET_SIZE = 300  # RFC 1542: some relays and old clients drop shorter BOOTP messages

# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_FILE_AT = 108
_SNAME_AT = 44

OPT_PAD = 0
OPT_OVERLOAD = 52
OPT_END = 255


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


@dataclass(slots=True)
class Packet:
    """One BOOTP/DHCP message. Addresses are dotted-quad strings; options keep wire order.

    ``options`` never holds pad (0), end (255) or overload (52): the codec manages those.
    Repeated instances of an option on the wire are concatenated into one value (RFC 3396).
    """

    op: int
    xid: int
    chaddr: bytes = b"\x00" * 16
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)
    dhcp: bool = True  # False: plain BOOTP (no magic cookie, so no options)
    _mac: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalise the fixed-size fields so decode(encode(p)) == p (cheaply: hot path).
        if len(self.chaddr) != 16:
            self.chaddr = self.chaddr[:16].ljust(16, b"\x00")
        if self.sname and (len(self.sname) > 64 or self.sname[-1] == 0):
            self.sname = self.sname[:64].rstrip(b"\x00")
        if self.file and (len(self.file) > 128 or self.file[-1] == 0):
            self.file = self.file[:128].rstrip(b"\x00")

    @property
    def mac(self) -> str:
        """The hardware address as lowercase colon-separated hex (``52:54:00:12:34:56``)."""
        if not self._mac:  # cached: the hot path asks for it several times per packet
            self._mac = self.chaddr[: min(self.hlen, 16)].hex(":")
        return self._mac

    @property
    def message_type(self) -> int | None:
        value = self.options.get(53)
        return value[0] if value is not None and len(value) == 1 else None

    @property
    def boot_file(self) -> str:
        return self.file.split(b"\x00", 1)[0].decode("latin-1")

    @property
    def server_name(self) -> str:
        return self.sname.split(b"\x00", 1)[0].decode("latin-1")


@dataclass(frozen=True, slots=True)
class DecodeResult:
    packet: Packet | None
    invalid_reason: str = ""

    @property
    def ok(self) -> bool:
        return self.packet is not None


def _bad(reason: str) -> DecodeResult:
    return DecodeResult(None, reason)


_ZERO_IP = bytes(4)


def _ip_text(raw: bytes) -> str:
    return "0.0.0.0" if raw == _ZERO_IP else socket.inet_ntoa(raw)


def _ip_raw(text: str) -> bytes:
    return _ZERO_IP if text == "0.0.0.0" else socket.inet_aton(text)


def _parse_options(buf: bytes, start: int, end: int, into: dict[int, bytes]) -> str:
    """Append the options in ``buf[start:end]`` to ``into``; return an error or ''."""
    i = start
    while i < end:
        code = buf[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return ""
        if i + 1 >= end:
            return f"option {code} has no length byte"
        j = i + 2 + buf[i + 1]
        if j > end:
            return f"option {code} claims {buf[i + 1]} bytes but only {end - i - 2} remain"
        if code in into:  # RFC 3396: instances concatenate (rare)
            into[code] += buf[i + 2 : j]
        else:
            into[code] = buf[i + 2 : j]
        i = j
    return ""  # a missing end option is common enough in the wild to tolerate


def decode(data: bytes) -> DecodeResult:
    """Parse one datagram. Never raises; see ``DecodeResult.invalid_reason``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return _bad("not bytes")
    buf = bytes(data)
    if len(buf) < HEADER_SIZE:
        return _bad(f"too short for a BOOTP header ({len(buf)} < {HEADER_SIZE} bytes)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = _HEADER.unpack_from(buf)
    if op not in (BOOTREQUEST, BOOTREPLY):
        return _bad(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen > 16:
        return _bad(f"hardware address length {hlen} exceeds 16")
    if buf[HEADER_SIZE : HEADER_SIZE + 4] != MAGIC_COOKIE:
        if len(buf) >= HEADER_SIZE + 4 and any(buf[HEADER_SIZE : HEADER_SIZE + 4]):
            return _bad("bad magic cookie")
        # RFC 951 BOOTP: no cookie (the vendor area is zeros or absent), no options.
        return DecodeResult(Packet(
            op, xid, chaddr, htype, hlen, hops, secs, flags, _ip_text(ciaddr),
            _ip_text(yiaddr), _ip_text(siaddr), _ip_text(giaddr), sname, file, {},
            dhcp=False))
    options: dict[int, bytes] = {}
    error = _parse_options(buf, HEADER_SIZE + 4, len(buf), options)
    if error:
        return _bad(error)
    overload = options.pop(OPT_OVERLOAD, None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            return _bad(f"bad option overload value ({len(overload)} bytes)")
        # RFC 3396 order: options field, then file, then sname.
        if overload[0] & 1:
            error = _parse_options(buf, _FILE_AT, _FILE_AT + 128, options)
            if error:
                return _bad(f"in overloaded file field: {error}")
            file = b""
        if overload[0] & 2:
            error = _parse_options(buf, _SNAME_AT, _SNAME_AT + 64, options)
            if error:
                return _bad(f"in overloaded sname field: {error}")
            sname = b""
        options.pop(OPT_OVERLOAD, None)
    mtype = options.get(53)
    if mtype is not None and len(mtype) != 1:
        return _bad(f"message type option has length {len(mtype)}")
    return DecodeResult(Packet(
        op, xid, chaddr, htype, hlen, hops, secs, flags, _ip_text(ciaddr), _ip_text(yiaddr),
        _ip_text(siaddr), _ip_text(giaddr), sname, file, options))


def _pack_options(options: Iterable[tuple[int, bytes]], capacities: list[int]
                  ) -> list[bytearray] | None:
    """Lay options into fields of the given byte capacities (each keeps room for an end
    option), splitting values across instances as RFC 3396 allows. None if they don't fit."""
    fields = [bytearray()]
    current = 0
    for code, value in options:
        pos = 0
        first = True
        while first or pos < len(value):
            need = 2 + (1 if pos < len(value) else 0)
            avail = capacities[current] - 1 - len(fields[current])
            if avail < need:
                current += 1
                if current == len(capacities):
                    return None
                fields.append(bytearray())
                continue
            chunk = value[pos : pos + min(255, avail - 2)]
            fields[current] += bytes((code, len(chunk)))
            fields[current] += chunk
            pos += len(chunk)
            first = False
    for f in fields:
        f.append(OPT_END)
    return fields


def _simple_options(items: list[tuple[int, bytes]], limit: int, prefix: bytes
                    ) -> list[bytearray] | None:
    """The common case, fast: every value fits one instance and everything fits ``limit``."""
    out = bytearray(prefix)
    for code, value in items:
        if len(value) > 255:
            return None
        out += bytes((code, len(value)))
        out += value
    out.append(OPT_END)
    return [out] if len(out) <= limit else None


def encode_options(options: dict[int, bytes]) -> bytes:
    """Options encoded once (no end option), to be passed as ``encode(..., prefix=)`` to many
    replies that share them."""
    fields = _pack_options(
        [(c, v) for c, v in options.items() if c not in (OPT_PAD, OPT_END, OPT_OVERLOAD)],
        [1 << 30])
    assert fields is not None  # one unbounded field always fits
    return bytes(fields[0][:-1])


def encode(packet: Packet, *, max_size: int | None = None, prefix: bytes = b"") -> bytes:
    """Wire bytes for ``packet``, padded to 300 bytes.

    ``max_size``: the largest message the peer accepts (option 57, at least 576 per RFC 2131).
    When the options don't fit, they overflow into ``file`` and then ``sname`` if those are
    empty (option 52). ``prefix``: options from ``encode_options`` placed before
    ``packet.options``. Raises ValueError when the packet cannot be represented.
    """
    try:
        addrs = [_ip_raw(a) for a in
                 (packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr)]
    except OSError:
        raise ValueError("an address field is not a dotted-quad IPv4 address") from None
    if len(packet.sname) > 64 or len(packet.file) > 128:
        raise ValueError("sname or file field too long")
    items = [(c, v) for c, v in packet.options.items() if c not in (OPT_PAD, OPT_END, OPT_OVERLOAD)]
    for code, _ in items:
        if not 0 < code < 255:
            raise ValueError(f"option code {code} out of range")
    sname, file = packet.sname, packet.file
    if not packet.dhcp:
        tail = b""
    else:
        limit = (max_size - HEADER_SIZE - 4) if max_size is not None else 1 << 30
        fields = _simple_options(items, limit, prefix)
        if fields is None and prefix:
            spliced: dict[int, bytes] = {}
            _parse_options(prefix, 0, len(prefix), spliced)
            items = [*spliced.items(), *items]
        if fields is None:
            fields = _pack_options(items, [limit])
        if fields is None:
            capacities = [limit - 3]  # room for the overload option itself
            if not file:
                capacities.append(128)
            if not sname:
                capacities.append(64)
            fields = _pack_options(items, capacities)
            if fields is None:
                raise ValueError(f"options do not fit in {max_size} bytes even with overload")
            overload = 0
            spill = fields[1:]
            if not file and spill:
                file, overload = bytes(spill.pop(0)), overload | 1
            if not sname and spill:
                sname, overload = bytes(spill.pop(0)), overload | 2
            fields[0][:0] = bytes((OPT_OVERLOAD, 1, overload))
        tail = MAGIC_COOKIE + bytes(fields[0])
    try:
        header = _HEADER.pack(
            packet.op, packet.htype, packet.hlen, packet.hops, packet.xid & 0xFFFFFFFF,
            packet.secs & 0xFFFF, packet.flags & 0xFFFF, *addrs, packet.chaddr, sname, file)
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from None
    data = header + tail
    if len(data) < MIN_PACKET_SIZE:
        data += b"\x00" * (MIN_PACKET_SIZE - len(data))
    return data


def encode_reply_fast(xid: int, chaddr: bytes, htype: int, hlen: int, flags: int,
                      siaddr: bytes, file: bytes, options: bytes) -> bytes:
    """A BOOTREPLY with zero ciaddr/yiaddr/giaddr/sname/hops/secs and ``options`` already
    encoded (without the end option), padded to 300 bytes: what ``encode`` makes of such a
    packet whose options fit 576 bytes, byte for byte, without building a ``Packet``. The
    proxy's OFFER to a local PXE client (the flood case) is one."""
    data = _HEADER.pack(BOOTREPLY, htype, hlen, 0, xid & 0xFFFFFFFF, 0, flags & 0xFFFF,
                        _ZERO_IP, _ZERO_IP, siaddr, _ZERO_IP, chaddr, b"", file
                        ) + MAGIC_COOKIE + options + b"\xff"
    if len(data) < MIN_PACKET_SIZE:
        data += bytes(MIN_PACKET_SIZE - len(data))
    return data
