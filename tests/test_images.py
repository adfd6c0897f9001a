"""The image store against a real HTTP server: download, verify, resume, refuse, convert."""

from __future__ import annotations

import asyncio
import gzip
import io
import lzma
import os
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dragonfly.images import ImageFailed, ImageRefused, ImageSource, ImageStore, url_key
from dragonfly.images.model import DOWNLOAD, IMAGE
from dragonfly.store import SqliteStore
from tests.test_images_fixtures import (
    Vendor,
    disk_bytes,
    needs_qemu_img,
    needs_zstd,
    sha256,
    sha512,
    to_qcow2,
    zstd,
)


@pytest.fixture
async def vendor(aiohttp_server: Callable[..., Awaitable[Any]]) -> Vendor:
    vendor = Vendor()
    server = await aiohttp_server(vendor.app())
    vendor.base = str(server.make_url("")).rstrip("/")
    return vendor


@pytest.fixture
async def images(tmp_path: Path) -> AsyncIterator[ImageStore]:
    store = SqliteStore(":memory:")
    await store.open()
    cache = ImageStore(store, tmp_path / "state", retry_delay=0.05)
    await cache.start()
    yield cache
    await cache.stop()
    await store.close()


def blobs(cache: ImageStore) -> list[str]:
    return sorted(p.name for p in cache.blobs.iterdir())


async def test_xz_download_verified_against_gnu_sums(vendor: Vendor, images: ImageStore
                                                     ) -> None:
    disk = disk_bytes()
    packed = lzma.compress(disk)
    vendor.files["disk.raw.xz"] = packed
    vendor.files["SHA256SUMS"] = (f"{sha256(b'other')}  other.iso\n"
                                  f"{sha256(packed)} *disk.raw.xz\n").encode()
    watch = images.store.watch([DOWNLOAD])
    image = await images.ensure(ImageSource(vendor.url("disk.raw.xz"),
                                            checksum_url=vendor.url("SHA256SUMS"),
                                            template="debian-12"))
    watch.close()
    states = [c.data["state"] async for c in watch if c.data is not None]
    # Progress is throttled to about once a second: a few writes, never one per chunk.
    assert states[0] == "downloading" and states[-1] == "ready" and len(states) < 10
    assert "verifying" in states
    assert (image.format, image.size, image.digest) == ("xz", len(packed), sha256(packed))
    assert (image.raw_size, image.raw_sha256) == (len(disk), sha256(disk))
    assert image.templates == ("debian-12",) and image.sources == (vendor.url("disk.raw.xz"),)
    assert image.vendor_checksum is not None and image.vendor_checksum.algorithm == "sha256"
    assert (images.blobs / image.digest).read_bytes() == packed  # served as it is
    assert image.url_path == f"/images/{image.digest}"
    assert image.stream_params("http://10.0.0.1:3000/") == {
        "url": f"http://10.0.0.1:3000/images/{image.digest}", "format": "xz",
        "size": len(packed), "raw_size": len(disk), "sha256": sha256(disk)}
    doc = await images.store.get(DOWNLOAD, url_key(vendor.url("disk.raw.xz")))
    assert doc is not None and doc.data["state"] == "ready"
    assert doc.data["bytes_done"] == len(packed) == doc.data["bytes_total"]
    assert list(images.partial.iterdir()) == []
    # Cached: asked again, nothing is downloaded (only the checksum file is read again).
    again = await images.ensure(ImageSource(vendor.url("disk.raw.xz"),
                                            checksum_url=vendor.url("SHA256SUMS")))
    assert again.digest == image.digest and len(vendor.gets("disk.raw.xz")) == 1
    # The vendor gone: the image verified before is still used.
    vendor.files.clear()
    again = await images.ensure(ImageSource(vendor.url("disk.raw.xz"),
                                            checksum_url=vendor.url("SHA256SUMS")))
    assert again.digest == image.digest


async def test_gz_verified_against_bsd_sha512_checksum(vendor: Vendor, images: ImageStore
                                                       ) -> None:
    disk = disk_bytes(1 << 20)
    packed = gzip.compress(disk)
    vendor.files["Rocky-9-GenericCloud.raw.gz"] = packed
    vendor.files["CHECKSUM"] = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        f"# Rocky-9-GenericCloud.raw.gz: {len(packed)} bytes\n"
        f"SHA512 (Rocky-9-GenericCloud.raw.gz) = {sha512(packed)}\n"
        f"SHA256 (Rocky-9-GenericCloud.raw.gz) = {sha256(packed)}\n"
        "-----BEGIN PGP SIGNATURE-----\n").encode()
    image = await images.ensure(ImageSource(vendor.url("Rocky-9-GenericCloud.raw.gz"),
                                            checksum_url=vendor.url("CHECKSUM")))
    assert image.format == "gz" and image.raw_sha256 == sha256(disk)
    assert image.vendor_checksum is not None
    assert (image.vendor_checksum.algorithm, image.vendor_checksum.value) == \
        ("sha512", sha512(packed))


async def test_resumes_a_dropped_download_with_range(vendor: Vendor, images: ImageStore
                                                     ) -> None:
    disk = disk_bytes()
    vendor.files["disk.raw"] = disk
    vendor.drop_once.add("disk.raw")
    image = await images.ensure(ImageSource(vendor.url("disk.raw"),
                                            checksum=f"sha256:{sha256(disk)}"))
    assert image.digest == sha256(disk) and image.format == "raw"
    first, second = vendor.gets("disk.raw")
    assert "Range" not in first
    start = int(second["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(disk) and second["If-Range"].startswith('"')


async def test_resumes_after_a_restart(vendor: Vendor, images: ImageStore,
                                       tmp_path: Path) -> None:
    disk = disk_bytes()
    vendor.files["disk.raw"] = disk
    vendor.drop_once.add("disk.raw")
    once = ImageStore(images.store, tmp_path / "state", attempts=1)
    await once.start()
    with pytest.raises(ImageFailed, match="the connection dropped fetching .*disk.raw"):
        await once.ensure(ImageSource(vendor.url("disk.raw")))
    await once.stop()
    part = images.partial / f"{url_key(vendor.url('disk.raw'))}.part"
    have = part.stat().st_size
    assert 0 < have < len(disk)
    image = await images.ensure(ImageSource(vendor.url("disk.raw")))  # "after the restart"
    assert image.digest == sha256(disk) and image.vendor_checksum is None
    assert vendor.gets("disk.raw")[1]["Range"] == f"bytes={have}-"


async def test_server_ignoring_range_restarts_from_zero(vendor: Vendor, images: ImageStore
                                                        ) -> None:
    disk = disk_bytes(1 << 20)
    vendor.files["disk.raw"] = disk
    vendor.ignore_range = True
    (images.partial / f"{url_key(vendor.url('disk.raw'))}.part").write_bytes(b"stale" * 1000)
    image = await images.ensure(ImageSource(vendor.url("disk.raw"),
                                            checksum=f"sha256:{sha256(disk)}"))
    assert image.digest == sha256(disk)
    assert vendor.gets("disk.raw")[0]["Range"] == "bytes=5000-"


async def test_checksum_mismatch_is_refused_and_nothing_is_kept(vendor: Vendor,
                                                                images: ImageStore) -> None:
    vendor.files["disk.raw.xz"] = lzma.compress(disk_bytes(1 << 20))
    wrong = sha512(b"what the vendor published")
    vendor.files["SHA512SUMS"] = f"{wrong}  disk.raw.xz\n".encode()
    with pytest.raises(ImageRefused) as refused:
        await images.ensure(ImageSource(vendor.url("disk.raw.xz"),
                                        checksum_url=vendor.url("SHA512SUMS")))
    message = refused.value.message
    assert message.startswith(f"checksum mismatch: the vendor's SHA512SUMS says sha512 {wrong} "
                              "for disk.raw.xz, the download is ")
    assert sha512(vendor.files["disk.raw.xz"]) in message
    assert blobs(images) == [] and list(images.partial.iterdir()) == []
    assert await images.store.list(IMAGE) == []
    doc = await images.store.get(DOWNLOAD, url_key(vendor.url("disk.raw.xz")))
    assert doc is not None and doc.data["state"] == "failed" and doc.data["reason"] == message


async def test_http_errors_are_readable(vendor: Vendor, images: ImageStore) -> None:
    url = vendor.url("missing.raw")
    with pytest.raises(ImageFailed, match=f"^HTTP 404 fetching {url}$"):
        await images.ensure(ImageSource(url))
    with pytest.raises(ImageFailed, match="^HTTP 404 fetching .*/SHA256SUMS$"):
        await images.ensure(ImageSource(url, checksum_url=vendor.url("SHA256SUMS")))
    vendor.files["SHA256SUMS"] = f"{sha256(b'x')}  something-else.raw\n".encode()
    with pytest.raises(ImageFailed, match="has no line for missing.raw .it lists "
                                          "something-else.raw"):
        await images.ensure(ImageSource(url, checksum_url=vendor.url("SHA256SUMS")))
    with pytest.raises(ImageFailed, match="cannot connect to 127.0.0.1:9 fetching"):
        await images.ensure(ImageSource("http://127.0.0.1:9/disk.raw"))


async def test_one_download_however_many_wait(vendor: Vendor, images: ImageStore) -> None:
    disk = disk_bytes()
    vendor.files["disk.raw.gz"] = gzip.compress(disk)
    sources = [ImageSource(vendor.url("disk.raw.gz"), template=t) for t in ("a", "b", "c")]
    results = await asyncio.gather(*(images.ensure(s) for s in sources))
    assert len({r.digest for r in results}) == 1
    assert len(vendor.gets("disk.raw.gz")) == 1
    stored = await images.get(results[0].digest)
    assert stored is not None and set(stored.templates) == {"a", "b", "c"}


async def test_not_enough_space_is_said_before_downloading(vendor: Vendor, tmp_path: Path
                                                           ) -> None:
    vendor.files["disk.raw"] = disk_bytes(1 << 20)
    store = SqliteStore(":memory:")
    await store.open()
    cache = ImageStore(store, tmp_path / "s", reserve_bytes=1 << 60)
    with pytest.raises(ImageFailed, match="not enough disk space for downloading disk.raw"):
        await cache.ensure(ImageSource(vendor.url("disk.raw")))
    await cache.stop()
    await store.close()


async def test_stop_cancels_a_running_download(vendor: Vendor, images: ImageStore) -> None:
    vendor.files["slow.raw"] = disk_bytes(1 << 20)
    vendor.hang.add("slow.raw")
    waiter = asyncio.create_task(images.ensure(ImageSource(vendor.url("slow.raw"))))
    await vendor.hanging.wait()
    await images.stop()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    doc = await images.store.get(DOWNLOAD, url_key(vendor.url("slow.raw")))
    assert doc is not None and doc.data["state"] == "interrupted"


@needs_qemu_img
async def test_qcow2_is_converted_to_raw(vendor: Vendor, images: ImageStore,
                                         tmp_path: Path) -> None:
    disk = disk_bytes()
    qcow = to_qcow2(disk, tmp_path)
    vendor.files["cloud.img"] = qcow  # Ubuntu names its qcow2 files .img: the bytes tell
    image = await images.ensure(ImageSource(vendor.url("cloud.img"),
                                            checksum=f"sha256:{sha256(qcow)}"))
    assert (image.format, image.original_format) == ("raw", "qcow2")
    assert (image.raw_sha256, image.raw_size, image.digest) == \
        (sha256(disk), len(disk), sha256(disk))
    assert (images.blobs / image.digest).read_bytes() == disk
    assert list(images.partial.iterdir()) == []


async def test_qcow2_without_qemu_img_says_what_to_install(
        vendor: Vendor, images: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    vendor.files["cloud.qcow2"] = b"QFI\xfb\x00\x00\x00\x03" + bytes(4096)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImageFailed, match=r"qemu-img is missing.*apt-get install qemu-utils"):
        await images.ensure(ImageSource(vendor.url("cloud.qcow2")))


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_tar_xz_holding_a_disk_image_is_served_raw(vendor: Vendor, images: ImageStore
                                                         ) -> None:
    disk = disk_bytes()
    vendor.files["debian.tar.xz"] = _tar({"README": b"hi",
                                          "disk.raw": disk}, "w:xz")
    image = await images.ensure(ImageSource(vendor.url("debian.tar.xz")))
    assert (image.format, image.original_format, image.digest) == \
        ("raw", "tar.xz", sha256(disk))
    blob = images.blobs / image.digest
    assert blob.read_bytes() == disk
    assert blob.stat().st_blocks * 512 < len(disk)  # the zeros were not written: sparse


@needs_zstd
async def test_zst_served_as_is_and_tar_zst_extracted(vendor: Vendor, images: ImageStore
                                                      ) -> None:
    disk = disk_bytes(1 << 20)
    vendor.files["disk.raw.zst"] = packed = zstd(disk)
    vendor.files["disk.tar.zst"] = zstd(_tar({"notes.txt": os.urandom(2 << 20),
                                              "root.img": disk}, "w"))
    image = await images.ensure(ImageSource(vendor.url("disk.raw.zst")))
    assert (image.format, image.digest, image.raw_sha256) == ("zst", sha256(packed),
                                                              sha256(disk))
    # root.img wins over the larger notes.txt: an *.img member is the disk image.
    image = await images.ensure(ImageSource(vendor.url("disk.tar.zst"), format="tar.zst"))
    assert (image.format, image.digest) == ("raw", sha256(disk))


async def test_declared_format_is_checked_against_the_bytes(vendor: Vendor,
                                                            images: ImageStore) -> None:
    vendor.files["disk.raw"] = disk_bytes(1 << 20)
    with pytest.raises(ImageFailed, match="is declared xz but its bytes are raw"):
        await images.ensure(ImageSource(vendor.url("disk.raw"), format="xz"))
