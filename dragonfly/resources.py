"""Package data (templates, static assets, iPXE files) read through importlib.resources.

The top-level ``web/`` and ``ipxe/`` directories are installed as the packages ``dragonfly.web``
and ``dragonfly.ipxe``, so the same code works from a checkout, a wheel and the zipapp.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable


def web_root() -> Traversable:
    return files("dragonfly.web")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@cache
def static_assets() -> dict[str, Asset]:
    """Every file under web/static, loaded once (a few hundred KB) and served from memory."""
    assets: dict[str, Asset] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif not child.name.startswith(".") and child.name != "__init__.py":
                body = child.read_bytes()
                ctype = mimetypes.guess_type(child.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype in ("application/javascript",
                                                          "image/svg+xml"):
                    ctype += "; charset=utf-8"
                assets[name] = Asset(body, ctype, hashlib.sha256(body).hexdigest()[:16])

    static = web_root() / "static"
    if static.is_dir():
        walk(static, "")
    return assets
