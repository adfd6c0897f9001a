"""The OS catalog as the demo and the panel see it: a view over the built-in templates of
``dragonfly.templates`` (the same entries the appliance deploys), plus the stages that drive
progress and ETA estimates.

Custom templates (files, API) live in ``dragonfly.templates.registry.TemplateCatalog``; code
with an app context should ask that one (``await ctx.templates.get(slug)``).
"""

from __future__ import annotations

from dragonfly.errors import InvalidInput
from dragonfly.templates.catalog import BUILTIN, BUILTIN_BY_SLUG
from dragonfly.templates.model import OsTemplate

__all__ = ["NATIVE_STAGES", "TEMPLATES", "TEMPLATES_BY_SLUG", "OsTemplate", "template"]

TEMPLATES: tuple[OsTemplate, ...] = BUILTIN
TEMPLATES_BY_SLUG: dict[str, OsTemplate] = BUILTIN_BY_SLUG

# The stages of a native deployment, with the share of the total time each one takes.
NATIVE_STAGES: tuple[tuple[str, float], ...] = (
    ("boot deployment environment", 0.10),
    ("partition disk", 0.05),
    ("stream image", 0.65),
    ("write cloud-init seed", 0.05),
    ("install bootloader", 0.05),
    ("reboot into OS", 0.10),
)

# Tinkerbell deployments' actions come from dragonfly.tinkerbell.translate (the demo's too).


def template(slug: object) -> OsTemplate:
    """A built-in template by slug, or InvalidInput listing the slugs there are."""
    if not isinstance(slug, str) or slug not in TEMPLATES_BY_SLUG:
        raise InvalidInput(f"unknown OS template {slug!r}",
                           {"templates": [t.slug for t in TEMPLATES]})
    return TEMPLATES_BY_SLUG[slug]
