"""Loader lookup (override dir, bundled dir, zip), the manifest, and the fetch script."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dragonfly.boot.loaders import Loaders, bundled_root, parse_manifest
from dragonfly.edge.tftp import TftpServer

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "ipxe" / "manifest.toml"
FETCH = ROOT / "scripts" / "fetch_loaders.py"
DEBIAN = Path("/usr/lib/ipxe")


def need_debian_ipxe() -> None:
    if not (DEBIAN / "ipxe.efi").is_file():
        pytest.fail("Debian's iPXE loaders are missing: apt-get install ipxe")


def fake_bundle(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "bundle"
    (root / "loaders").mkdir(parents=True)
    shutil.copy(MANIFEST, root / "manifest.toml")
    for name, data in files.items():
        (root / "loaders" / name).write_bytes(data)
    return root


def test_manifest_declares_the_loaders() -> None:
    manifest = parse_manifest(MANIFEST.read_text())
    by_name = {s.filename: s for s in manifest.loaders}
    assert set(by_name) == {"undionly.kpxe", "ipxe.efi", "snponly.efi", "snp.efi"}
    assert by_name["undionly.kpxe"].dhcp_arch == (0,)
    assert 9 in by_name["ipxe.efi"].dhcp_arch and by_name["snp.efi"].dhcp_arch == (11,)
    assert by_name["snp.efi"].debian_path == ""  # no Debian package has it
    assert manifest.source["licence"] == "GPL-2.0-or-later"
    assert manifest.source["upstream"] == "https://github.com/ipxe/ipxe"
    assert manifest.source["debian_source_package"] == "ipxe"


@pytest.mark.parametrize("bad", ["../x.efi", "a/b.efi", ".hidden", "", "x\\y"])
def test_manifest_rejects_non_plain_filenames(bad: str) -> None:
    with pytest.raises(ValueError, match="plain name"):
        parse_manifest(f'[[loader]]\nfilename = "{bad.replace(chr(92), chr(92) * 2)}"\n')


def test_manifest_rejects_duplicates_and_bad_toml() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_manifest('[[loader]]\nfilename = "a"\n[[loader]]\nfilename = "a"\n')
    with pytest.raises(ValueError):
        parse_manifest("[[loader]\n")


def test_override_dir_wins_over_bundled(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path, {"ipxe.efi": b"bundled", "undionly.kpxe": b"bios"})
    state = tmp_path / "state"
    (state / "loaders").mkdir(parents=True)
    (state / "loaders" / "ipxe.efi").write_bytes(b"override")
    loaders = Loaders(state, bundled=bundle)
    found = loaders.locate("ipxe.efi")
    assert isinstance(found, Path) and found.read_bytes() == b"override"
    found = loaders.locate("undionly.kpxe")
    assert isinstance(found, Path) and found.read_bytes() == b"bios"
    status = {s.spec.filename: s for s in loaders.status()}
    assert status["ipxe.efi"].origin == "override" and status["ipxe.efi"].size == 8
    assert status["undionly.kpxe"].origin == "bundled"
    assert loaders.missing() == ["snponly.efi", "snp.efi"]
    text = "\n".join(loaders.describe())
    assert f"snp.efi (arm64-efi): MISSING; place it at {state / 'loaders' / 'snp.efi'}" in text
    assert "no Debian package provides it" in text


@pytest.mark.parametrize("name", ["../ipxe.efi", "loaders/ipxe.efi", "/etc/passwd",
                                  "VERSIONS.txt", "manifest.toml", "secret", "IPXE.EFI", ""])
def test_only_manifest_names_are_looked_up(tmp_path: Path, name: str) -> None:
    bundle = fake_bundle(tmp_path, {"ipxe.efi": b"x", "VERSIONS.txt": b"v"})
    state = tmp_path / "state"
    (state / "loaders").mkdir(parents=True)
    (state / "loaders" / "secret").write_bytes(b"s")
    assert Loaders(state, bundled=bundle).locate(name) is None


def test_bundled_inside_a_zip_comes_back_as_bytes(tmp_path: Path) -> None:
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("dragonfly/ipxe/manifest.toml", MANIFEST.read_text())
        z.writestr("dragonfly/ipxe/loaders/ipxe.efi", b"zipped")
        z.writestr("dragonfly/ipxe/loaders/VERSIONS.txt", "package: ipxe 1\n")
    root = zipfile.Path(archive, "dragonfly/ipxe/")
    loaders = Loaders(None, bundled=root)
    assert loaders.locate("ipxe.efi") == b"zipped"
    assert loaders.locate("snponly.efi") is None
    assert loaders.versions_text() == "package: ipxe 1\n"
    status = {s.spec.filename: s for s in loaders.status()}
    assert status["ipxe.efi"].origin == "bundled" and status["ipxe.efi"].path is None
    assert status["ipxe.efi"].size == 6


def test_bundled_root_finds_the_package_manifest() -> None:
    root = bundled_root()
    assert root is not None and (root / "manifest.toml").is_file()
    assert (root / "LOADERS.md").is_file()


def test_fetch_script_copies_and_records(tmp_path: Path) -> None:
    need_debian_ipxe()
    dest = tmp_path / "loaders"
    dest.mkdir()
    (dest / "stale.bin").write_bytes(b"old")
    out = subprocess.run([sys.executable, str(FETCH), "--dest", str(dest)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "VERSIONS.txt", "ipxe.efi", "snponly.efi", "undionly.kpxe"]
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ipxe"],
                             capture_output=True, text=True, check=True).stdout
    versions = (dest / "VERSIONS.txt").read_text()
    assert f"package: ipxe {version} " in versions
    for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi"):
        data = (DEBIAN / name).read_bytes()
        assert (dest / name).read_bytes() == data
        assert f"{name}\t{len(data)}\tsha256:{hashlib.sha256(data).hexdigest()}\t" in versions
    assert "snp.efi\tMISSING\tno Debian package provides it" in versions
    loaders = Loaders(tmp_path / "state", bundled=_bundle_from(tmp_path, dest))
    assert loaders.missing() == ["snp.efi"]


def _bundle_from(tmp_path: Path, loaders_dir: Path) -> Path:
    root = tmp_path / "pkg"
    root.mkdir()
    shutil.copy(MANIFEST, root / "manifest.toml")
    shutil.copytree(loaders_dir, root / "loaders")
    return root


def test_fetch_script_names_the_package_when_missing(tmp_path: Path) -> None:
    """A package neither installed nor known to apt (real apt-get: 'Unable to locate')."""
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(MANIFEST.read_text().replace(
        'debian_binary_package = "ipxe"', 'debian_binary_package = "ipxe-not-a-package"'))
    out = subprocess.run([sys.executable, str(FETCH), "--dest", str(tmp_path / "l"),
                          "--manifest", str(manifest), "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "`apt-get download ipxe-not-a-package` failed" in out.stderr
    assert "apt-get install ipxe-not-a-package" in out.stderr
    assert not (tmp_path / "l").exists()


def test_fetch_script_downloads_the_package_when_it_is_not_installed(tmp_path: Path) -> None:
    """No /usr/lib/ipxe (an empty --source-root): the real `apt-get download ipxe`, unpacked
    with dpkg-deb, gives the loaders, and VERSIONS.txt names the downloaded version."""
    empty, cache, dest = tmp_path / "empty", tmp_path / "cache", tmp_path / "loaders"
    empty.mkdir()
    out = subprocess.run([sys.executable, str(FETCH), "--source-root", str(empty),
                          "--cache", str(cache), "--dest", str(dest)],
                         capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (deb,) = cache.glob("ipxe_*.deb")
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert "fetching Debian's ipxe package with apt-get download" in out.stdout
    assert f"ipxe {version} from downloaded {deb}" in out.stdout
    versions = (dest / "VERSIONS.txt").read_text()
    assert f"package: ipxe {version} (Debian source package ipxe)" in versions
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    # ipxe.efi is an absolute link to /boot/ipxe.efi in the package: followed inside it.
    assert (unpacked / "usr/lib/ipxe/ipxe.efi").is_symlink()
    for name, inside in (("undionly.kpxe", "usr/lib/ipxe/undionly.kpxe"),
                         ("ipxe.efi", "boot/ipxe.efi"),
                         ("snponly.efi", "usr/lib/ipxe/snponly.efi")):
        data = (unpacked / inside).read_bytes()
        assert (dest / name).read_bytes() == data
        assert f"{name}\t{len(data)}\tsha256:{hashlib.sha256(data).hexdigest()}\t" in versions
    assert "snp.efi\tMISSING\tno Debian package provides it" in versions


def fake_apt_get(tmp_path: Path) -> dict[str, str]:
    """An environment whose apt-get is a stand-in that fails the way apt does when the archive
    cannot be reached (status 100, an E: line): the real one would succeed here."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text("#!/bin/sh\necho 'E: Failed to fetch (fake apt-get of the test)' >&2\n"
                       "exit 100\n")
    apt_get.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_fetch_script_fails_clearly_and_keeps_what_was_there(tmp_path: Path) -> None:
    empty, dest = tmp_path / "empty", tmp_path / "loaders"
    empty.mkdir()
    dest.mkdir()
    (dest / "ipxe.efi").write_bytes(b"an earlier build's")
    out = subprocess.run([sys.executable, str(FETCH), "--source-root", str(empty),
                          "--cache", str(tmp_path / "cache"), "--dest", str(dest)],
                         capture_output=True, text=True, check=False, env=fake_apt_get(tmp_path))
    assert out.returncode == 1
    assert out.stderr.startswith("error: cannot bundle the iPXE loaders: `apt-get download "
                                 "ipxe` failed (100):\n  E: Failed to fetch (fake apt-get")
    assert "`sudo apt-get update` must work" in out.stderr
    assert "`sudo apt-get install ipxe`" in out.stderr
    assert [p.name for p in dest.iterdir()] == ["ipxe.efi"]  # untouched, no partial set
    assert (dest / "ipxe.efi").read_bytes() == b"an earlier build's"


def _fetch_module() -> Any:
    """scripts/fetch_loaders.py as a module (it is a script, not part of the package)."""
    name = "fetch_loaders_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FETCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_fetch_without_package_lists_says_to_update_when_not_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh system may have no apt lists: unprivileged, the build cannot run apt-get update
    and says to. Real apt-get, pointed (APT_CONFIG) at an empty lists directory."""
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    conf = tmp_path / "apt.conf"
    conf.write_text(f'Dir::State::lists "{lists}/";\nDir::Cache::pkgcache "";\n'
                    'Dir::Cache::srcpkgcache "";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    fetch = _fetch_module()
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 1000)  # as a normal user would run it
    assert fetch.apt_has_lists() is False
    with pytest.raises(fetch.FetchError) as failed:
        fetch.download_source("ipxe", tmp_path / "cache")
    message = str(failed.value)
    assert "`apt-get download ipxe` failed: apt has no package lists on this machine" in message
    assert "Run `sudo apt-get update`, then build again" in message
    assert list((tmp_path / "cache").iterdir()) == []  # no staging directory left behind


def test_resolve_in_keeps_absolute_links_inside_the_unpacked_package(tmp_path: Path) -> None:
    fetch = _fetch_module()
    root = tmp_path / "unpacked"
    (root / "boot").mkdir(parents=True)
    (root / "usr/lib/ipxe").mkdir(parents=True)
    (root / "boot/ipxe.efi").write_bytes(b"from the package")
    (root / "usr/lib/ipxe/ipxe.efi").symlink_to("/boot/ipxe.efi")
    (root / "usr/lib/ipxe/rel.efi").symlink_to("../../../boot/ipxe.efi")
    (root / "usr/lib/ipxe/host.efi").symlink_to("/etc/hostname")  # only the host has it
    (root / "usr/lib/ipxe/loop.efi").symlink_to("/usr/lib/ipxe/loop.efi")
    assert fetch.resolve_in(root, "/usr/lib/ipxe/ipxe.efi") == root / "boot/ipxe.efi"
    relative = fetch.resolve_in(root, "/usr/lib/ipxe/rel.efi")
    assert relative is not None and relative.resolve() == (root / "boot/ipxe.efi").resolve()
    assert fetch.resolve_in(root, "/usr/lib/ipxe/host.efi") is None
    assert fetch.resolve_in(root, "/usr/lib/ipxe/loop.efi") is None
    assert fetch.resolve_in(root, "/usr/lib/ipxe/absent.efi") is None


async def test_tftp_serves_loaders_through_locate(tmp_path: Path) -> None:
    """The wiring `dragonfly serve` uses: TFTP's resolver is Loaders.locate."""
    need_debian_ipxe()
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl not found: apt-get install curl")
    state = tmp_path / "state"
    (state / "loaders").mkdir(parents=True)
    (state / "loaders" / "snponly.efi").write_bytes(b"custom snponly")
    bundle = fake_bundle(tmp_path, {"ipxe.efi": (DEBIAN / "ipxe.efi").read_bytes()})
    server = TftpServer(Loaders(state, bundled=bundle).locate, host="127.0.0.1", port=0)
    await server.start()
    try:
        for name, want in (("ipxe.efi", (DEBIAN / "ipxe.efi").read_bytes()),
                           ("snponly.efi", b"custom snponly")):
            out = tmp_path / f"got-{name}"
            proc = await asyncio.create_subprocess_exec(
                curl, "-sS", "--tftp-blksize", "1456", "-o", str(out),
                f"tftp://127.0.0.1:{server.port}/{name}")
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            assert out.read_bytes() == want
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "-o", str(tmp_path / "x"), f"tftp://127.0.0.1:{server.port}/secret")
        assert await asyncio.wait_for(proc.wait(), 30) == 68  # TFTP "file not found"
    finally:
        await server.stop()


@pytest.mark.zipapp
def test_zipapp_ships_loaders_versions_and_gpl_notice(zipapp: Path) -> None:
    """The binaries travel with their versions and the GPL source notice."""
    need_debian_ipxe()
    with zipfile.ZipFile(zipapp) as z:
        names = set(z.namelist())
        base = "site-packages/dragonfly/ipxe/"
        for name in ("manifest.toml", "LOADERS.md", "loaders/VERSIONS.txt"):
            assert base + name in names, f"{name} missing from the zipapp"
        assert z.read(base + "loaders/ipxe.efi") == (DEBIAN / "ipxe.efi").read_bytes()
        assert b"apt-get source ipxe" in z.read(base + "LOADERS.md")
