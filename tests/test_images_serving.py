"""Images over HTTP (the agent route with Range, the operator's list and removal), the
``dragonfly image`` command line, and the checksum file parsers."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dragonfly.cli import main
from dragonfly.context import CTX, AppContext
from dragonfly.errors import InvalidInput
from dragonfly.http.errors import error_middleware
from dragonfly.images import ImageStore, checksums, routes
from dragonfly.store import open_store
from tests.lab.harness import make_context
from tests.test_images_fixtures import disk_bytes, needs_qemu_img, sha256, sha512, to_qcow2

Client = TestClient[Any, Any]


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[AppContext]:
    ctx = make_context(tmp_path / "state")
    await ctx.store.open()
    ctx.images = ImageStore(ctx.store, tmp_path / "state")
    await ctx.images.start()
    yield ctx
    await ctx.images.stop()
    await ctx.store.close()


@pytest.fixture
async def client(ctx: AppContext, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = web.Application(middlewares=[error_middleware])
    app[CTX] = ctx
    for route in routes.api.routes:
        app.router.add_route(route.method, route.path, route.handler)
        if route.head:
            app.router.add_route("HEAD", route.path, route.handler)
    return await aiohttp_client(app)


async def test_agents_get_images_with_range(client: Client, ctx: AppContext,
                                            tmp_path: Path) -> None:
    assert ctx.images is not None
    disk = disk_bytes(1 << 20)
    (tmp_path / "disk.raw.gz").write_bytes(packed := gzip.compress(disk))
    image = await ctx.images.import_file(tmp_path / "disk.raw.gz", template="t1")
    r = await client.get(image.url_path, headers={"Range": "bytes=100-199"})
    assert r.status == 206 and await r.read() == packed[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(packed)}"
    r = await client.get(image.url_path)
    assert r.status == 200 and await r.read() == packed
    r = await client.head(image.url_path)
    assert r.status == 200 and int(r.headers["Content-Length"]) == len(packed)
    stored = await ctx.images.get(image.digest)
    assert stored is not None and stored.last_used > 0
    r = await client.get("/images/" + "0" * 64)
    assert r.status == 404
    r = await client.get("/images/not-a-digest")
    assert r.status == 400


async def test_list_and_remove_over_the_api(client: Client, ctx: AppContext,
                                            tmp_path: Path) -> None:
    assert ctx.images is not None
    (tmp_path / "a.raw").write_bytes(a := os.urandom(4096))
    (tmp_path / "b.raw").write_bytes(os.urandom(4096))
    used = await ctx.images.import_file(tmp_path / "a.raw", template="web")
    unused = await ctx.images.import_file(tmp_path / "b.raw")
    body = await (await client.get("/api/images")).json()
    listed = {i["digest"]: i for i in body["images"]}
    assert listed[used.digest]["in_use"] and listed[used.digest]["templates"] == ["web"]
    assert not listed[unused.digest]["in_use"] and listed[used.digest]["present"]
    assert listed[used.digest]["sources"] == ["import:a.raw"] and body["downloads"] == []
    assert used.digest == sha256(a)
    r = await client.delete(f"/api/images/{unused.digest}")
    assert r.status == 200 and not (ctx.images.blobs / unused.digest).exists()
    r = await client.delete(f"/api/images/{used.digest}")
    assert r.status == 409 and "used by template(s) web" in (await r.json())["error"]
    r = await client.post(f"/api/images/{used.digest}/verify")
    assert (await r.json())["ok"] is True
    (ctx.images.blobs / used.digest).write_bytes(b"bit rot")
    r = await client.post(f"/api/images/{used.digest}/verify")
    answer = await r.json()
    assert answer["ok"] is False and "it was removed" in answer["message"]
    assert (await client.get(used.url_path)).status == 404
    r = await client.delete(f"/api/images/{used.digest}?force=1")
    assert r.status == 404


async def test_without_an_image_store_the_routes_say_so(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    ctx = make_context(tmp_path)
    app = web.Application(middlewares=[error_middleware])
    app[CTX] = ctx
    for route in routes.api.routes:
        app.router.add_route(route.method, route.path, route.handler)
    client = await aiohttp_client(app)
    # Listing says there is nothing; what needs a store says there is none.
    r = await client.get("/api/images")
    assert r.status == 200 and await r.json() == {"images": [], "downloads": []}
    r = await client.get("/images/" + "a" * 64)
    assert r.status == 503 and "no image store" in (await r.json())["error"]
    r = await client.delete("/api/images/" + "a" * 64)
    assert r.status == 503 and "no image store" in (await r.json())["error"]


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


@needs_qemu_img
def test_cli_import_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    disk = disk_bytes(1 << 20)
    qcow = tmp_path / "rocky.qcow2"
    qcow.write_bytes(to_qcow2(disk, tmp_path))
    (tmp_path / "CHECKSUM").write_text(
        f"SHA256 (rocky.qcow2) = {sha256(qcow.read_bytes())}\n")
    code, out = _cli("image", "import", str(qcow), "--template", "rocky-9",
                     "--checksum-file", str(tmp_path / "CHECKSUM"), "--state-dir", state)
    assert code == 0, capsys.readouterr().err
    assert out.startswith(f"imported rocky.qcow2 as {sha256(disk)} (raw, 1 MiB")
    assert "sha256 verified" in out and "for template rocky-9" in out
    code, out = _cli("image", "list", "--json", "--state-dir", state)
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["raw_sha256"] == sha256(disk) and listed["original_format"] == "qcow2"
    assert listed["templates"] == ["rocky-9"] and listed["in_use"] is True
    assert listed["vendor_checksum"]["source"] == str(tmp_path / "CHECKSUM")
    code, _ = _cli("image", "remove", sha256(disk)[:10], "--state-dir", state)
    assert code == 2 and "used by template(s) rocky-9" in capsys.readouterr().err
    code, out = _cli("image", "remove", sha256(disk)[:10], "--force", "--state-dir", state)
    assert code == 0 and out == f"removed {sha256(disk)}\n"
    assert list((tmp_path / "state" / "images" / "sha256").iterdir()) == []


def test_cli_import_refuses_a_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    (tmp_path / "disk.raw").write_bytes(b"\x01" * 4096)
    code, _ = _cli("image", "import", str(tmp_path / "disk.raw"), "--template", "t",
                   "--checksum", "sha512:" + sha512(b"else"), "--state-dir",
                   str(tmp_path / "state"))
    err = capsys.readouterr().err
    assert code == 2 and "checksum mismatch: the expected checksum says sha512" in err
    assert list((tmp_path / "state" / "images" / "sha256").iterdir()) == []
    assert list((tmp_path / "state" / "images" / "partial").iterdir()) == []


async def test_an_import_is_used_for_its_template_without_network(tmp_path: Path) -> None:
    from dragonfly.images import ImageSource

    state = tmp_path / "state"
    store = open_store(state)
    await store.open()
    images = ImageStore(store, state)
    (tmp_path / "disk.raw").write_bytes(data := os.urandom(8192))
    imported = await images.import_file(tmp_path / "disk.raw", template="airgap")
    # Port 9 (discard) is closed: any download attempt would fail.
    got = await images.ensure(ImageSource("http://127.0.0.1:9/disk.raw", template="airgap"))
    assert got.digest == imported.digest == sha256(data)
    await images.release("airgap")
    image = await images.get(imported.digest)
    assert image is not None and not image.in_use
    await images.stop()
    await store.close()


GNU = """\
{a}  debian-12-genericcloud-amd64.tar.xz
{b} *debian-12-genericcloud-amd64.qcow2
"""


def test_checksum_files() -> None:
    a, b = "a" * 128, "b" * 128
    text = GNU.format(a=a, b=b)
    picked = checksums.pick(text, "debian-12-genericcloud-amd64.qcow2", "https://x/SHA512SUMS")
    assert (picked.algorithm, picked.value) == ("sha512", b)
    assert picked.describe() == "the vendor's SHA512SUMS"
    bsd = f"SHA256 (./Alma.raw.xz) = {'C' * 64}\n"
    assert checksums.pick(bsd, "Alma.raw.xz", "CHECKSUM").value == "c" * 64
    with pytest.raises(InvalidInput, match="no line for other.img"):
        checksums.pick(text, "other.img", "SHA512SUMS")
    assert checksums.parse_expected("D" * 64).algorithm == "sha256"
    with pytest.raises(InvalidInput, match="not a checksum"):
        checksums.parse_expected("md5:" + "0" * 32)
