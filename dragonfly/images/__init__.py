"""The image store (wave 2): OS images downloaded, verified against the vendor's checksum
file, converted to raw and kept content-addressed under the state dir, then served to agents.

``AppContext.images`` holds the store once it exists; this protocol is the slot's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ImageStore(Protocol):
    async def path_of(self, digest: str) -> Path | None:
        """The verified image file with this sha256, or None when it is not in the store."""
        ...
