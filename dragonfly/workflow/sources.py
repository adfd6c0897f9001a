"""The deployment engine's view of the template catalog and the image store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dragonfly.domain.model import Machine
from dragonfly.images import ImageSource, ImageStore
from dragonfly.images.checksums import parse_expected
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.templates.seed import parse_deploy_options, render_seed
from dragonfly.workflow.engine import DeployTemplate, PreparedImage


class CatalogSources:
    """``DeploySources`` over ``TemplateCatalog`` and ``ImageStore``."""

    def __init__(self, templates: TemplateCatalog, images: ImageStore) -> None:
        self.templates = templates
        self.images = images

    async def template(self, slug: str) -> DeployTemplate:
        tpl = await self.templates.get(slug)
        return DeployTemplate(
            tpl.slug, tpl.name,
            {"label": tpl.root_label, "parttype": tpl.root_parttype, "fstype": tpl.root_fstype},
            tpl.uefi_loader, float(tpl.phone_home_timeout), tpl.disk_bytes_needed,
            tpl.kernel_args)

    async def prepare_image(self, slug: str) -> PreparedImage:
        tpl = await self.templates.get(slug)
        if tpl.local_path:
            # A file on this server: imported once (copied or converted into the store),
            # then found for the template like any air-gapped import.
            image = await self.images.for_template(tpl.slug)
            if image is None or await self.images.path_of(image.digest) is None:
                image = await self.images.import_file(
                    Path(tpl.local_path), template=tpl.slug,
                    checksum=parse_expected(tpl.checksum) if tpl.checksum else None,
                    format=tpl.format or None)
        else:
            image = await self.images.ensure(ImageSource(
                url=tpl.url, format=tpl.format or None, checksum_url=tpl.checksum_url or None,
                checksum=tpl.checksum or None, template=tpl.slug))
        return PreparedImage(image.digest, image.format, image.size, image.raw_size,
                             image.raw_sha256)

    async def render_seed(self, slug: str, machine: Machine, options: dict[str, Any],
                          instance_id: str, phone_home_url: str) -> dict[str, str]:
        tpl = await self.templates.get(slug)
        return render_seed(tpl, machine, parse_deploy_options(options, others=("disk",)),
                           deployment_id=instance_id, phone_home_url=phone_home_url)
