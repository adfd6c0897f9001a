"""The image store's vocabulary: what the engine asks for (``ImageSource``), what it gets
(``Image``), and the two ways it can fail."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dragonfly.errors import Conflict, DragonflyError, InvalidInput
from dragonfly.images.checksums import VendorChecksum

IMAGE = "image"  # store kind: one document per image served, key = its sha256
DOWNLOAD = "image_download"  # store kind: progress and outcome of one download, key = url key
SERVED_FORMATS = ("raw", "gz", "xz", "zst")  # what agents get; they decompress on the fly
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ImageFailed(DragonflyError):
    """The image could not be fetched or prepared (HTTP error, timeout, disk full, a tool
    missing): nothing was stored; the message says why."""

    status = 502
    code = "image_failed"


class ImageRefused(Conflict):
    """The bytes are not what the vendor published (checksum mismatch): deleted, never served."""

    code = "image_refused"


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"not an image digest: {digest!r} (64 lower-case hex digits)")
    return digest


@dataclass(frozen=True)
class ImageSource:
    """Where an image comes from, as a deployment template states it."""

    url: str
    format: str | None = None  # "raw", "gz", "xz", "zst", "qcow2", "tar", "tar.xz" ...; None:
    # found from the bytes (magic numbers), which is what a file name cannot always say
    # (Ubuntu's cloud ".img" files are qcow2)
    checksum_url: str | None = None  # the vendor's SHA256SUMS / SHA512SUMS / CHECKSUM file
    checksum: str | None = None  # or the value itself: "sha256:HEX" / "sha512:HEX"
    template: str | None = None  # the template slug recorded as using the image

    @property
    def file_name(self) -> str:
        """The name the vendor's checksum file lists the image under."""
        path = self.url.split("?", 1)[0].split("#", 1)[0]
        return path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Image:
    """One image in the store, ready to serve at ``url_path``."""

    digest: str  # sha256 of the bytes served (the file sha256/<digest>)
    format: str  # served: "raw", "gz", "xz" or "zst"
    size: int  # bytes served
    raw_size: int  # bytes of the disk image once decompressed: what the agent writes
    raw_sha256: str  # sha256 of those bytes: what the agent's verify step compares
    original_format: str  # what was downloaded or imported: "qcow2", "tar.xz", "gz" ...
    sources: tuple[str, ...] = ()  # URLs, or "import:<file name>"
    templates: tuple[str, ...] = ()
    vendor_checksum: VendorChecksum | None = None
    created: float = 0.0
    last_used: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def url_path(self) -> str:
        return f"/images/{self.digest}"

    @property
    def in_use(self) -> bool:
        """Some template still names it: removing it would break that template's deploys."""
        return bool(self.templates)

    def stream_params(self, base_url: str) -> dict[str, Any]:
        """The ``stream-image`` and ``verify`` action parameters (docs/deployment-protocol.md)
        for this image, given the server's base URL as the agent reaches it."""
        return {"url": base_url.rstrip("/") + self.url_path, "format": self.format,
                "size": self.size, "raw_size": self.raw_size, "sha256": self.raw_sha256}

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "format": self.format, "size": self.size,
                "raw_size": self.raw_size, "raw_sha256": self.raw_sha256,
                "original_format": self.original_format, "sources": list(self.sources),
                "templates": list(self.templates),
                "vendor_checksum": (self.vendor_checksum.as_dict()
                                    if self.vendor_checksum else None),
                "created": self.created, "last_used": self.last_used}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Image:
        vendor = data.get("vendor_checksum")
        return cls(digest=str(data["digest"]), format=str(data["format"]),
                   size=int(data["size"]), raw_size=int(data["raw_size"]),
                   raw_sha256=str(data["raw_sha256"]),
                   original_format=str(data.get("original_format", data["format"])),
                   sources=tuple(data.get("sources", ())),
                   templates=tuple(data.get("templates", ())),
                   vendor_checksum=VendorChecksum.from_dict(vendor) if vendor else None,
                   created=float(data.get("created", 0.0)),
                   last_used=float(data.get("last_used", 0.0)))
