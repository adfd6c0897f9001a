"""Vendor checksum files and expected checksums.

Vendors publish one of two layouts: GNU coreutils' (``<hex>  <name>`` or ``<hex> *<name>``,
Debian's and Ubuntu's SHA256SUMS/SHA512SUMS) and BSD's (``SHA256 (<name>) = <hex>``, the
CHECKSUM files of Rocky and Alma, often PGP-signed around the lines). Both can list many files:
the line for the image's own file name is the one that counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dragonfly.errors import InvalidInput

ALGORITHMS = {"sha256": 64, "sha512": 128}  # name -> hex digits

_GNU = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}|[0-9a-fA-F]{128}) [ *](?P<name>.+)$")
_BSD = re.compile(r"^(?P<alg>SHA256|SHA512) ?\((?P<name>.+)\) ?= ?(?P<hex>[0-9a-fA-F]+)$")


@dataclass(frozen=True)
class VendorChecksum:
    algorithm: str  # "sha256" or "sha512"
    value: str  # lower-case hex
    source: str  # where it came from: the checksum file's URL or path, or "expected"

    def as_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "value": self.value, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VendorChecksum:
        return cls(str(data["algorithm"]), str(data["value"]), str(data["source"]))

    def describe(self) -> str:
        """How an error names it: "the vendor's SHA512SUMS" or "the expected checksum"."""
        if self.source == "expected":
            return "the expected checksum"
        name = self.source.rstrip("/").rsplit("/", 1)[-1] or self.source
        return f"the vendor's {name}"


def parse_expected(text: str) -> VendorChecksum:
    """``sha256:HEX`` or ``sha512:HEX`` (a bare hex string: its length says which)."""
    algorithm, _, value = text.strip().rpartition(":")
    value = value.lower()
    if not algorithm:
        algorithm = next((a for a, n in ALGORITHMS.items() if n == len(value)), "")
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS or len(value) != ALGORITHMS[algorithm] \
            or not re.fullmatch(r"[0-9a-f]+", value):
        raise InvalidInput(f"not a checksum: {text!r} (expected sha256:<64 hex digits> or "
                           "sha512:<128 hex digits>)")
    return VendorChecksum(algorithm, value, "expected")


def entries(text: str) -> list[tuple[str, str, str]]:
    """Every (file name, algorithm, hex) a checksum file lists, in either layout."""
    found: list[tuple[str, str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bsd = _BSD.match(line)
        if bsd is not None:
            alg = bsd["alg"].lower()
            if len(bsd["hex"]) == ALGORITHMS[alg]:
                found.append((bsd["name"], alg, bsd["hex"].lower()))
            continue
        gnu = _GNU.match(line)
        if gnu is not None:
            alg = "sha256" if len(gnu["hex"]) == 64 else "sha512"
            found.append((gnu["name"].strip(), alg, gnu["hex"].lower()))
    return found


def pick(text: str, file_name: str, source: str) -> VendorChecksum:
    """The checksum ``text`` lists for ``file_name`` (compared by base name: some files list
    ``./name`` or a path). The strongest algorithm wins when a file lists both."""
    wanted = _base(file_name)
    matches = [(alg, value) for name, alg, value in entries(text) if _base(name) == wanted]
    if not matches:
        listed = sorted({_base(name) for name, _, _ in entries(text)})
        shown = ", ".join(listed[:8]) + (" ..." if len(listed) > 8 else "")
        raise InvalidInput(f"the checksum file {source} has no line for {wanted}"
                           + (f" (it lists {shown})" if listed else
                              " (no sha256 or sha512 lines found)"))
    alg, value = max(matches, key=lambda m: ALGORITHMS[m[0]])
    return VendorChecksum(alg, value, source)


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]
