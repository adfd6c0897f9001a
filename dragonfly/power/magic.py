"""The Wake-on-LAN magic packet and SecureOn passwords (no I/O)."""

from __future__ import annotations

import ipaddress
import re

from dragonfly.errors import InvalidInput

WOL_PORT = 9


def magic_packet(mac: str, secureon: bytes = b"") -> bytes:
    raw = bytes.fromhex(re.sub(r"[^0-9a-fA-F]", "", mac))
    if len(raw) != 6:
        raise InvalidInput(f"{mac!r} is not a MAC address")
    if len(secureon) not in (0, 4, 6):
        raise InvalidInput("a SecureOn password is 4 or 6 bytes")
    return b"\xff" * 6 + raw * 16 + secureon


def secureon_bytes(password: str) -> bytes:
    """A SecureOn password as hex bytes (aa:bb:cc:dd:ee:ff) or a dotted quad (1.2.3.4)."""
    if not password:
        return b""
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", password):
        try:
            return ipaddress.IPv4Address(password).packed
        except ValueError:
            pass
    raw = re.sub(r"[:\-\s]", "", password)
    if re.fullmatch(r"[0-9a-fA-F]{8}|[0-9a-fA-F]{12}", raw):
        return bytes.fromhex(raw)
    raise InvalidInput("the SecureOn password must be 4 or 6 bytes, as hex "
                       "(aa:bb:cc:dd:ee:ff) or a dotted quad", {"field": "password"})
