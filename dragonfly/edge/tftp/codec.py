"""TFTP packets as pure data: bytes <-> packet, option negotiation, request-path checks.

RFC 1350 (the protocol), 2347 (option extension, OACK), 2348 (blksize), 2349 (timeout, tsize)
and 7440 (windowsize). Nothing here does I/O, and nothing raises on bad input: ``decode``
returns ``Invalid(reason)``, ``check_filename`` returns a refusal with a TFTP error code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6

MIN_BLKSIZE = 8  # RFC 2348
MAX_BLKSIZE = 65464  # RFC 2348: largest that fits an IPv4 UDP datagram
DEFAULT_BLKSIZE = 512
MAX_WINDOWSIZE = 65535  # RFC 7440
MODES = ("netascii", "octet", "mail")


class ErrorCode(enum.IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347


@dataclass(frozen=True)
class Request:
    """RRQ or WRQ. ``mode`` is lower-cased; option names are lower-cased, first one wins."""

    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class OptionAck:
    options: dict[str, str]


@dataclass(frozen=True)
class Invalid:
    reason: str


Packet = Request | Data | Ack | Error | OptionAck


def _split_strings(body: bytes) -> list[bytes] | None:
    """NUL-terminated strings; None when the last one is not terminated."""
    if not body.endswith(b"\0"):
        return None
    return body[:-1].split(b"\0")


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _options(fields: list[bytes]) -> dict[str, str] | Invalid:
    options: dict[str, str] = {}
    # Some PXE ROMs pad requests with NULs: an empty name ends the option list.
    for i in range(0, len(fields) - 1, 2):
        name_raw, value_raw = fields[i], fields[i + 1]
        if not name_raw:
            break
        name, value = _text(name_raw), _text(value_raw)
        if name is None or value is None:
            return Invalid("option not UTF-8")
        options.setdefault(name.lower(), value)
    return options


def decode(data: bytes) -> Packet | Invalid:
    """Parse one datagram. Never raises."""
    if len(data) < 2:
        return Invalid("shorter than an opcode")
    opcode = (data[0] << 8) | data[1]
    if opcode == OP_ACK:
        # Longer ACKs (trailing padding) are accepted: the block number is what matters.
        if len(data) < 4:
            return Invalid("truncated ACK")
        return Ack((data[2] << 8) | data[3])
    if opcode == OP_DATA:
        if len(data) < 4:
            return Invalid("truncated DATA")
        return Data((data[2] << 8) | data[3], bytes(data[4:]))
    if opcode in (OP_RRQ, OP_WRQ):
        fields = _split_strings(bytes(data[2:]))
        if fields is None or len(fields) < 2:
            return Invalid("request without NUL-terminated filename and mode")
        filename, mode = _text(fields[0]), _text(fields[1])
        if filename is None or mode is None:
            return Invalid("filename or mode not UTF-8")
        opts = _options(fields[2:])
        if isinstance(opts, Invalid):
            return opts
        return Request(opcode, filename, mode.lower(), opts)
    if opcode == OP_ERROR:
        if len(data) < 4:
            return Invalid("truncated ERROR")
        message = bytes(data[4:]).split(b"\0", 1)[0].decode("utf-8", "replace")
        return Error((data[2] << 8) | data[3], message)
    if opcode == OP_OACK:
        if len(data) == 2:
            return OptionAck({})
        fields = _split_strings(bytes(data[2:]))
        if fields is None:
            return Invalid("OACK option not NUL-terminated")
        if len(fields) % 2:
            return Invalid("OACK option without value")
        opts = _options(fields)
        if isinstance(opts, Invalid):
            return opts
        return OptionAck(opts)
    return Invalid(f"unknown opcode {opcode}")


def _strings(*parts: str) -> bytes:
    return b"".join(p.encode("utf-8") + b"\0" for p in parts)


def encode_data(block: int, payload: bytes | memoryview) -> bytes:
    return bytes((0, OP_DATA, (block >> 8) & 0xFF, block & 0xFF)) + payload


def encode_ack(block: int) -> bytes:
    return bytes((0, OP_ACK, (block >> 8) & 0xFF, block & 0xFF))


def encode_error(code: int, message: str) -> bytes:
    return bytes((0, OP_ERROR, (code >> 8) & 0xFF, code & 0xFF)) + _strings(message)


def encode_oack(options: Mapping[str, str]) -> bytes:
    pairs = [s for item in options.items() for s in item]
    return bytes((0, OP_OACK)) + _strings(*pairs)


def encode_request(opcode: int, filename: str, mode: str = "octet",
                   options: Mapping[str, str] | None = None) -> bytes:
    pairs = [s for item in (options or {}).items() for s in item]
    return bytes((0, opcode)) + _strings(filename, mode, *pairs)


def encode(packet: Packet) -> bytes:
    if isinstance(packet, Request):
        return encode_request(packet.opcode, packet.filename, packet.mode, packet.options)
    if isinstance(packet, Data):
        return encode_data(packet.block, packet.payload)
    if isinstance(packet, Ack):
        return encode_ack(packet.block)
    if isinstance(packet, Error):
        return encode_error(packet.code, packet.message)
    return encode_oack(packet.options)


# --- option negotiation -------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """What the server will use, and the OACK to send (empty: no OACK, start with DATA 1)."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float | None = None
    tsize_requested: bool = False
    oack: dict[str, str] = field(default_factory=dict)


def _int(value: str) -> int | None:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    return int(value)


def negotiate(options: Mapping[str, str], *, file_size: int,
              max_blksize: int = MAX_BLKSIZE, max_windowsize: int = 1) -> Negotiated:
    """Accept, clamp or ignore each requested option (RFC 2347: unknown or unusable ones are
    simply left out of the OACK)."""
    blksize, windowsize, timeout, tsize = DEFAULT_BLKSIZE, 1, None, False
    oack: dict[str, str] = {}
    for name, raw in options.items():
        value = _int(raw)
        if name == "blksize" and value is not None and value >= MIN_BLKSIZE:
            blksize = min(value, max_blksize, MAX_BLKSIZE)
            oack[name] = str(blksize)
        elif name == "tsize" and value is not None:
            # A client sends 0 in an RRQ; answer the real size whatever it sent.
            tsize = True
            oack[name] = str(file_size)
        elif name == "timeout" and value is not None and 1 <= value <= 255:
            timeout = float(value)
            oack[name] = str(value)
        elif name == "windowsize" and value is not None and value >= 1 and max_windowsize > 1:
            windowsize = min(value, max_windowsize, MAX_WINDOWSIZE)
            oack[name] = str(windowsize)
    return Negotiated(blksize, windowsize, timeout, tsize, oack)


# --- request paths ------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode
    message: str


def check_filename(filename: str) -> str | Refusal:
    """Normalise a requested path to a relative '/'-separated one, or refuse it.

    Backslashes count as separators (Windows-style PXE clients send them). Absolute paths,
    drive letters and any '..' component are refused outright, whether or not such a file
    exists, so the answer leaks nothing about the filesystem.
    """
    if not filename:
        return Refusal(ErrorCode.FILE_NOT_FOUND, "empty filename")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        return Refusal(ErrorCode.ACCESS_VIOLATION, "control character in filename")
    path = filename.replace("\\", "/")
    if path.startswith("/") or (len(path) >= 2 and path[1] == ":"):
        return Refusal(ErrorCode.ACCESS_VIOLATION, "absolute paths are not served")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "'..' is not allowed in paths")
    if not parts:
        return Refusal(ErrorCode.FILE_NOT_FOUND, "empty filename")
    return "/".join(parts)


def to_netascii(data: bytes) -> bytes:
    """RFC 764 line endings: LF -> CR LF, bare CR -> CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
