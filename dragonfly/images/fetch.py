"""HTTP downloads for the image store: resumable, throttled progress, readable failures.

A download goes to one partial file per URL. Whatever is already there (a dropped connection,
a restart of the server) is asked for again with ``Range: bytes=<have>-`` and ``If-Range``
(the validator saved beside it), so a changed file restarts from zero instead of being spliced.
A server that ignores ``Range`` answers 200: the partial file is then truncated and the whole
file downloaded. Writes go through a thread in 1 MiB batches, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from dragonfly.images.model import ImageFailed

log = logging.getLogger(__name__)

# (bytes done, bytes total or None when unknown, bytes per second): called about once a second
Progress = Callable[[int, "int | None", float], Awaitable[None]]
# Called with the bytes still to download before any is written: raises when they do not fit.
SpaceCheck = Callable[[int], Awaitable[None]]

PROGRESS_SECONDS = 1.0
WRITE_BATCH = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CHECKSUM_FILE_MAX = 4 << 20


class _Dropped(Exception):
    """The transfer stopped early: worth resuming."""


def timeout(read_seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_seconds)


async def fetch_text(session: aiohttp.ClientSession, url: str) -> str:
    """A small text file (a vendor's checksum file)."""
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise ImageFailed(f"HTTP {resp.status} fetching {url}")
            body = await resp.content.read(_CHECKSUM_FILE_MAX + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ImageFailed(_reason(exc, url)) from None
    if len(body) > _CHECKSUM_FILE_MAX:
        raise ImageFailed(f"{url} is larger than a checksum file ({_CHECKSUM_FILE_MAX} bytes)")
    return body.decode("utf-8", errors="replace")


async def download(session: aiohttp.ClientSession, url: str, dest: Path, *,
                   progress: Progress, check_space: SpaceCheck, attempts: int = 4,
                   retry_delay: float = 1.0) -> int:
    """Download ``url`` into ``dest``, resuming what is there; returns its size."""
    for attempt in range(1, attempts + 1):
        try:
            return await _attempt(session, url, dest, progress, check_space)
        except _Dropped as exc:
            if attempt == attempts:
                raise ImageFailed(f"{exc} (gave up after {attempts} attempts)") from None
            log.warning("%s; resuming in %.0f s", exc, retry_delay)
            await asyncio.sleep(retry_delay * attempt)
    raise AssertionError("unreachable")


async def _attempt(session: aiohttp.ClientSession, url: str, dest: Path, progress: Progress,
                   check_space: SpaceCheck) -> int:
    meta_path = dest.with_name(dest.name + ".json")
    have = await asyncio.to_thread(_size, dest)
    meta = await asyncio.to_thread(_read_meta, meta_path)
    headers = {"Accept-Encoding": "identity"}  # the bytes as published, never re-encoded
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if meta.get("url") == url and validator:
            headers["If-Range"] = validator
    done = have
    try:
        async with session.get(url, headers=headers) as resp:
            total: int | None
            if resp.status == 206 and have:
                match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if match is None or int(match[1]) != have:
                    await asyncio.to_thread(_truncate, dest)
                    raise _Dropped(f"{url} answered a range other than the one asked for")
                total = None if match[3] == "*" else int(match[3])
            elif resp.status == 200:
                if have:
                    log.info("%s ignored the Range request: downloading it from the start", url)
                have = done = 0
                total = resp.content_length
            elif resp.status == 416 and have:
                size = resp.headers.get("Content-Range", "").rpartition("/")[2]
                if size == str(have):  # the partial file is already complete
                    return have
                await asyncio.to_thread(_truncate, dest)
                raise _Dropped(f"{url} refused to resume ({resp.status}): restarting")
            elif resp.status >= 500:
                raise _Dropped(f"HTTP {resp.status} fetching {url}")
            else:
                raise ImageFailed(f"HTTP {resp.status} fetching {url}")
            await check_space((total - have) if total is not None else 0)
            await asyncio.to_thread(_write_meta, meta_path, {
                "url": url, "etag": _strong(resp.headers.get("ETag")),
                "last_modified": resp.headers.get("Last-Modified")})
            fh = await asyncio.to_thread(open, dest, "ab" if have else "wb")
            try:
                done = await _copy(resp, fh, have, total, progress)
            finally:
                await asyncio.to_thread(fh.close)
    except aiohttp.ClientConnectorError as exc:  # nothing to resume: say so at once
        raise ImageFailed(_reason(exc, url)) from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError, TimeoutError) as exc:
        done = await asyncio.to_thread(_size, dest)
        raise _Dropped(_reason(exc, url, done)) from None
    except aiohttp.ClientError as exc:
        raise ImageFailed(_reason(exc, url)) from None
    if total is not None and done != total:
        raise _Dropped(f"short download of {url}: {done} of {total} bytes")
    return done


async def _copy(resp: aiohttp.ClientResponse, fh: IO[bytes], done: int, total: int | None,
                progress: Progress) -> int:
    loop = asyncio.get_running_loop()
    last_time, last_done = loop.time(), done
    batch = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(256 * 1024):
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                done += await _flush(fh, batch)
            now = loop.time()
            if now - last_time >= PROGRESS_SECONDS:
                current = done + len(batch)
                await progress(current, total, (current - last_done) / (now - last_time))
                last_time, last_done = now, current
    finally:
        # Whatever arrived is kept, so the next attempt resumes after it.
        if batch:
            done += await _flush(fh, batch)
    await progress(done, total, 0.0)
    return done


async def _flush(fh: IO[bytes], batch: bytearray) -> int:
    data = bytes(batch)
    batch.clear()
    await asyncio.to_thread(fh.write, data)
    return len(data)


def _reason(exc: BaseException, url: str, done: int | None = None) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out fetching {url}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} fetching {url}: " \
               f"{exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"not a valid URL: {url}"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientOSError)):
        after = f" after {done} bytes" if done is not None else ""
        return f"the connection dropped fetching {url}{after}"
    return f"fetching {url} failed: {exc}"


def _strong(etag: str | None) -> str | None:
    """If-Range accepts only strong validators (RFC 9110 13.1.5)."""
    return None if etag is None or etag.startswith("W/") else etag


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _truncate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps(meta))
