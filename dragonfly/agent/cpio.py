"""The newc ("SVR4 no CRC") cpio format, as the Linux kernel unpacks initramfs archives.

Each entry is a 110-byte ASCII header (magic ``070701`` and 13 eight-digit hex fields), the
NUL-terminated name padded to a 4-byte boundary, then the data padded to 4 bytes. The archive
ends with an entry named ``TRAILER!!!``. The writer is deterministic: inode numbers count up
from 1 and every entry carries the mtime it is given (0 by default), so the same input always
gives the same bytes (the server caches the agent overlay under an ETag).

The reader exists for tests and diagnostics; it never raises on bad input but returns a result
with ``invalid_reason``.
"""

from __future__ import annotations

import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
           "rdevmajor", "rdevminor", "namesize", "check")


def _pad4(length: int) -> int:
    return (4 - length % 4) % 4


@dataclass(frozen=True)
class Entry:
    """One archive member. ``mode`` holds the file type bits and the permissions."""

    name: str
    mode: int
    data: bytes = b""
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def target(self) -> str:
        """A symlink's target (stored as the entry's data)."""
        return self.data.decode("utf-8", "surrogateescape")


def directory(name: str, perm: int = 0o755, mtime: int = 0) -> Entry:
    return Entry(name, stat.S_IFDIR | perm, mtime=mtime)


def regular(name: str, data: bytes, perm: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data, mtime=mtime)


def symlink(name: str, target: str, mtime: int = 0) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode(), mtime=mtime)


def char_device(name: str, major: int, minor: int, perm: int = 0o600, mtime: int = 0) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, mtime=mtime, rdevmajor=major, rdevminor=minor)


def _clean_name(name: str) -> str:
    # The kernel and cpio(1) expect relative names ("init", "bin/sh"); "." is the root itself.
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name or "."


def _header(values: dict[str, int]) -> bytes:
    out = bytearray(MAGIC)
    for name in _FIELDS:
        value = values.get(name, 0)
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"cpio field {name}={value} does not fit in 32 bits")
        out += b"%08X" % value
    return bytes(out)


def _member(ino: int, entry: Entry) -> bytes:
    name = _clean_name(entry.name).encode("utf-8", "surrogateescape") + b"\0"
    data = entry.data
    if entry.is_dir or stat.S_ISCHR(entry.mode) or stat.S_ISBLK(entry.mode):
        data = b""
    header = _header({
        "ino": ino, "mode": entry.mode, "uid": entry.uid, "gid": entry.gid,
        "nlink": 2 if entry.is_dir else 1, "mtime": entry.mtime, "filesize": len(data),
        "rdevmajor": entry.rdevmajor, "rdevminor": entry.rdevminor, "namesize": len(name),
    })
    head = header + name
    return head + b"\0" * _pad4(len(head)) + data + b"\0" * _pad4(len(data))


def pack(entries: Iterable[Entry]) -> bytes:
    """The whole archive, trailer included. Raises ValueError on impossible entries."""
    parts = [_member(ino, entry) for ino, entry in enumerate(entries, start=1)]
    parts.append(_member(0, Entry(TRAILER, 0)))
    return b"".join(parts)


def with_parents(entries: Iterable[Entry], perm: int = 0o755, mtime: int = 0) -> list[Entry]:
    """``entries`` preceded by every parent directory they need that is not listed itself.

    The kernel does not create missing parents, so an archive appended to a stock initrd must
    carry its own directories (re-creating an existing one is harmless).
    """
    entries = list(entries)
    listed = {_clean_name(e.name) for e in entries if e.is_dir}
    out: list[Entry] = []
    for entry in entries:
        parts = _clean_name(entry.name).split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in listed:
                listed.add(parent)
                out.append(directory(parent, perm, mtime))
        out.append(entry)
    return out


# --- reader -----------------------------------------------------------------------------------

@dataclass
class ReadResult:
    entries: list[Entry] = field(default_factory=list)
    end: int = 0  # offset just past the trailer (and its padding)
    invalid_reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.invalid_reason

    def by_name(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries}


def unpack(data: bytes, offset: int = 0) -> ReadResult:
    """Parse one newc archive starting at ``offset``; never raises."""
    result = ReadResult()
    pos = offset
    while True:
        if pos + HEADER_LEN > len(data):
            result.invalid_reason = f"truncated header at offset {pos}"
            return result
        head = data[pos:pos + HEADER_LEN]
        if head[:6] != MAGIC:
            result.invalid_reason = f"bad magic {head[:6]!r} at offset {pos}"
            return result
        try:
            values = {name: int(head[6 + 8 * i:14 + 8 * i], 16)
                      for i, name in enumerate(_FIELDS)}
        except ValueError:
            result.invalid_reason = f"non-hex header field at offset {pos}"
            return result
        name_start = pos + HEADER_LEN
        name_end = name_start + values["namesize"]
        if values["namesize"] < 1 or name_end > len(data) or data[name_end - 1] != 0:
            result.invalid_reason = f"bad name at offset {pos}"
            return result
        name = data[name_start:name_end - 1].decode("utf-8", "surrogateescape")
        data_start = name_end + _pad4(name_end - pos)
        data_end = data_start + values["filesize"]
        if data_end > len(data):
            result.invalid_reason = f"truncated data of {name!r} at offset {data_start}"
            return result
        pos = data_end + _pad4(values["filesize"])
        if name == TRAILER:
            result.end = min(pos, len(data))
            return result
        result.entries.append(Entry(
            name, values["mode"], data[data_start:data_end], values["mtime"], values["uid"],
            values["gid"], values["rdevmajor"], values["rdevminor"]))


def unpack_all(data: bytes) -> ReadResult:
    """Every archive in a concatenation, plain or gzip, zero padding between them skipped.

    Entries come in archive order; ``by_name`` then keeps the last of each name, as the kernel
    does when it unpacks them one after the other.
    """
    merged = ReadResult()
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if data[pos:pos + 2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(wbits=31)
            try:
                inner = inflater.decompress(data[pos:])
            except zlib.error as exc:
                merged.invalid_reason = f"bad gzip member at offset {pos}: {exc}"
                return merged
            if not inflater.eof:
                merged.invalid_reason = f"truncated gzip member at offset {pos}"
                return merged
            part = unpack_all(inner)
            merged.entries.extend(part.entries)
            if not part.ok:
                merged.invalid_reason = part.invalid_reason
                return merged
            pos = len(data) - len(inflater.unused_data)
            continue
        part = unpack(data, pos)
        merged.entries.extend(part.entries)
        if not part.ok:
            merged.invalid_reason = part.invalid_reason
            return merged
        pos = part.end
    merged.end = pos
    return merged
