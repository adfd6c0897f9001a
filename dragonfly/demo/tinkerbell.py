"""The demo's simulated Tinkerbell deployments, made by the same translation the real backend
sends to a cluster (``dragonfly.tinkerbell.translate``): the same actions, action images and
shares, and the same refusal of templates Tinkerbell cannot run."""

from __future__ import annotations

import uuid

from dragonfly.domain import catalog
from dragonfly.errors import InvalidInput
from dragonfly.templates.model import OsTemplate
from dragonfly.tinkerbell import translate

# (name, share) of a Tinkerbell deployment's actions, as the simulator and history use them.
STEPS: list[tuple[str, float]] = [(name, share) for name, _, share in translate.STEPS]


def actions_for(template: OsTemplate) -> list[tuple[str, str, float]] | None:
    """(name, image, share) of the actions the backend's Template holds for ``template``;
    None when the backend would refuse it (an image format no action writes)."""
    source = translate.TemplateSource(
        slug=template.slug, family=template.family,
        image_url=f"http://dragonfly.demo/images/{template.slug}",
        # The image store serves qcow2 templates converted to raw: image2disk writes them.
        image_format="raw",
        root_label=template.root_label, root_parttype=template.root_parttype,
        root_fstype=template.root_fstype, kernel_args=template.kernel_args,
        # The server reads it from the stored image's GPT (rootpart); the demo has no image.
        root_partuuid="" if template.root_label else str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                    template.url)))
    try:
        data = translate.template_data(source)
    except InvalidInput:
        return None
    shares = dict(STEPS)
    return [(a["name"], a["image"], shares[a["name"]]) for a in data["tasks"][0]["actions"]]


# The built-in templates a Tinkerbell deployment can use.
TEMPLATES: tuple[str, ...] = tuple(t.slug for t in catalog.TEMPLATES if actions_for(t))
