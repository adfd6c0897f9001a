"""What a downloaded file is, and turning it into what agents are served.

Every function here but ``convert_qcow2`` blocks (file I/O, decompression): callers run them
with ``asyncio.to_thread``.

What is served:
* raw, gz, xz and zst files as they are: the agent decompresses while it writes (busybox has
  gunzip and xzcat; the discovery image brings zstd), so the network carries the small file.
* a tar archive (any compression): the one disk image inside (the largest ``*.raw``/``*.img``
  member, else the largest regular file) extracted and served **raw**. Recompressing would
  save bandwidth but cost minutes of CPU per image; raw is the simplest and is written
  sparse, so the zeros of a mostly empty disk take no space.
* qcow2: converted with ``qemu-img convert -O raw`` (sparse too) and served raw.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from dragonfly.images.model import ImageFailed

CHUNK = 1 << 20
_MAGIC = {b"\x1f\x8b": "gz", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zst", b"BZh": "bz2"}
_QCOW = b"QFI\xfb"
QEMU_MISSING = ("qemu-img is missing: it converts qcow2 images to raw. Install it with "
                "`apt-get install qemu-utils` (`dragonfly install` brings it in)")
ZSTD_MISSING = "zstd is missing: install it with `apt-get install zstd`"


@dataclass(frozen=True)
class Kind:
    """A file's layout: a container ("plain" disk bytes, "tar", "qcow2") and a compression
    ("none", "gz", "xz", "zst", "bz2")."""

    container: str
    compression: str

    @property
    def name(self) -> str:
        if self.container == "plain":
            return "raw" if self.compression == "none" else self.compression
        return self.container if self.compression == "none" else \
            f"{self.container}.{self.compression}"

    @property
    def served_as_is(self) -> bool:
        return self.container == "plain"


def parse_kind(name: str) -> Kind:
    """A format as a template or ``--format`` names it: raw, gz, xz, zst, qcow2, tar, tar.gz,
    tgz, tar.xz, txz, tar.zst, tar.bz2 (``raw.xz`` is the same as ``xz``)."""
    text = name.strip().lower().removeprefix("raw.").removeprefix("img.")
    text = {"tgz": "tar.gz", "txz": "tar.xz", "tzst": "tar.zst", "tbz2": "tar.bz2",
            "img": "raw", "zstd": "zst", "gzip": "gz"}.get(text, text)
    if text == "raw":
        return Kind("plain", "none")
    if text in ("gz", "xz", "zst"):
        return Kind("plain", text)
    if text == "qcow2":
        return Kind("qcow2", "none")
    container, _, compression = text.partition(".")
    if container == "tar" and compression in ("", "gz", "xz", "zst", "bz2"):
        return Kind("tar", compression or "none")
    raise ImageFailed(f"unknown image format {name!r}: raw, gz, xz, zst, qcow2 or tar "
                      "(tar.gz, tar.xz, tar.zst, tar.bz2)")


def sniff(path: Path) -> Kind:
    """The file's layout from its bytes: compression magic, then the tar (``ustar`` at offset
    257) or qcow2 magic of what it decompresses to."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    compression = next((c for magic, c in _MAGIC.items() if head.startswith(magic)), "none")
    if compression == "none":
        inner = _read_head(path, 512 + 8)
    else:
        with open_decompressed(path, compression) as stream:
            inner = stream.read(512 + 8)
    if inner.startswith(_QCOW):
        if compression != "none":
            raise ImageFailed(f"a {compression}-compressed qcow2 is not supported: "
                              "decompress it first")
        return Kind("qcow2", "none")
    if inner[257:262] == b"ustar":
        return Kind("tar", compression)
    if compression == "bz2":
        raise ImageFailed("a bzip2-compressed disk image is not supported (agents decompress "
                          "gz, xz and zst): recompress it with xz or zstd")
    return Kind("plain", compression)


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


@contextlib.contextmanager
def open_decompressed(path: Path, compression: str) -> Iterator[IO[bytes]]:
    """The decompressed bytes of ``path`` as a stream (zstd through the ``zstd`` command:
    the standard library has no zstd)."""
    if compression == "none":
        with open(path, "rb") as fh:
            yield fh
    elif compression == "gz":
        with gzip.open(path, "rb") as gz:
            yield cast(IO[bytes], gz)
    elif compression == "xz":
        with lzma.open(path, "rb") as xz:
            yield xz
    elif compression == "bz2":
        with bz2.open(path, "rb") as bz:
            yield bz
    elif compression == "zst":
        if shutil.which("zstd") is None:
            raise ImageFailed(ZSTD_MISSING)
        proc = subprocess.Popen(["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        tracked = _EofTracking(proc.stdout)
        try:
            yield cast(IO[bytes], tracked)
        finally:
            # Closing our end first ends a zstd the caller stopped reading early (sniffing).
            proc.stdout.close()
            code = proc.wait()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
        if tracked.eof and code != 0:  # a truncated or corrupt file, not an early stop
            raise ImageFailed(f"zstd could not decompress {path.name}: {err or code}")
    else:
        raise ImageFailed(f"unknown compression {compression!r}")


class _EofTracking:
    """A pipe that remembers whether its reader got to the end."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if not data and n != 0:
            self.eof = True
        return data


def hash_stream(stream: IO[bytes], algorithms: tuple[str, ...],
                copy_to: Path | None = None) -> tuple[int, dict[str, str]]:
    """Size and hex digests of everything ``stream`` yields; copied to ``copy_to`` (written
    sparse: all-zero chunks are skipped, the file is extended at the end) when given."""
    hashers = {alg: hashlib.new(alg) for alg in algorithms}
    size = 0
    out = open(copy_to, "wb") if copy_to is not None else None  # noqa: SIM115 - closed below
    try:
        while chunk := stream.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
            if out is not None:
                if chunk.count(0) == len(chunk):
                    out.seek(len(chunk), os.SEEK_CUR)
                else:
                    out.write(chunk)
            size += len(chunk)
        if out is not None:
            out.truncate(size)
    except (OSError, EOFError, lzma.LZMAError, tarfile.TarError) as exc:
        raise ImageFailed(f"cannot read the image: {exc}") from None
    finally:
        if out is not None:
            out.close()
    return size, {alg: h.hexdigest() for alg, h in hashers.items()}


def hash_file(path: Path, algorithms: tuple[str, ...],
              copy_to: Path | None = None) -> tuple[int, dict[str, str]]:
    with open(path, "rb") as fh:
        return hash_stream(fh, algorithms, copy_to)


def raw_info(path: Path, compression: str) -> tuple[int, str]:
    """Size and sha256 of the disk image ``path`` decompresses to: what the agent writes and
    then verifies on the disk."""
    with open_decompressed(path, compression) as stream:
        size, digests = hash_stream(stream, ("sha256",))
    return size, digests["sha256"]


def choose_member(path: Path, compression: str) -> tuple[str, int]:
    """The disk image inside a tar: the largest ``*.raw``/``*.img`` regular file, else the
    largest regular file. Streamed (``r|``) so zstd and huge archives need no seeking."""
    best: tuple[bool, int, str] | None = None
    try:
        with open_decompressed(path, compression) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isreg():
                    named = member.name.lower().endswith((".raw", ".img"))
                    best = max(best or (named, member.size, member.name),
                               (named, member.size, member.name))
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        raise ImageFailed(f"cannot read the tar archive {path.name}: {exc}") from None
    if best is None:
        raise ImageFailed(f"the tar archive {path.name} holds no regular file")
    return best[2], best[1]


def extract_member(path: Path, compression: str, name: str, dest: Path) -> tuple[int, str]:
    """Write the member ``name`` to ``dest`` (sparse); its size and sha256."""
    try:
        with open_decompressed(path, compression) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isreg() and member.name == name:
                    data = tar.extractfile(member)
                    assert data is not None  # a regular file always has data
                    size, digests = hash_stream(data, ("sha256",), copy_to=dest)
                    # Drain the rest so a zstd pipe ends cleanly rather than being killed.
                    for _ in tar:
                        pass
                    return size, digests["sha256"]
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        raise ImageFailed(f"cannot extract {name} from {path.name}: {exc}") from None
    raise ImageFailed(f"{name} vanished from the tar archive {path.name}")


async def qcow2_virtual_size(path: Path) -> int:
    """The disk size a qcow2 converts to (its raw file is sparse: usually far less on disk)."""
    out = await _qemu_img("info", "--output=json", "-f", "qcow2", str(path))
    info: dict[str, Any] = json.loads(out)
    return int(info["virtual-size"])


async def convert_qcow2(src: Path, dest: Path) -> None:
    """``qemu-img convert -O raw`` in a subprocess: the loop keeps serving meanwhile."""
    await _qemu_img("convert", "-q", "-f", "qcow2", "-O", "raw", str(src), str(dest))


async def _qemu_img(*args: str) -> str:
    if shutil.which("qemu-img") is None:
        raise ImageFailed(QEMU_MISSING)
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ImageFailed(f"qemu-img {args[0]} failed: "
                          f"{err.decode(errors='replace').strip() or proc.returncode}")
    return out.decode(errors="replace")
