"""Installer files into the image store: the distribution's checksum line for a download, and
the offline import of a Debian package that ships them (``debian-installer-12-netboot-amd64``:
``apt-get download`` it anywhere, copy the .deb, import it)."""

from __future__ import annotations

import asyncio
import configparser
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from dragonfly.errors import InvalidInput
from dragonfly.images import checksums, fetch
from dragonfly.simple.installers import Installer, InstallerFile

if TYPE_CHECKING:
    from dragonfly.images import ImageStore


def treeinfo_checksum(text: str, entry: str, where: str) -> str:
    """``sha256:HEX`` of ``entry`` in a ``.treeinfo``'s ``[checksums]`` section, or
    InvalidInput: no section, no line for the file, or not a sha256."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # paths keep case
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise InvalidInput(f"{where} is not a readable .treeinfo: {exc}") from None
    if not parser.has_section("checksums"):
        raise InvalidInput(f"{where} has no [checksums] section: {entry} cannot be verified")
    value = parser.get("checksums", entry, fallback="").strip()
    if not value:
        raise InvalidInput(f"{where} has no checksum for {entry}: not downloaded unverified")
    algorithm, _, digest = value.partition(":")
    if algorithm.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise InvalidInput(f"{where}: the checksum of {entry} is not sha256:HEX ({value[:80]!r})")
    return f"sha256:{digest.lower()}"


async def expected_checksum(file: InstallerFile) -> str:
    """``sha256:HEX`` from the distribution's checksum file, by the file's full path there
    (Debian's SHA256SUMS lists several ``initrd.gz``: cdrom, netboot, gtk; a RHEL-family
    tree's ``.treeinfo`` lists ``images/pxeboot/vmlinuz``)."""
    async with aiohttp.ClientSession(timeout=fetch.timeout(60), trust_env=True) as http:
        text = await fetch.fetch_text(http, file.checksum_url)
    if file.checksum_format == "treeinfo":
        return treeinfo_checksum(text, file.checksum_entry, file.checksum_url)
    for name, algorithm, value in checksums.entries(text):
        if name.strip() == file.checksum_entry:
            return f"{algorithm}:{value}"
    raise InvalidInput(f"{file.checksum_url} has no line for {file.checksum_entry}")


def _extract(deb: Path, members: tuple[str, ...], out: Path) -> dict[str, Path]:
    """The named files of a .deb's data, streamed (``dpkg-deb --fsys-tarfile``)."""
    if shutil.which("dpkg-deb") is None:
        raise InvalidInput("dpkg-deb is needed to import a Debian package (apt-get install "
                           "dpkg)")
    wanted = {f"./{m}": m for m in members}
    found: dict[str, Path] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                member = wanted.get(info.name) or wanted.get(f"./{info.name}")
                if member is None or not info.isfile():
                    continue
                src = tar.extractfile(info)
                assert src is not None
                target = out / Path(member).name
                with open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
                found[member] = target
                if len(found) == len(members):
                    break
        proc.kill()
    missing = [m for m in members if m not in found]
    if missing:
        raise InvalidInput(f"{deb.name} does not contain {', '.join(missing)}")
    return found


async def import_package(images: ImageStore, installer: Installer, deb: Path
                         ) -> dict[str, Any]:
    """Import the installer's kernel and initrd from its Debian package into the store,
    recorded for the template, so installs of it never download them."""
    if not installer.package:
        raise InvalidInput(f"{installer.slug}'s installer does not come as a Debian package")
    if not await asyncio.to_thread(deb.is_file):
        raise InvalidInput(f"no such file: {deb}")
    # The temporary directory is made and removed in a thread: file I/O stays off the loop.
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="dragonfly-installer-"))
    try:
        found = await asyncio.to_thread(_extract, deb, installer.package_paths, tmp)
        out: dict[str, Any] = {}
        for role, member in zip(("kernel", "initrd"), installer.package_paths, strict=True):
            image = await images.import_file(found[member],
                                             template=installer.image_key(role))
            out[role] = {"digest": image.digest, "size": image.size}
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    return out
