"""The version string, read from the source without importing the package."""

from __future__ import annotations

import re
from pathlib import Path


def read_version() -> str:
    text = (Path(__file__).resolve().parent.parent / "dragonfly" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if match is None:
        raise RuntimeError("no __version__ in dragonfly/__init__.py")
    return match.group(1)
