"""Every template this appliance can deploy: the built-ins, TOML files in
``<state dir>/templates/``, and those created through the API (store documents of kind
"template", keyed by slug).

Built-ins and file templates are read-only through the API (``Conflict`` with the reason);
neither a file nor the API may reuse a built-in's slug, and the API may not reuse a file's.
A file that does not parse is skipped with its error kept in ``file_errors`` (and logged), so
one bad file never takes the others, or the server, down.

A file template is one TOML table of template fields; its slug is the file's name::

    # /var/lib/dragonfly/templates/debian-12-docker.toml
    name = "Debian 12 with Docker"
    family = "debian"
    url = "https://mirror.example.com/images/debian-12-docker.raw.zst"
    format = "raw.zst"
    checksum = "sha256:..."
    root_parttype = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    default_user = "debian"
    user_data = '''
    #cloud-config
    packages: [docker.io]
    '''
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from dragonfly.errors import Conflict, DragonflyError, NotFound
from dragonfly.store import Store
from dragonfly.templates.catalog import BUILTIN, BUILTIN_BY_SLUG
from dragonfly.templates.model import OsTemplate, parse_template

log = logging.getLogger(__name__)

KIND = "template"
MAX_FILE = 256 * 1024


def read_template_files(directory: Path) -> tuple[dict[str, OsTemplate], list[dict[str, str]]]:
    """The valid templates among ``directory``'s ``*.toml`` files, and one error per bad file.

    Blocking (file reads): call it in a thread from the event loop.
    """
    found: dict[str, OsTemplate] = {}
    errors: list[dict[str, str]] = []
    if not directory.is_dir():
        return found, errors
    import tomllib  # template files to read: not at every start (the demo has none)

    for path in sorted(directory.glob("*.toml")):
        try:
            if path.stat().st_size > MAX_FILE:
                raise ValueError(f"larger than {MAX_FILE} bytes")
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            template = parse_template(data, source="file", source_path=str(path),
                                      slug=path.stem)
            if template.slug in BUILTIN_BY_SLUG:
                raise ValueError(f"{template.slug!r} is a built-in template's slug; name the "
                                 "file differently")
        except DragonflyError as exc:
            errors.append({"path": str(path), "error": exc.message})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
            errors.append({"path": str(path), "error": str(exc)})
        else:
            found[template.slug] = template
    for error in errors:
        log.warning("template file %s skipped: %s", error["path"], error["error"])
    return found, errors


class TemplateCatalog:
    """Built-in, file and stored templates behind one lookup. ``state_dir`` None: no files
    (the demo, which writes and reads nothing of its own on disk)."""

    def __init__(self, store: Store, state_dir: Path | None = None) -> None:
        self.store = store
        self.directory = state_dir / "templates" if state_dir is not None else None
        self._files: dict[str, OsTemplate] = {}
        self.file_errors: list[dict[str, str]] = []

    name = "templates"

    async def start(self) -> None:
        """A Service: read the template files at start (errors are kept and shown, never
        fatal)."""
        await self.reload()

    async def stop(self) -> None:
        return None

    async def reload(self) -> dict[str, Any]:
        """Read the template files again; what was loaded and what was skipped, and why."""
        if self.directory is None:
            self._files, self.file_errors = {}, []
        else:
            self._files, self.file_errors = await asyncio.to_thread(
                read_template_files, self.directory)
        return {"loaded": sorted(self._files), "errors": list(self.file_errors)}

    async def _stored(self) -> dict[str, OsTemplate]:
        found: dict[str, OsTemplate] = {}
        for doc in await self.store.list(KIND):
            try:
                found[doc.key] = parse_template(doc.data, source="api", slug=doc.key)
            except DragonflyError as exc:  # e.g. written by an older version: skip, say so
                log.warning("stored template %s skipped: %s", doc.key, exc.message)
        return found

    async def list(self) -> list[OsTemplate]:
        """Built-ins first (in catalog order), then file and API templates by slug."""
        custom = {**await self._stored(), **self._files}
        return [*BUILTIN, *(custom[slug] for slug in sorted(custom)
                            if slug not in BUILTIN_BY_SLUG)]

    async def get(self, slug: str) -> OsTemplate:
        template = BUILTIN_BY_SLUG.get(slug) or self._files.get(slug)
        if template is not None:
            return template
        doc = await self.store.get(KIND, slug)
        if doc is None:
            raise NotFound(f"no OS template {slug!r}",
                           {"templates": [t.slug for t in await self.list()]})
        return parse_template(doc.data, source="api", slug=slug)

    def _refuse_read_only(self, slug: str, verb: str) -> None:
        if slug in BUILTIN_BY_SLUG:
            raise Conflict(f"cannot {verb} {slug!r}: it is a built-in template; create a "
                           "custom one with another slug instead", {"source": "builtin"})
        if slug in self._files:
            path = self._files[slug].source_path
            raise Conflict(f"cannot {verb} {slug!r}: it is defined by the file {path}; edit "
                           "or remove that file, then reload", {"source": "file", "path": path})

    async def create(self, template: OsTemplate) -> OsTemplate:
        self._refuse_read_only(template.slug, "create")
        if await self.store.get(KIND, template.slug) is not None:
            raise Conflict(f"a template {template.slug!r} exists already; PUT replaces it")
        await self.store.put(KIND, template.slug, template.stored(), expect_rev=0)
        return template

    async def put(self, template: OsTemplate) -> OsTemplate:
        """Create or replace an API template."""
        self._refuse_read_only(template.slug, "change")
        await self.store.put(KIND, template.slug, template.stored())
        return template

    async def delete(self, slug: str) -> None:
        self._refuse_read_only(slug, "delete")
        if not await self.store.delete(KIND, slug):
            raise NotFound(f"no custom template {slug!r}")
