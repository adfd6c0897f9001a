#!/usr/bin/env python3
"""Copy the iPXE loaders listed in ipxe/manifest.toml from Debian's `ipxe` package into
ipxe/loaders/ (build output, bundled into the wheel and zipapp) and write
ipxe/loaders/VERSIONS.txt: package version, then size and sha256 of every file.

    python scripts/fetch_loaders.py [--dest DIR] [--source-root /] [--cache DIR]

Where the loaders come from:

1. the installed package (`apt-get install ipxe`): its files under --source-root;
2. otherwise the package itself, fetched with `apt-get download ipxe` into --cache and
   unpacked with `dpkg-deb -x`: no install and no root needed, only apt's package lists and
   network to the Debian archive. When apt has no package lists at all it runs
   `apt-get update` first if it is root, and otherwise says to;
3. when neither works it fails (status 1) and says what to run. It never leaves a partial
   set behind: the destination is only replaced once every loader was found.

Loaders that no Debian package provides (arm64 snp.efi) are recorded as missing; Dragonfly
then looks for them only in the override directory <state_dir>/loaders/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "ipxe" / "manifest.toml"
DEFAULT_DEST = REPO / "ipxe" / "loaders"
DEFAULT_CACHE = REPO / ".build" / "debs"
SYMLINK_HOPS = 8  # the Debian package has one absolute link (ipxe.efi -> /boot/ipxe.efi)


class FetchError(Exception):
    """Why the loaders could not be had, in words meant for the person building."""


def say(message: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(message + "\n")


def package_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError:  # not a Debian system
        return None
    if out.returncode != 0:
        return None
    status, _, version = out.stdout.partition("\t")
    return version.strip() if status.endswith("installed") and version.strip() else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_in(root: Path, path: str) -> Path | None:
    """``path`` (absolute, as the package installs it) as a regular file under ``root``.

    Symlinks are followed inside ``root``: an unpacked package's absolute link
    (/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi) must not reach into the build host's /boot."""
    current = root / path.lstrip("/")
    for _ in range(SYMLINK_HOPS):
        if not current.is_symlink():
            return current if current.is_file() else None
        target = current.readlink()
        current = root / str(target).lstrip("/") if target.is_absolute() else \
            current.parent / target
    return None


@dataclass
class Source:
    """Where a set of loaders was found: a filesystem root holding the package's files."""

    root: Path
    version: str
    origin: str  # for the person building: "installed package", "downloaded ..."


def installed_source(root: Path, package: str, paths: list[str],
                     version: str | None) -> tuple[Source | None, str]:
    """The installed package, when every loader it should provide is there; else why not."""
    absent = [p for p in paths if resolve_in(root, p) is None]
    if absent:
        where = "" if root == Path("/") else f" under {root}"
        return None, f"{', '.join(absent)} not found{where}"
    if version is None:
        version = package_version(package) if root == Path("/") else None
    if version is None:
        return None, (f"the files are there but the package '{package}' is not installed, so "
                      "their version is unknown")
    return Source(root, version, f"installed package {package}"), ""


def _apt(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=600)
    except FileNotFoundError as exc:
        raise FetchError(f"`{argv[0]}` is not on PATH: this is not a Debian system with "
                         "apt and dpkg") from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"`{' '.join(argv)}` did not finish within 10 minutes") from exc


def apt_has_lists() -> bool:
    """Whether apt has any package lists: a fresh container, or a system whose lists were
    cleaned, has none, and `apt-get download` then finds no package at all."""
    out = _apt(["apt-config", "shell", "LISTS", "Dir::State::lists/d"])
    lists = Path("/var/lib/apt/lists")
    if out.returncode == 0 and "=" in out.stdout:
        lists = Path(out.stdout.split("=", 1)[1].strip().strip("'\""))
    return any(lists.glob("*_Packages*"))


def download_source(package: str, cache: Path) -> Source:
    """Fetch ``package`` with `apt-get download` into ``cache`` and unpack it there."""
    cache.mkdir(parents=True, exist_ok=True)
    # A fresh staging directory per run: afterwards it holds exactly this run's .deb, whatever
    # older versions the cache has. apt as root hands the download to its sandbox user _apt,
    # which must be able to write here (it otherwise warns and downloads as root).
    staging = Path(tempfile.mkdtemp(prefix="download-", dir=cache))
    staging.chmod(0o755)
    try:
        argv = ["apt-get", "download", package]
        done = _apt(argv, cwd=staging)
        if done.returncode != 0 and not apt_has_lists():
            if os.geteuid() != 0:
                raise FetchError(f"`{' '.join(argv)}` failed: apt has no package lists on this "
                                 f"machine. Run `sudo apt-get update`, then build again.\n"
                                 f"  apt-get said: {_last_lines(done)}")
            say("apt has no package lists: running apt-get update")
            update = _apt(["apt-get", "update", "-qq"])
            if update.returncode != 0:
                raise FetchError(f"`apt-get update` failed ({update.returncode}):\n  "
                                 f"{_last_lines(update)}")
            done = _apt(argv, cwd=staging)
        if done.returncode != 0:
            raise FetchError(f"`{' '.join(argv)}` failed ({done.returncode}):\n"
                             f"  {_last_lines(done)}")
        debs = sorted(staging.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise FetchError(f"`{' '.join(argv)}` succeeded but left {len(debs)} .deb files "
                             f"for {package} in {staging}")
        deb = cache / debs[0].name
        debs[0].replace(deb)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    version = _apt(["dpkg-deb", "-f", str(deb), "Version"])
    if version.returncode != 0 or not version.stdout.strip():
        raise FetchError(f"`dpkg-deb -f {deb} Version` failed: {_last_lines(version)}")
    unpacked = cache / f"{package}-unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)  # never mix files of two versions
    done = _apt(["dpkg-deb", "-x", str(deb), str(unpacked)])
    if done.returncode != 0:
        raise FetchError(f"`dpkg-deb -x {deb}` failed ({done.returncode}): {_last_lines(done)}")
    return Source(unpacked, version.stdout.strip(), f"downloaded {deb}")


def _last_lines(done: subprocess.CompletedProcess[str], count: int = 6) -> str:
    text = (done.stderr or "") + (done.stdout or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n  ".join(lines[-count:]) or "(no output)"


def write_loaders(dest: Path, manifest: dict[str, object], package: str, source: Source
                  ) -> tuple[int, list[str]]:
    """Copy the loaders into a fresh directory beside ``dest``, then swap it in: a failure
    half-way leaves the previous build's loaders as they were."""
    loaders = manifest.get("loader", [])
    assert isinstance(loaders, list)
    meta = manifest.get("source", {})
    assert isinstance(meta, dict)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        rows, missing = [], []
        for entry in loaders:
            name, debian_path = entry["filename"], entry.get("debian_path", "")
            if not debian_path:
                missing.append(f"{name}\tMISSING\tno Debian package provides it; place it in "
                               "<state_dir>/loaders/")
                continue
            origin = resolve_in(source.root, debian_path)
            if origin is None:  # installed_source checked; a downloaded package may differ
                raise FetchError(f"{debian_path} is not in package {package} {source.version} "
                                 f"({source.origin}): ipxe/manifest.toml needs updating")
            target = work / name
            shutil.copyfile(origin, target)
            target.chmod(0o644)
            rows.append(f"{name}\t{target.stat().st_size}\tsha256:{sha256(target)}\t"
                        f"{debian_path}")
            say(f"  {name:14s} <- {debian_path}")
        lines = [
            "# iPXE loaders bundled with Dragonfly. Generated by scripts/fetch_loaders.py.",
            f"package: {package} {source.version} (Debian source package "
            f"{meta.get('debian_source_package', package)})",
            f"upstream: {meta.get('upstream', '')}",
            f"licence: {meta.get('licence', '')} (corresponding source: LOADERS.md)",
            "# filename\tsize\tsha256\tcopied from",
            *rows,
            *missing,
        ]
        (work / "VERSIONS.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        work.chmod(0o755)
        old = dest.parent / f".{dest.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        work.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return len(rows), [m.split("\t")[0] for m in missing]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--source-root", type=Path, default=Path("/"),
                    help="where the installed package's files are rooted (default /; an empty "
                         "directory makes it download the package)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"where the downloaded .deb is kept and unpacked (default: "
                         f"{DEFAULT_CACHE})")
    ap.add_argument("--package-version", help="skip dpkg-query and record this version for "
                                               "the files under --source-root")
    args = ap.parse_args()

    manifest = tomllib.loads(args.manifest.read_text(encoding="utf-8"))
    package = manifest.get("source", {}).get("debian_binary_package", "ipxe")
    paths = [e["debian_path"] for e in manifest.get("loader", []) if e.get("debian_path")]
    try:
        source, why_not = installed_source(args.source_root, package, paths,
                                           args.package_version)
        if source is None:
            say(f"iPXE loaders: not taken from the installed package ({why_not}); "
                f"fetching Debian's {package} package with apt-get download")
            source = download_source(package, args.cache)
        count, missing = write_loaders(args.dest, manifest, package, source)
    except FetchError as exc:
        say(f"error: cannot bundle the iPXE loaders: {exc}\n"
            f"Fix it with one of:\n"
            f"  - give this machine access to the Debian archive (`sudo apt-get update` must "
            f"work), then build again: the build runs `apt-get download {package}` itself;\n"
            f"  - or install the package: `sudo apt-get install {package}`.", error=True)
        return 1
    say(f"wrote {args.dest / 'VERSIONS.txt'}: {package} {source.version} from "
        f"{source.origin}, {count} loaders" + (f", missing: {', '.join(missing)}"
                                               if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
