"""The root partition of a stored image, found in the image's own GPT, for templates that name
their root filesystem only by GPT type or filesystem type (Debian: type "Linux root (x86-64)";
Rocky: "the largest xfs").

Tinkerbell's writefile and kexec need a device path. A partition number is forbidden (layouts
change between image builds), and ``/dev/disk/by-parttype/`` links exist only with recent
udev. So the partition is found here, by the template's own rule (its type GUID, else the
largest partition holding its filesystem type), when the image is in the store, and named by
its unique partition GUID: ``/dev/disk/by-partuuid/<guid>``. That GUID is written in the
image's partition table, so it is the same on every disk the image is written to, and udev has
made by-partuuid links for over a decade (the same rule as the by-label links).

Everything here blocks (file reads, decompression): call it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dragonfly.errors import InvalidInput
from dragonfly.images.formats import open_decompressed

SECTOR_SIZES = (512, 4096)
SIGNATURE = b"EFI PART"
# Filesystem magic numbers: (offset in the partition, bytes).
MAGIC: dict[str, tuple[int, bytes]] = {
    "ext4": (1024 + 56, b"\x53\xef"), "ext3": (1024 + 56, b"\x53\xef"),
    "ext2": (1024 + 56, b"\x53\xef"), "xfs": (0, b"XFSB"), "btrfs": (0x10040, b"_BHRfS_M"),
}
HEAD_BYTES = 1 << 20  # the protective MBR, the header and (in practice) the entries
SNIFF_BYTES = 0x10048  # enough of each partition for every magic above
COMPRESSIONS = ("gz", "xz", "zst", "bz2")


@dataclass(frozen=True)
class Partition:
    number: int  # for messages only: never used to find it
    type_guid: str
    part_guid: str
    first_lba: int
    last_lba: int
    name: str
    sector: int

    @property
    def start(self) -> int:
        return self.first_lba * self.sector

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * self.sector


@dataclass(frozen=True)
class RootPartition:
    partuuid: str
    parttype: str
    fstype: str
    how: str  # the rule that found it, for the panel and logs

    def to_dict(self) -> dict[str, str]:
        return {"partuuid": self.partuuid, "parttype": self.parttype, "fstype": self.fstype,
                "how": self.how}


class _Reader:
    """Reads from a seekable file, or forward through a stream (a compressed image is
    decompressed only as far as the last partition looked at); the first ``HEAD_BYTES`` are
    kept, so reads there can come in any order."""

    def __init__(self, stream: IO[bytes], seekable: bool) -> None:
        self.stream, self.seekable = stream, seekable
        self.head = stream.read(HEAD_BYTES)
        self.pos = len(self.head)

    def read_at(self, offset: int, n: int) -> bytes:
        if offset + n <= len(self.head):
            return self.head[offset:offset + n]
        if self.seekable:
            self.stream.seek(offset)
            return self.stream.read(n)
        kept = self.head[offset:] if offset < len(self.head) else b""
        offset += len(kept)
        if offset < self.pos:
            raise InvalidInput("the image's partitions are out of order")
        while self.pos < offset:
            skipped = self.stream.read(min(offset - self.pos, 1 << 20))
            if not skipped:
                return kept
            self.pos += len(skipped)
        data = self.stream.read(n - len(kept))
        self.pos += len(data)
        return kept + data


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def read_gpt(reader: _Reader) -> list[Partition]:
    """The partitions of the GPT at the start of the image (512- or 4096-byte sectors)."""
    head = reader.head
    for sector in SECTOR_SIZES:
        header = head[sector:sector + 92]
        if header[:8] == SIGNATURE:
            break
    else:
        raise InvalidInput("the image has no GPT partition table")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if not 128 <= entry_size <= 4096 or count > 1024:
        raise InvalidInput("the image's GPT header is damaged")
    at, length = entries_lba * sector, count * entry_size
    table = reader.read_at(at, length)
    if len(table) < count * entry_size:
        raise InvalidInput("the image's GPT partition entries are cut short")
    found: list[Partition] = []
    for index in range(count):
        entry = table[index * entry_size:(index + 1) * entry_size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", errors="replace").rstrip("\x00")
        found.append(Partition(index + 1, _guid(entry[:16]), _guid(entry[16:32]), first, last,
                               name, sector))
    return found


def _fstype(reader: _Reader, part: Partition) -> str:
    data = reader.read_at(part.start, SNIFF_BYTES)
    for fstype, (offset, magic) in MAGIC.items():
        if data[offset:offset + len(magic)] == magic:
            return "ext4" if fstype.startswith("ext") else fstype
    return ""


def find_root(path: Path, image_format: str, *, parttype: str = "", fstype: str = ""
              ) -> RootPartition:
    """The root partition of the image file ``path`` (served as ``image_format``): the
    partition of GPT type ``parttype`` (the largest, when several), else the largest holding a
    ``fstype`` filesystem. InvalidInput says why none is found."""
    compression = image_format if image_format in COMPRESSIONS else "none"
    if image_format not in (*COMPRESSIONS, "raw"):
        raise InvalidInput(f"cannot read the partition table of a {image_format} image")
    want_fs = "ext4" if fstype.startswith("ext") else fstype
    with open_decompressed(path, compression) as stream:
        reader = _Reader(stream, compression == "none")
        parts = read_gpt(reader)
        if parttype:
            typed = [p for p in parts if p.type_guid == parttype.lower()]
            if typed:
                best = max(typed, key=lambda p: p.size)
                return RootPartition(best.part_guid, best.type_guid, want_fs,
                                     f"GPT type {parttype}")
        if want_fs:
            sized: list[tuple[int, Partition]] = []
            for part in sorted(parts, key=lambda p: p.first_lba):
                if _fstype(reader, part) == want_fs:
                    sized.append((part.size, part))
            if sized:
                best = max(sized, key=lambda s: s[0])[1]
                return RootPartition(best.part_guid, best.type_guid, want_fs,
                                     f"the largest {want_fs} partition")
    wanted = " or ".join(filter(None, (parttype and f"of GPT type {parttype}",
                                       want_fs and f"holding {want_fs}")))
    raise InvalidInput(f"the image has no partition {wanted or 'to go by'} "
                       f"({len(parts)} partition(s) in its GPT)")
