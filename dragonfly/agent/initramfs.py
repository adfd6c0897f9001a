"""The agent's initramfs overlay, appended to a stock initrd.

The kernel unpacks every cpio archive it finds in the initrd, one after the other, and a later
file replaces an earlier one of the same name; so appending a small archive carrying ``/init``,
the agent and its helpers turns any busybox initrd into the discovery environment without
rebuilding it. Archives must start on a 4-byte boundary (zero bytes between them are skipped),
hence the padding after the stock image.

The overlay is deterministic (fixed mtimes, fixed inode numbers, gzip without a timestamp), so
its hash serves as an ETag and the server builds it once per process.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from dragonfly.agent import cpio

# Files of the overlay: (path inside the initramfs, package resource, permissions).
_FILES = (
    ("init", "init.sh", 0o755),
    ("dragonfly/agent.sh", "agent.sh", 0o755),
    ("dragonfly/udhcpc.script", "udhcpc.script", 0o755),
)
OVERLAY_MTIME = 0


@dataclass(frozen=True)
class AgentSettings:
    """Tunables written to /dragonfly/config, which the agent sources at start."""

    poll_min: int = 2
    poll_max: int = 300
    backoff_max: int = 60
    http_timeout: int = 20

    def render(self) -> str:
        return (
            "# Written by the Dragonfly server into the discovery overlay.\n"
            f"POLL_MIN={int(self.poll_min)}\n"
            f"POLL_MAX={int(self.poll_max)}\n"
            f"BACKOFF_MAX={int(self.backoff_max)}\n"
            f"HTTP_TIMEOUT={int(self.http_timeout)}\n"
        )


@dataclass(frozen=True)
class Overlay:
    data: bytes
    etag: str  # a strong validator: quoted hex digest of ``data``

    def __len__(self) -> int:
        return len(self.data)


def agent_file(resource: str) -> bytes:
    """One of the agent's shell files, read from the package (works inside the zipapp)."""
    return resources.files("dragonfly.agent").joinpath(resource).read_bytes()


def overlay_entries(settings: AgentSettings | None = None) -> list[cpio.Entry]:
    settings = settings or AgentSettings()
    entries = [
        cpio.directory("dev", 0o755, OVERLAY_MTIME),
        # The kernel opens /dev/console before /init runs; a stock initrd may lack the node.
        cpio.char_device("dev/console", 5, 1, 0o600, OVERLAY_MTIME),
        cpio.directory("run", 0o755, OVERLAY_MTIME),
        cpio.directory("tmp", 0o1777, OVERLAY_MTIME),
    ]
    for path, resource, perm in _FILES:
        entries.append(cpio.regular(path, agent_file(resource), perm, OVERLAY_MTIME))
    entries.append(cpio.regular("dragonfly/config", settings.render().encode(), 0o644,
                                OVERLAY_MTIME))
    return cpio.with_parents(entries, mtime=OVERLAY_MTIME)


def build_overlay(settings: AgentSettings | None = None, *, compress: bool = False) -> Overlay:
    data = cpio.pack(overlay_entries(settings))
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return Overlay(data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')


@functools.lru_cache(maxsize=8)
def cached_overlay(settings: AgentSettings | None = None, compress: bool = False) -> Overlay:
    return build_overlay(settings, compress=compress)


def padding_after(stock_size: int) -> bytes:
    """Zero bytes that bring the stock initrd to the 4-byte boundary the next archive needs."""
    return b"\0" * ((4 - stock_size % 4) % 4)


def appended_size(stock_size: int, overlay: Overlay) -> int:
    return stock_size + len(padding_after(stock_size)) + len(overlay)


def append_overlay(stock: bytes, overlay: Overlay) -> bytes:
    """The whole combined initrd in memory (tests and small images; the server streams)."""
    return stock + padding_after(len(stock)) + overlay.data
