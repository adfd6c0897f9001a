"""Shared pieces of the image store tests: disk images with known content, and a real HTTP
vendor (aiohttp on 127.0.0.1) serving files with Range, that can drop a connection midway,
ignore Range or hang, and records every request's headers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                    reason="qemu-img missing: apt-get install qemu-utils")
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None,
                                reason="zstd missing: apt-get install zstd")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def disk_bytes(size: int = 3 << 20) -> bytes:
    """A small "disk": random data, a long run of zeros (sparse when written raw), more data."""
    head = os.urandom(512 * 1024)
    tail = os.urandom(256 * 1024)
    return head + bytes(size - len(head) - len(tail)) + tail


def to_qcow2(raw: bytes, tmp: Path) -> bytes:
    src, dst = tmp / "in.raw", tmp / "out.qcow2"
    src.write_bytes(raw)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(src), str(dst)],
                   check=True)
    return dst.read_bytes()


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, check=True,
                          capture_output=True).stdout


@dataclass
class Vendor:
    """The test's HTTP server: ``files`` by name; ``requests`` records (name, headers)."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    drop_once: set[str] = field(default_factory=set)  # send half, then cut the connection
    ignore_range: bool = False
    hang: set[str] = field(default_factory=set)  # send a little, then nothing
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    base: str = ""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def gets(self, name: str) -> list[dict[str, str]]:
        return [headers for n, headers in self.requests if n == name]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((name, dict(request.headers)))
        if name not in self.files:
            raise web.HTTPNotFound()
        data = self.files[name]
        etag = '"' + sha256(data)[:16] + '"'
        start, status = 0, 200
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and not self.ignore_range \
                and request.headers.get("If-Range", etag) == etag:
            start, status = int(wanted[6:].split("-")[0]), 206
        headers = {"Content-Length": str(len(data) - start), "ETag": etag,
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        body = data[start:]
        if name in self.hang:
            await resp.write(body[:1024])
            self.hanging.set()
            await asyncio.sleep(3600)
        if name in self.drop_once:
            self.drop_once.discard(name)
            await resp.write(body[:len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp
