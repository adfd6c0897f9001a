"""``ImageStore``: the content-addressed image cache under ``<state dir>/images/``.

Layout: ``sha256/<digest>`` holds each image as served (named by the sha256 of those bytes),
``partial/`` the downloads in progress (``<url key>.part`` and its validator ``.part.json``,
resumed after a restart) and conversion outputs (``*.out``, removed at start). Metadata lives
in the store: kind ``image`` (key = digest) per image, kind ``image_download`` (key = url key)
per download with its progress, written about once a second, and its outcome.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from dragonfly.errors import Conflict, InvalidInput, NotFound
from dragonfly.format import binary_bytes
from dragonfly.images import checksums, fetch, formats
from dragonfly.images.checksums import VendorChecksum
from dragonfly.images.formats import Kind
from dragonfly.images.model import (
    DOWNLOAD,
    IMAGE,
    Image,
    ImageFailed,
    ImageRefused,
    ImageSource,
    check_digest,
)
from dragonfly.store import RevisionMismatch, Store

log = logging.getLogger(__name__)

RESERVE_BYTES = 256 << 20  # left free beyond any estimate: the database and logs live here too
TOUCH_SECONDS = 60.0
PARTIAL_DAYS = 7  # last_used is rewritten at most this often per image


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class ImageStore:
    """The image cache: a Service (start/stop with the app) and what handlers, the CLI and the
    deployment engine call."""

    name = "images"

    def __init__(self, store: Store, state_dir: Path, *, reserve_bytes: int = RESERVE_BYTES,
                 attempts: int = 4, retry_delay: float = 1.0, read_timeout: float = 60.0
                 ) -> None:
        self.store = store
        self.root = state_dir / "images"
        self.blobs = self.root / "sha256"
        self.partial = self.root / "partial"
        self.reserve_bytes = reserve_bytes
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.read_timeout = read_timeout
        self._flights: dict[str, asyncio.Task[Image]] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- service --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_dirs)
        await asyncio.to_thread(self._sweep_partial)
        # Downloads a previous run left behind resume (their partial file is kept) when their
        # image is asked for again; say so rather than show them as still running.
        for doc in await self.store.list(DOWNLOAD):
            if doc.data.get("state") not in ("ready", "failed", "interrupted"):
                await self.store.put(DOWNLOAD, doc.key, {**doc.data, "state": "interrupted",
                                                         "rate": 0.0, "updated": time.time()})

    async def stop(self) -> None:
        flights = list(self._flights.values())
        for task in flights:
            task.cancel()
        for task in flights:
            with contextlib.suppress(BaseException):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _prepare_dirs(self) -> None:
        for path in (self.blobs, self.partial):
            path.mkdir(parents=True, exist_ok=True, mode=0o750)
        for leftover in self.partial.glob("*.out"):
            leftover.unlink(missing_ok=True)

    def _sweep_partial(self) -> None:
        """Downloads nobody resumed for a week are abandoned: their space comes back."""
        cutoff = time.time() - PARTIAL_DAYS * 86400
        for part in self.partial.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    _unlink_download(part)

    # --- the engine's API -----------------------------------------------------------------

    async def ensure(self, source: ImageSource) -> Image:
        """The image ``source`` names, verified and ready to serve: from the cache, else
        downloaded once however many callers wait for it. Raises ImageFailed (with the reason)
        or ImageRefused (checksum mismatch)."""
        key = url_key(source.url)
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(self._ensure(source, key), name=f"image {source.url}")
            self._flights[key] = task
            task.add_done_callback(lambda t: self._landed(key, t))
        # Shielded: one waiter giving up must not cancel the download the others wait for.
        image = await asyncio.shield(task)
        if source.template:
            image = await self._add_use(image.digest, template=source.template)
        return image

    def _landed(self, key: str, task: asyncio.Task[Image]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaits is not logged twice

    async def get(self, digest: str) -> Image | None:
        doc = await self.store.get(IMAGE, check_digest(digest))
        return Image.from_dict(doc.data) if doc is not None else None

    async def list(self) -> list[Image]:
        return [Image.from_dict(doc.data) for doc in await self.store.list(IMAGE)]

    async def downloads(self) -> builtins.list[dict[str, Any]]:
        """Every download's last progress or outcome (what the panel shows)."""
        return [{"key": doc.key, **doc.data} for doc in await self.store.list(DOWNLOAD)]

    async def for_template(self, template: str) -> Image | None:
        """The most recent image recorded for ``template`` (imports first)."""
        images = [i for i in await self.list() if template in i.templates]
        images.sort(key=lambda i: (any(s.startswith("import:") for s in i.sources), i.created))
        return images[-1] if images else None

    async def release(self, template: str, digest: str | None = None) -> None:
        """``template`` no longer uses ``digest`` (or any image): it may become unused."""
        for image in await self.list():
            if template in image.templates and digest in (None, image.digest):
                await self._update(image.digest, lambda d: {
                    **d, "templates": [t for t in d.get("templates", []) if t != template]})

    async def path_of(self, digest: str) -> Path | None:
        path = self.blobs / check_digest(digest)
        if await self.store.get(IMAGE, digest) is None or \
                not await asyncio.to_thread(path.is_file):
            return None
        return path

    async def touch(self, digest: str) -> None:
        """Record that an agent fetched the image (throttled: list shows when it was used)."""
        image = await self.get(digest)
        now = time.time()
        if image is not None and now - image.last_used >= TOUCH_SECONDS:
            await self._update(digest, lambda d: {**d, "last_used": now})

    async def remove(self, digest: str, *, force: bool = False) -> Image:
        image = await self.get(digest)
        if image is None:
            raise NotFound(f"no image {digest}")
        if image.in_use and not force:
            raise Conflict(f"image {digest[:12]} is used by template(s) "
                           f"{', '.join(image.templates)}: change them first, or force")
        await self.store.delete(IMAGE, digest)
        await asyncio.to_thread((self.blobs / digest).unlink, missing_ok=True)
        return image

    async def verify(self, digest: str) -> tuple[bool, str]:
        """Hash the stored file again. A file that no longer matches is removed (never served
        corrupt): (False, reason)."""
        path = await self.path_of(digest)
        if path is None:
            raise NotFound(f"no image {digest}")
        _, digests = await asyncio.to_thread(formats.hash_file, path, ("sha256",))
        if digests["sha256"] == digest:
            return True, "the stored file matches its sha256"
        await self.remove(digest, force=True)
        return False, (f"the stored file's sha256 is {digests['sha256']}, not {digest}: "
                       "it was removed; the next deployment downloads it again")

    # --- offline import -------------------------------------------------------------------

    async def import_file(self, path: Path, *, template: str | None = None,
                          checksum: VendorChecksum | None = None,
                          format: str | None = None) -> Image:
        """Copy (or convert) a local file into the store: air-gapped sites."""
        if not await asyncio.to_thread(path.is_file):
            raise InvalidInput(f"no such file: {path}")
        await asyncio.to_thread(self._prepare_dirs)
        image = await self._prepare(path, owned=False, source=f"import:{path.name}",
                                    vendor=checksum, declared=format, key="import-"
                                    + url_key(str(await asyncio.to_thread(path.resolve))))
        if template:
            image = await self._add_use(image.digest, template=template)
        return image

    # --- one download ---------------------------------------------------------------------

    async def _ensure(self, source: ImageSource, key: str) -> Image:
        if source.template:  # an operator's import for this template wins: air-gapped sites
            imported = await self.for_template(source.template)
            if imported is not None and any(s.startswith("import:") for s in imported.sources) \
                    and await self.path_of(imported.digest) is not None:
                return imported
        report = _Report(self.store, key, source)
        try:
            try:
                vendor = await self._vendor_checksum(source)
            except ImageFailed as exc:
                # The vendor unreachable (offline site, outage): what was verified before
                # still is.
                cached = await self._cached(source.url, None)
                if cached is None:
                    raise
                log.warning("%s; using the image verified before", exc.message)
                return cached
            cached = await self._cached(source.url, vendor)
            if cached is not None:
                return cached
            await asyncio.to_thread(self._prepare_dirs)
            part = self.partial / f"{key}.part"
            await report.set(state="downloading")
            guess = _guess_kind(source.format or source.file_name)
            await fetch.download(
                self._client(), source.url, part, attempts=self.attempts,
                retry_delay=self.retry_delay,
                progress=lambda done, total, rate: report.set(
                    bytes_done=done, bytes_total=total, rate=rate),
                check_space=lambda n: self._check_space(
                    n * (1 if guess is None or guess.served_as_is else 4),
                    f"downloading {source.file_name}"))
            await report.set(state="verifying", rate=0.0)
            image = await self._prepare(part, owned=True, source=source.url, vendor=vendor,
                                        declared=source.format, key=key, report=report)
        except ImageRefused as exc:
            await report.set(state="failed", reason=exc.message, rate=0.0)
            raise
        except ImageFailed as exc:
            await report.set(state="failed", reason=exc.message, rate=0.0)
            raise
        except asyncio.CancelledError:
            await asyncio.shield(report.set(state="interrupted", rate=0.0))
            raise
        await report.set(state="ready", digest=image.digest, reason="")
        return image

    async def _vendor_checksum(self, source: ImageSource) -> VendorChecksum | None:
        if source.checksum:
            return checksums.parse_expected(source.checksum)
        if not source.checksum_url:
            log.warning("no checksum for %s: stored unverified", source.url)
            return None
        text = await fetch.fetch_text(self._client(), source.checksum_url)
        try:
            return checksums.pick(text, source.file_name, source.checksum_url)
        except InvalidInput as exc:
            raise ImageFailed(exc.message) from None

    async def _cached(self, url: str, vendor: VendorChecksum | None) -> Image | None:
        """The newest stored image from ``url`` that still matches the vendor's checksum (a
        vendor that republishes under the same URL, as "latest" links do, gets a download)."""
        for image in sorted(await self.list(), key=lambda i: -i.created):
            if url not in image.sources or await self.path_of(image.digest) is None:
                continue
            if vendor is None or image.vendor_checksum == vendor or (
                    image.vendor_checksum is not None
                    and image.vendor_checksum.value == vendor.value):
                await self.touch(image.digest)
                return image
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env: sites reach vendors through HTTP(S)_PROXY; no auto-decompression:
            # the bytes are kept exactly as the vendor's checksum covers them.
            self._session = aiohttp.ClientSession(
                timeout=fetch.timeout(self.read_timeout), trust_env=True,
                auto_decompress=False)
        return self._session

    async def _check_space(self, needed: int, what: str) -> None:
        free = (await asyncio.to_thread(shutil.disk_usage, self.root)).free
        if needed + self.reserve_bytes > free:
            raise ImageFailed(f"not enough disk space for {what} in {self.root}: it needs "
                              f"{binary_bytes(needed)} and {binary_bytes(self.reserve_bytes)} "
                              f"spare, {binary_bytes(free)} is free")

    # --- from a verified file to a served one ---------------------------------------------

    async def _prepare(self, src: Path, *, owned: bool, source: str,
                       vendor: VendorChecksum | None, declared: str | None, key: str,
                       report: _Report | None = None) -> Image:
        """Verify ``src`` against the vendor, turn it into the served file, record it.
        ``owned``: ``src`` is the store's own download (moved or deleted, never copied)."""
        algorithms = ("sha256",) + ((vendor.algorithm,) if vendor and
                                    vendor.algorithm != "sha256" else ())
        size, digests = await asyncio.to_thread(formats.hash_file, src, algorithms)
        if vendor is not None and digests[vendor.algorithm] != vendor.value:
            if owned:
                await asyncio.to_thread(_unlink_download, src)
            raise ImageRefused(
                f"checksum mismatch: {vendor.describe()} says {vendor.algorithm} "
                f"{vendor.value} for {_name(source)}, the download is "
                f"{digests[vendor.algorithm]}; it was deleted and will not be served")
        kind = await asyncio.to_thread(formats.sniff, src)
        if declared is not None and formats.parse_kind(declared) != kind:
            raise ImageFailed(f"{_name(source)} is declared {formats.parse_kind(declared).name} "
                              f"but its bytes are {kind.name}")
        if report is not None:
            await report.set(state="converting" if not kind.served_as_is else "preparing")
        out = self.partial / f"{key}.out"
        try:
            if kind.served_as_is:
                served_format = "raw" if kind.compression == "none" else kind.compression
                if owned:
                    out = src
                else:
                    await self._check_space(size, f"importing {src.name}")
                    await asyncio.to_thread(formats.hash_file, src, (), out)
                digest, served_size = digests["sha256"], size
                if kind.compression == "none":
                    raw_size, raw_sha256 = size, digest
                else:
                    raw_size, raw_sha256 = await asyncio.to_thread(
                        formats.raw_info, src if not owned else out, kind.compression)
            else:
                served_format = "raw"
                raw_size, raw_sha256 = await self._convert(src, kind, out, size)
                digest, served_size = raw_sha256, raw_size
            await asyncio.to_thread(_place, out, self.blobs / digest)
        finally:
            await asyncio.to_thread(_unlink_output, out, src)
        if owned:
            await asyncio.to_thread(_unlink_download, src)
        now = time.time()
        vendor_dict = vendor.as_dict() if vendor else None

        def record(data: dict[str, Any] | None) -> dict[str, Any]:
            if data is None:  # new; else the same bytes again, maybe from another source
                data = {"digest": digest, "format": served_format, "size": served_size,
                        "raw_size": raw_size, "raw_sha256": raw_sha256,
                        "original_format": kind.name, "sources": [], "templates": [],
                        "vendor_checksum": None, "created": now, "last_used": 0.0}
            return {**data, "sources": _added(data["sources"], source),
                    "vendor_checksum": vendor_dict or data.get("vendor_checksum")}

        return await self._update(digest, record, create=True)

    async def _convert(self, src: Path, kind: Kind, out: Path, size: int) -> tuple[int, str]:
        """Extract or convert to a raw file at ``out``: its size and sha256."""
        if kind.container == "tar":
            member, member_size = await asyncio.to_thread(
                formats.choose_member, src, kind.compression)
            await self._check_space(member_size, f"extracting {member}")
            log.info("serving %s from the archive %s, raw", member, src.name)
            return await asyncio.to_thread(
                formats.extract_member, src, kind.compression, member, out)
        virtual = await formats.qcow2_virtual_size(src)
        # The raw file is sparse: it takes about what the qcow2 holds, not its virtual size.
        await self._check_space(min(virtual, 4 * size), f"converting {src.name} to raw")
        await formats.convert_qcow2(src, out)
        served_size, digests = await asyncio.to_thread(formats.hash_file, out, ("sha256",))
        return served_size, digests["sha256"]

    # --- metadata -------------------------------------------------------------------------

    async def _add_use(self, digest: str, *, template: str) -> Image:
        return await self._update(digest, lambda d: {
            **d, "templates": _added(d.get("templates", []), template),
            "last_used": time.time()})

    async def _update(self, digest: str, change: Callable[[Any], dict[str, Any]], *,
                      create: bool = False) -> Image:
        """Read-modify-write of one image document, retried when another writer (the CLI
        beside the server) got in between."""
        while True:
            doc = await self.store.get(IMAGE, digest)
            if doc is None and not create:
                raise NotFound(f"no image {digest}")
            data = change(doc.data if doc is not None else None)
            try:
                await self.store.put(IMAGE, digest, data,
                                     expect_rev=doc.rev if doc is not None else 0)
            except RevisionMismatch:
                continue
            return Image.from_dict(data)


class _Report:
    """One download's progress document (kind ``image_download``), rewritten as it moves."""

    def __init__(self, store: Store, key: str, source: ImageSource) -> None:
        self.store = store
        self.key = key
        self.data: dict[str, Any] = {
            "url": source.url, "template": source.template, "state": "starting",
            "bytes_done": 0, "bytes_total": None, "rate": 0.0, "reason": "", "digest": None,
            "started": time.time(), "updated": time.time()}

    async def set(self, **fields: Any) -> None:
        self.data.update(fields, updated=time.time())
        await self.store.put(DOWNLOAD, self.key, dict(self.data))


def _guess_kind(name: str) -> Kind | None:
    """The layout a name suggests, only to size the free-space check before downloading."""
    lower = name.lower()
    for suffix in ("tar.gz", "tgz", "tar.xz", "txz", "tar.zst", "tar.bz2", "tar", "qcow2",
                   "gz", "xz", "zst", "raw"):
        if lower.endswith("." + suffix) or lower == suffix:
            return formats.parse_kind(suffix)
    return None


def _added(items: list[str], item: str) -> list[str]:
    return list(items) if item in items else [*items, item]


def _name(source: str) -> str:
    return source.removeprefix("import:").split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _place(out: Path, blob: Path) -> None:
    if blob.exists():  # the same bytes from another source: keep the one already served
        out.unlink(missing_ok=True)
    else:
        out.replace(blob)


def _unlink_output(out: Path, src: Path) -> None:
    if out != src:
        out.unlink(missing_ok=True)


def _unlink_download(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
