"""The iPXE boot loaders: which ones exist, and where each one is found.

The manifest (``ipxe/manifest.toml``, shipped as package ``dragonfly.ipxe``) lists the
loaders. A loader is looked up first in the operator's override directory
``<state_dir>/loaders/``, then among the bundled copies in ``dragonfly.ipxe/loaders/`` (put
there at build time by ``scripts/fetch_loaders.py``), read through ``importlib.resources`` so
it works from the shiv zipapp. Only plain filenames listed in the manifest are ever looked
up, so no request can name another file.

Lookups stat files: call them from a worker thread when on the event loop (the TFTP server's
resolver already runs in one).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import tomllib
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACKAGE = "dragonfly.ipxe"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class LoaderSpec:
    filename: str
    arch: str
    dhcp_arch: tuple[int, ...]
    description: str
    debian_path: str  # empty: no Debian package provides it


@dataclass(frozen=True)
class Manifest:
    loaders: tuple[LoaderSpec, ...]
    source: dict[str, str] = field(default_factory=dict)

    def get(self, filename: str) -> LoaderSpec | None:
        for spec in self.loaders:
            if spec.filename == filename:
                return spec
        return None


@dataclass(frozen=True)
class LoaderStatus:
    spec: LoaderSpec
    origin: str | None  # "override", "bundled" or None (missing)
    path: Path | None  # None when missing, or bundled inside an archive
    size: int | None


def bundled_root() -> Traversable | None:
    """``dragonfly.ipxe`` as a resource tree; from a source checkout that is not installed,
    the top-level ``ipxe/`` directory next to the package."""
    try:
        return importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parent.parent / "ipxe"
        return checkout if (checkout / "manifest.toml").is_file() else None


def parse_manifest(text: str) -> Manifest:
    """Parse and validate manifest.toml. Raises ValueError on a broken manifest (ours)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"manifest.toml: {exc}") from exc
    loaders = []
    for i, raw in enumerate(doc.get("loader", [])):
        loaders.append(_spec(raw, i))
    names = [s.filename for s in loaders]
    if len(set(names)) != len(names):
        raise ValueError("manifest.toml: duplicate loader filename")
    source = {str(k): str(v) for k, v in doc.get("source", {}).items()}
    return Manifest(tuple(loaders), source)


def _spec(raw: Any, index: int) -> LoaderSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"manifest.toml: loader #{index} is not a table")
    filename = raw.get("filename")
    if not isinstance(filename, str) or not _PLAIN_NAME.fullmatch(filename):
        raise ValueError(f"manifest.toml: loader #{index}: filename must be a plain name")
    arches = raw.get("dhcp_arch", [])
    if not isinstance(arches, list) or not all(isinstance(a, int) for a in arches):
        raise ValueError(f"manifest.toml: {filename}: dhcp_arch must be a list of integers")
    return LoaderSpec(filename=filename, arch=str(raw.get("arch", "")),
                      dhcp_arch=tuple(arches), description=str(raw.get("description", "")),
                      debian_path=str(raw.get("debian_path", "")))


class Loaders:
    """Finds loaders: override directory first, then the bundled copies."""

    def __init__(self, state_dir: Path | None, *, bundled: Traversable | None = None,
                 manifest: Manifest | None = None) -> None:
        self.override_dir = state_dir / "loaders" if state_dir is not None else None
        self.bundled = bundled if bundled is not None else bundled_root()
        if manifest is None:
            manifest = self._read_manifest()
        self.manifest = manifest

    def _read_manifest(self) -> Manifest:
        if self.bundled is None:
            log.warning("package %s not found: no loader manifest", PACKAGE)
            return Manifest(())
        return parse_manifest((self.bundled / "manifest.toml").read_text(encoding="utf-8"))

    @property
    def names(self) -> list[str]:
        return [spec.filename for spec in self.manifest.loaders]

    def locate(self, filename: str) -> Path | bytes | None:
        """The loader's file (a Path), its content when bundled inside an archive (bytes),
        or None when the name is not a manifest loader or no copy exists.

        Matches ``dragonfly.edge.tftp.Resolver`` so it can serve TFTP directly."""
        spec = self.manifest.get(filename)
        if spec is None:
            return None
        found = self._find(spec)
        return found[1] if found is not None else None

    def _find(self, spec: LoaderSpec) -> tuple[str, Path | bytes] | None:
        # spec.filename is a validated plain name: joining it cannot leave either directory.
        if self.override_dir is not None:
            candidate = self.override_dir / spec.filename
            if candidate.is_file():
                return "override", candidate
        if self.bundled is not None:
            resource = self.bundled / "loaders" / spec.filename
            if resource.is_file():
                if isinstance(resource, Path):
                    return "bundled", resource
                return "bundled", resource.read_bytes()  # inside a zip: no filesystem path
        return None

    def status(self) -> list[LoaderStatus]:
        result = []
        for spec in self.manifest.loaders:
            found = self._find(spec)
            if found is None:
                result.append(LoaderStatus(spec, None, None, None))
            elif isinstance(found[1], bytes):
                result.append(LoaderStatus(spec, found[0], None, len(found[1])))
            else:
                result.append(LoaderStatus(spec, found[0], found[1], found[1].stat().st_size))
        return result

    def missing(self) -> list[str]:
        return [s.spec.filename for s in self.status() if s.origin is None]

    def describe(self) -> list[str]:
        """Plain-language lines for ``dragonfly serve`` and ``status``."""
        lines = []
        for st in self.status():
            if st.origin is None:
                where = (f"place it at {self.override_dir / st.spec.filename}"
                         if self.override_dir is not None else "no override directory")
                lines.append(f"loader {st.spec.filename} ({st.spec.arch}): MISSING; {where}"
                             + ("" if st.spec.debian_path else
                                " (no Debian package provides it)"))
            else:
                lines.append(f"loader {st.spec.filename} ({st.spec.arch}): {st.origin}, "
                             f"{st.size} bytes" + (f", {st.path}" if st.path else ""))
        return lines

    def versions_text(self) -> str | None:
        """The bundled VERSIONS.txt (package version, sizes, sha256), if the build made one."""
        if self.bundled is None:
            return None
        resource = self.bundled / "loaders" / "VERSIONS.txt"
        return resource.read_text(encoding="utf-8") if resource.is_file() else None
