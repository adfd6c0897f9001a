"""OS templates the panel offers. Sizes and stages drive progress and ETA estimates."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dragonfly.errors import InvalidInput


@dataclass(frozen=True)
class OsTemplate:
    slug: str
    name: str
    family: str
    image_bytes: int  # compressed image streamed to disk

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TEMPLATES: tuple[OsTemplate, ...] = (
    OsTemplate("ubuntu-24.04", "Ubuntu 24.04 LTS", "ubuntu", 2_684_354_560),
    OsTemplate("debian-12", "Debian 12 (bookworm)", "debian", 1_879_048_192),
    OsTemplate("rocky-9", "Rocky Linux 9", "rhel", 2_147_483_648),
    OsTemplate("proxmox-8", "Proxmox VE 8", "debian", 3_221_225_472),
    OsTemplate("talos-1.8", "Talos Linux 1.8", "talos", 322_961_408),
    OsTemplate("flatcar-stable", "Flatcar Container Linux", "flatcar", 536_870_912),
)
TEMPLATES_BY_SLUG = {t.slug: t for t in TEMPLATES}

# The stages of a native deployment, with the share of the total time each one takes.
NATIVE_STAGES: tuple[tuple[str, float], ...] = (
    ("boot deployment environment", 0.10),
    ("partition disk", 0.05),
    ("stream image", 0.65),
    ("write cloud-init seed", 0.05),
    ("install bootloader", 0.05),
    ("reboot into OS", 0.10),
)

# Tinkerbell template actions (the names Tinkerbell's hub actions use).
TINKERBELL_ACTIONS: tuple[tuple[str, str, float], ...] = (
    ("stream-image", "quay.io/tinkerbell/actions/image2disk:latest", 0.70),
    ("write-netplan", "quay.io/tinkerbell/actions/writefile:latest", 0.05),
    ("add-cloud-init", "quay.io/tinkerbell/actions/writefile:latest", 0.05),
    ("grow-partition", "quay.io/tinkerbell/actions/cexec:latest", 0.05),
    ("kexec-into-os", "quay.io/tinkerbell/actions/kexec:latest", 0.15),
)


def template(slug: object) -> OsTemplate:
    if not isinstance(slug, str) or slug not in TEMPLATES_BY_SLUG:
        raise InvalidInput(f"unknown OS template {slug!r}",
                           {"templates": [t.slug for t in TEMPLATES]})
    return TEMPLATES_BY_SLUG[slug]
