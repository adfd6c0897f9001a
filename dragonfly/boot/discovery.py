"""Where the discovery environment (kernel and stock initrd) lives, and what to say when it is
missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dragonfly.config import Config

HOW_TO_OBTAIN = (
    "Build them offline from Debian packages with `dragonfly discovery build --out {dir}` "
    "(run `apt-get update` first), or download a distro netboot kernel and its "
    "busybox initramfs into {dir}/vmlinuz and {dir}/initrd.img (see the script's --help).")


def discovery_dir(config: Config) -> Path:
    return config.state_dir / "discovery"


def discovery_status(config: Config) -> dict[str, Any]:
    """What `dragonfly serve` should say at start: which discovery files exist, how to get the
    missing ones. Blocking (stat): call it from a thread or before the loop runs."""
    d = discovery_dir(config)
    missing = [str(d / n) for n in ("vmlinuz", "initrd.img") if not (d / n).is_file()]
    return {"dir": str(d), "ready": not missing, "missing": missing,
            "how_to_obtain": HOW_TO_OBTAIN.format(dir=d) if missing else ""}
