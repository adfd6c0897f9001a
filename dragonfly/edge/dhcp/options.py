"""Typed readers and builders for the DHCP options a PXE proxy cares about.

Readers take a ``Packet`` (or an option mapping) and return None / empty when the option is
absent or malformed; they never raise. Builders return the option's value bytes.
References: RFC 2132 (basics), RFC 3004 (user class), RFC 3046 (relay agent), RFC 4578
(client arch 93, NII 94, UUID 97), the PXE 2.1 spec (vendor options 43), iPXE (175).
"""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterable, Mapping
from enum import IntEnum

from dragonfly.edge.dhcp.codec import Packet


class Opt(IntEnum):
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST = 28
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NII = 94
    CLIENT_UUID = 97
    IPXE_ENCAP = 175


# PXE vendor sub-options (inside option 43).
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_SERVERS = 8
PXE_BOOT_MENU = 9
PXE_MENU_PROMPT = 10
PXE_BOOT_ITEM = 71
# Discovery control bits: 1 no broadcast, 2 no multicast, 4 only listed servers,
# 8 "use the boot file in this offer", i.e. skip boot server discovery on port 4011.
DISCOVERY_USE_BOOTFILE = 0x08

# iPXE feature sub-options (inside option 175), from iPXE's include/ipxe/features.h.
IPXE_FEATURE_NAMES: dict[int, str] = {
    0x10: "pxe-ext", 0x11: "iscsi", 0x12: "aoe", 0x13: "http", 0x14: "https", 0x15: "tftp",
    0x16: "ftp", 0x17: "dns", 0x18: "bzimage", 0x19: "multiboot", 0x1A: "slam", 0x1B: "srp",
    0x20: "nbi", 0x21: "pxe", 0x22: "elf", 0x23: "comboot", 0x24: "efi", 0x25: "fcoe",
    0x26: "vlan", 0x27: "menu", 0x28: "sdi", 0x29: "nfs", 0xEB: "version",
}
IPXE_FEATURE_HTTP = 0x13


# --- generic value readers --------------------------------------------------------------------

def text(value: bytes | None) -> str | None:
    """An NVT ASCII option as text; trailing NULs dropped (RFC 2132 says receivers must)."""
    if value is None:
        return None
    return value.rstrip(b"\x00").decode("latin-1")


def ipv4(value: bytes | None) -> str | None:
    if value is None or len(value) != 4:
        return None
    return socket.inet_ntoa(value)


def ipv4_list(value: bytes | None) -> list[str]:
    if value is None or len(value) % 4:
        return []
    return [socket.inet_ntoa(value[i : i + 4]) for i in range(0, len(value), 4)]


def u32(value: bytes | None) -> int | None:
    if value is None or len(value) != 4:
        return None
    return int(struct.unpack("!I", value)[0])


def u16(value: bytes | None) -> int | None:
    if value is None or len(value) != 2:
        return None
    return int(struct.unpack("!H", value)[0])


def parse_tlv(value: bytes | None) -> dict[int, bytes] | None:
    """Encapsulated sub-options (43, 82, 175): code, length, value; pad 0 and end 255.

    None when the block is malformed (a sub-option runs past the end).
    """
    if value is None:
        return None
    out: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        code = value[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        if i + 1 >= len(value):
            return None
        end = i + 2 + value[i + 1]
        if end > len(value):
            return None
        out[code] = out.get(code, b"") + value[i + 2 : end]
        i = end
    return out


# --- packet readers ---------------------------------------------------------------------------

def server_id(p: Packet) -> str | None:
    return ipv4(p.options.get(Opt.SERVER_ID))


def requested_ip(p: Packet) -> str | None:
    return ipv4(p.options.get(Opt.REQUESTED_IP))


def vendor_class(p: Packet) -> str:
    return text(p.options.get(Opt.VENDOR_CLASS)) or ""


def client_id(p: Packet) -> bytes | None:
    return p.options.get(Opt.CLIENT_ID)


def max_message_size(p: Packet) -> int | None:
    return u16(p.options.get(Opt.MAX_MESSAGE_SIZE))


def user_classes(p: Packet) -> tuple[str, ...]:
    """Option 77. RFC 3004 packs length-prefixed strings; iPXE (and many others) send the
    bare string "iPXE". A value that does not parse exactly as RFC 3004 is taken as one
    plain string."""
    value = p.options.get(Opt.USER_CLASS)
    if not value:
        return ()
    items: list[str] = []
    i = 0
    while i < len(value):
        length = value[i]
        if length == 0 or i + 1 + length > len(value):
            return (text(value) or "",)
        items.append(value[i + 1 : i + 1 + length].decode("latin-1"))
        i += 1 + length
    return tuple(items)


def client_arches(p: Packet) -> tuple[int, ...]:
    """Option 93: one or more 16-bit architecture types; the first is the client's own."""
    value = p.options.get(Opt.CLIENT_ARCH)
    if not value or len(value) % 2:
        return ()
    return struct.unpack(f"!{len(value) // 2}H", value)


def arch_from_vendor_class(vendor: str) -> int | None:
    """``PXEClient:Arch:00007:UNDI:003000`` -> 7, for clients that omit option 93."""
    parts = vendor.split(":")
    if len(parts) >= 3 and parts[1] == "Arch" and parts[2].isdigit():
        return int(parts[2])
    return None


def client_nii(p: Packet) -> tuple[int, int, int] | None:
    """Option 94: network interface type (1 = UNDI) and UNDI major/minor version."""
    value = p.options.get(Opt.CLIENT_NII)
    if value is None or len(value) != 3:
        return None
    return value[0], value[1], value[2]


def client_uuid(p: Packet) -> str | None:
    """Option 97 (type 0 + 16 bytes) as a UUID string, bytes taken in wire order.

    Firmware copies the SMBIOS bytes, whose first three fields may be little-endian, so
    matching against an OS-reported SMBIOS UUID should also try ``uuid_swapped``.
    """
    value = p.options.get(Opt.CLIENT_UUID)
    if value is None or len(value) != 17 or value[0] != 0:
        return None
    return uuid_text(value[1:])


def uuid_text(raw: bytes) -> str:
    """16 GUID bytes in wire order as a UUID string: ``str(uuid.UUID(bytes=raw))`` without
    the object (hot path)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_swapped(text_uuid: str) -> str:
    """The same 16 bytes read with the first three fields little-endian."""
    return str(uuid.UUID(bytes_le=uuid.UUID(text_uuid).bytes))


def ipxe_options(p: Packet) -> dict[int, bytes] | None:
    """Option 175 sub-options (iPXE's features and settings), or None if absent."""
    return parse_tlv(p.options.get(Opt.IPXE_ENCAP))


def ipxe_features(p: Packet) -> frozenset[str]:
    opts = ipxe_options(p) or {}
    return frozenset(IPXE_FEATURE_NAMES[c] for c in opts if c in IPXE_FEATURE_NAMES)


def pxe_options(p: Packet) -> dict[int, bytes] | None:
    """Option 43 as PXE sub-options (meaningful only when option 60 is PXEClient)."""
    return parse_tlv(p.options.get(Opt.VENDOR_SPECIFIC))


def relay_agent(p: Packet) -> dict[int, bytes] | None:
    """Option 82 sub-options: 1 circuit id, 2 remote id, ..."""
    return parse_tlv(p.options.get(Opt.RELAY_AGENT))


# --- builders ---------------------------------------------------------------------------------

def build_ip(address: str) -> bytes:
    return socket.inet_aton(address)


def build_ip_list(addresses: Iterable[str]) -> bytes:
    return b"".join(socket.inet_aton(a) for a in addresses)


def build_u32(value: int) -> bytes:
    return struct.pack("!I", value)


def build_tlv(sub: Mapping[int, bytes], *, end: bool = True) -> bytes:
    """Encapsulated sub-options; values over 255 bytes are split like RFC 3396 options."""
    out = bytearray()
    for code, value in sub.items():
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            out += bytes((code, len(chunk))) + chunk
    if end:
        out.append(255)
    return bytes(out)


def build_user_class(classes: Iterable[str], *, rfc3004: bool = True) -> bytes:
    items = [c.encode("latin-1") for c in classes]
    if not rfc3004:
        return b"".join(items)
    return b"".join(bytes((len(i),)) + i for i in items)


def build_client_arch(*arches: int) -> bytes:
    return struct.pack(f"!{len(arches)}H", *arches)


def build_pxe_vendor(discovery_control: int | None = DISCOVERY_USE_BOOTFILE,
                     boot_item: bytes | None = None) -> bytes:
    """Option 43 for a PXE offer or ACK; the default tells clients to take the boot file from
    this very offer and skip boot server discovery (no REQUEST to port 4011)."""
    sub: dict[int, bytes] = {}
    if discovery_control is not None:
        sub[PXE_DISCOVERY_CONTROL] = bytes((discovery_control,))
    if boot_item is not None:
        sub[PXE_BOOT_ITEM] = boot_item
    return build_tlv(sub)
