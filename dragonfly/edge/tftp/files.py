"""What a TFTP transfer sends: the resolver's answer loaded into memory, with a small cache.

Loaders are around 1 MB and a rack boots many machines at once, so every concurrent download
of ``ipxe.efi`` shares one ``bytes`` object. A cache entry is reused while the file's
(inode, size, mtime) are unchanged. Everything here blocks (stat, read) and runs in a worker
thread, called through ``asyncio.to_thread`` by the server.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dragonfly.edge.tftp.codec import ErrorCode, Refusal, to_netascii

# The resolver maps a checked, relative, '/'-separated request path to the file to serve:
# a filesystem path, the content itself, or None for "no such file".
Resolver = Callable[[str], Path | bytes | None]


@dataclass(frozen=True)
class Content:
    data: bytes
    source: str  # where it came from, for logs and the transfer record


class FileCache:
    def __init__(self, *, max_file_size: int, max_bytes: int) -> None:
        self.max_file_size = max_file_size
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, bool], tuple[tuple[int, int, int], bytes]] = (
            OrderedDict())
        self._total = 0
        self._lock = threading.Lock()

    def load(self, resolver: Resolver, path: str, netascii: bool) -> Content | Refusal:
        """Resolve and read; runs in a worker thread."""
        try:
            target = resolver(path)
        except Exception as exc:  # a broken resolver must not kill the server
            return Refusal(ErrorCode.NOT_DEFINED, f"resolver failed: {type(exc).__name__}")
        if target is None:
            return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found")
        if isinstance(target, bytes):
            if len(target) > self.max_file_size:
                return _too_large()
            return Content(to_netascii(target) if netascii else target, "generated")
        return self._read(target, netascii)

    def _read(self, target: Path, netascii: bool) -> Content | Refusal:
        key = (str(target), netascii)
        try:
            # O_NONBLOCK: opening a FIFO planted where a loader should be must not hang.
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found")
                if st.st_size > self.max_file_size:
                    return _too_large()
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                with self._lock:
                    hit = self._entries.get(key)
                    if hit is not None and hit[0] == stamp:
                        self._entries.move_to_end(key)
                        return Content(hit[1], str(target))
                data = f.read(self.max_file_size + 1)
        except FileNotFoundError:
            return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found")
        except OSError as exc:
            return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot read file: {exc.strerror}")
        if len(data) > self.max_file_size:  # grew since fstat
            return _too_large()
        if netascii:
            data = to_netascii(data)
        self._store(key, stamp, data)
        return Content(data, str(target))

    def _store(self, key: tuple[str, bool], stamp: tuple[int, int, int], data: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._total -= len(old[1])
            if len(data) > self.max_bytes:
                return
            self._entries[key] = (stamp, data)
            self._total += len(data)
            while self._total > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total -= len(evicted)


def _too_large() -> Refusal:
    return Refusal(ErrorCode.DISK_FULL, "file too large for TFTP here; fetch it over HTTP")
