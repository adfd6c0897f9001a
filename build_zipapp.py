#!/usr/bin/env python3
"""Build ``dist/dragonfly``: one executable file holding Dragonfly and its dependencies.

    python3 build_zipapp.py            # build
    python3 build_zipapp.py --run      # build, then start it (the demo when not installed)
    python3 build_zipapp.py --no-loaders   # deliberately without the iPXE loaders

The iPXE boot loaders are always bundled (``scripts/fetch_loaders.py``): from Debian's ``ipxe``
package when it is installed, else from that package fetched with ``apt-get download`` (no
install, no root). When neither works the build fails and says what to run: a zipapp without
loaders cannot PXE-boot anything, so building one takes ``--no-loaders``.

Uses shiv (installed into a private build venv when this interpreter lacks it). The result is
reproducible (fixed timestamps) and platform-specific: aiohttp and cryptography carry compiled
code, so it runs on the CPython version and CPU architecture it was built with (recorded in
``dragonfly/_build.json`` and checked at start).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import py_compile
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUILD = ROOT / ".build"
DIST = ROOT / "dist"
BUILD_VENV = BUILD / "venv"
SOURCE_DATE_EPOCH = "1735689600"  # 2025-01-01: fixed, so two builds of one tree are identical
SHIV_OPTIONS = ("-p", "/usr/bin/env python3", "--reproducible", "--compressed")
# Pure-Python packages that need no files of their own on disk and that no start imports,
# imported (zipimport) from one zip instead of being unpacked file by file at the first start,
# where every file costs about a millisecond: ~1,400 files, tzdata's zoneinfo (dateutil's
# fallback) alone 630. Not pyghmi: it lists its own directory for plugins. Not what every
# start imports (aiohttp's attrs, yarl's idna): the zip is opened at the first import of one
# of its packages, and reading its directory costs ~10 ms. Its entries are compressed, and the
# zipapp keeps it outside what shiv unpacks (LATER) until then. It also holds the .dist-info
# of the packages in the zips (the hook's find_distributions finds them there).
ZIPPED_PACKAGES = ("anyio", "cffi", "dateutil", "dns", "h11", "h2", "hpack", "httpcore2",
                   "httpx2", "hyperframe", "jinja2", "lightkube", "prometheus_client",
                   "pycparser", "pyotp", "segno", "sniffio", "truststore", "tzdata", "wsproto")
ZIPPED = "_zipped.zip"
# Packages whose modules every start imports, imported from a zip of their own (with their
# .pyc, uncompressed: nothing to inflate at import) while their package directory stays on
# disk for the files that must be real: the package's __init__, the data it reads relative
# to itself (importlib.resources of the package: dragonfly/_build.json, data/) and the data
# subpackages that are served or checked as files (dragonfly.ipxe: `dragonfly install` looks
# for site-packages/dragonfly/ipxe/loaders/ in the zipapp, TFTP serves the loaders). The hook
# puts the zip first on the package's __path__. Dragonfly's ~440 files were a third of what
# the first start unpacked. The panel's files (dragonfly.web, ~80: templates read by jinja2's
# PackageLoader, static files read once into memory through importlib.resources) are read
# from the zip too.
START_ZIPPED = {"dragonfly": ("ipxe", "data")}
START_ZIP = "_start.zip"
# Packages that need real files (compiled extensions; pyghmi lists its own directory) and that
# no start imports: kept, compiled, in _lazy.zip, which stays in the zipapp (LATER) until the
# first import of one of them, when the hook copies it out and unpacks that package into
# site-packages (~150 ms of the first start, cryptography's 158 files and 15 MB alone ~95 ms).
# Keys are import names, values what makes them up in site-packages: "name/" a directory,
# "name." a module's file. Their .dist-info is in _zipped.zip (see ZIPPED_PACKAGES).
LAZY_PACKAGES = {"cryptography": ("cryptography/",), "_cffi_backend": ("_cffi_backend.",),
                 "yaml": ("yaml/",), "_yaml": ("_yaml/",), "pyghmi": ("pyghmi/",),
                 "msgspec": ("msgspec/",), "markupsafe": ("markupsafe/",)}
LAZY_ZIP = "_lazy.zip"
# Where the zipapp keeps _lazy.zip and _zipped.zip: outside site-packages/, which is all that
# shiv unpacks at the first start, and stored (their entries are compressed already). The hook
# copies one into the unpacked site-packages when a package in it is first imported (or its
# metadata first read): the first start writes 12 MB less. _start.zip, which every start
# reads, is unpacked by shiv but stored too: copied at the first start, not inflated.
LATER = "later/"
# Run by site (an "import" line of a .pth file) when shiv adds the unpacked site-packages.
ZIPPED_HOOK = """\
\"\"\"Imports from the zips build_zipapp.py made in this directory: _zipped.zip goes on sys.path at
the first import of one of its packages (until then, imports that find nothing, such as
subprocess's probe for msvcrt, do not make zipimport read the zip's directory), the modules
of the packages split by _start.zip are found there first, and a package in _lazy.zip is
unpacked beside this file at its first import. _zipped.zip and _lazy.zip are copied here from
the zipapp (which shiv does not unpack them from) when first needed.\"\"\"
import os
import sys
from importlib.machinery import PathFinder

SITE = os.path.dirname(os.path.abspath(__file__))
ZIP = os.path.join(SITE, "_zipped.zip")
# The zipapp that shiv unpacked this directory from (shiv reads sys.argv[0] too), held open:
# the zips below are copied out of it at their first use, from this very file even if a new
# build has replaced it on disk since.
try:
    ARCHIVE_PATH = os.path.abspath(sys.argv[0])
    ARCHIVE = os.open(ARCHIVE_PATH, os.O_RDONLY) if os.path.isfile(ARCHIVE_PATH) else None
except (AttributeError, IndexError, OSError):
    ARCHIVE = None  # not started from a zipapp: the zips are in SITE already
LATER = {later!r}
NAMES = frozenset({names!r})
START_ZIP = os.path.join(SITE, "_start.zip")
SPLIT = frozenset({split!r})
LAZY = {lazy!r}


def later(name):
    \"\"\"SITE/name, copied there from the zipapp at its first use (a private copy renamed into
    place: two processes at once are fine).\"\"\"
    import json
    import shutil
    import zipfile

    path = os.path.join(SITE, name)
    if os.path.exists(path) or ARCHIVE is None:
        return path
    source = "/proc/self/fd/%d" % ARCHIVE  # a file position of its own
    if not os.path.exists(source):
        source = ARCHIVE_PATH  # the descriptor was closed: the build id check below still holds
    temp = "%s.%d.copying" % (path, os.getpid())
    try:
        with zipfile.ZipFile(source) as archive:
            build = json.loads(archive.read("environment.json"))["build_id"]
            if not os.path.basename(os.path.dirname(SITE)).endswith("_" + build):
                raise ImportError("%s is not the zipapp %s was unpacked from (replaced "
                                  "by another build?)" % (ARCHIVE_PATH, SITE))
            with archive.open(LATER + name) as src, open(temp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def unpack(name):
    \"\"\"Unpack ``name``'s entries of _lazy.zip into this directory, once: into a private
    directory first, then renamed into place (another process unpacking the same package at
    the same moment leaves the same files; a directory already there stays).\"\"\"
    import shutil
    import zipfile

    prefixes = LAZY.pop(name)
    present = [e + "/" if os.path.isdir(os.path.join(SITE, e)) else e for e in os.listdir(SITE)]
    if all(any(e.startswith(p) for e in present) for p in prefixes):
        return  # unpacked by an earlier start
    temp = os.path.join(SITE, ".%s.%d.unpacking" % (name, os.getpid()))
    shutil.rmtree(temp, ignore_errors=True)
    try:
        with zipfile.ZipFile(later("_lazy.zip")) as archive:
            for member in archive.namelist():
                if member.startswith(prefixes):
                    archive.extract(member, temp)
        for entry in os.listdir(temp):
            try:
                os.rename(os.path.join(temp, entry), os.path.join(SITE, entry))
            except OSError:
                pass  # another process's copy is in place
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    finder = sys.path_importer_cache.get(SITE)
    if finder is not None:
        finder.invalidate_caches()  # it listed this directory before the package was there


class ZippedPackages:
    added = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is not None:
            return None
        if name in SPLIT:
            # The package's __init__ on disk, its modules in the zip (searched first).
            spec = PathFinder.find_spec(name, [SITE])
            if spec is not None and spec.submodule_search_locations is not None:
                spec.submodule_search_locations.insert(0, os.path.join(START_ZIP, name))
            return spec
        if name in LAZY:
            unpack(name)  # then found here by the path finder, next in sys.meta_path
            return None
        if not cls.added and name in NAMES:
            later("_zipped.zip")
            cls.added = True
            # Right after this site-packages (and before the interpreter's own), where the
            # path finder, next in sys.meta_path, finds the package.
            sys.path.insert(sys.path.index(SITE) + 1 if SITE in sys.path else 0, ZIP)
        return None

    @classmethod
    def find_distributions(cls, context=None):
        \"\"\"The metadata (.dist-info) of the packages in the zips, which is in _zipped.zip:
        found here until that zip is on sys.path (where the path finder finds it).\"\"\"
        if cls.added or not HAS_METADATA or (context is not None and "path" in vars(context)):
            return iter(())
        from importlib.metadata import DistributionFinder, MetadataPathFinder

        return MetadataPathFinder.find_distributions(DistributionFinder.Context(
            name=getattr(context, "name", None), path=[later("_zipped.zip")]))


HAS_METADATA = {metadata!r}
sys.meta_path.insert(0, ZippedPackages)
"""
# Type stubs, Cython/C sources and pip's install bookkeeping: nothing reads them at run time
# (METADATA, entry points and licenses stay).
PRUNED_SUFFIXES = (".pyi", ".pyx", ".pxd", ".c")
PRUNED_METADATA = ("RECORD", "INSTALLER", "WHEEL", "REQUESTED", "direct_url.json")


def venv_python() -> Path:
    return BUILD_VENV / "bin" / "python"


def ensure_build_venv() -> Path:
    """A venv with shiv and the build backend, created once and reused."""
    python = venv_python()
    if not python.exists():
        print(f"creating build venv in {BUILD_VENV} ...")
        venv.EnvBuilder(with_pip=True, clear=True).create(BUILD_VENV)
    probe = subprocess.run([str(python), "-c", "import shiv, setuptools"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "shiv>=1.0.6", "setuptools>=77", "wheel"], check=True)
    return python


LOADERS_DIR = Path("dragonfly") / "ipxe" / "loaders"  # inside the site-packages shiv bundles


def fetch_loaders(source_root: Path | None, cache: Path | None) -> None:
    """Put the iPXE loaders into ipxe/loaders/ (package data), or stop the build saying why."""
    argv = [sys.executable, str(ROOT / "scripts" / "fetch_loaders.py")]
    if source_root is not None:
        argv += ["--source-root", str(source_root.resolve())]  # it runs in ROOT
    if cache is not None:
        argv += ["--cache", str(cache.resolve())]
    if subprocess.run(argv, cwd=ROOT).returncode != 0:
        sys.exit("build_zipapp.py: stopped: the zipapp would have no iPXE loaders and could not "
                 "PXE-boot anything (fetch_loaders.py said why above). To build one anyway, "
                 "for the demo or to supply the loaders on the server in "
                 "<state_dir>/loaders/, run `python3 build_zipapp.py --no-loaders`.")


def required_loaders() -> list[str]:
    """The loaders a build must carry: every manifest entry a Debian package provides."""
    manifest = tomllib.loads((ROOT / "ipxe" / "manifest.toml").read_text(encoding="utf-8"))
    return [e["filename"] for e in manifest.get("loader", []) if e.get("debian_path")]


def build(output: Path, *, loaders: bool = True, loader_root: Path | None = None,
          deb_cache: Path | None = None) -> Path:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"build_zipapp.py needs Python 3.11 (this is {platform.python_version()}): "
                 "the zipapp runs on the interpreter it was built with")
    python = ensure_build_venv()
    if loaders:
        fetch_loaders(loader_root, deb_cache)
    site = BUILD / "site"
    shutil.rmtree(site, ignore_errors=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_NO_WARN_SCRIPT_LOCATION": "1"}
    # pip builds in the tree, and setuptools would reuse a build/lib left by an earlier build:
    # modules that were moved or deleted since would ride along into the zipapp.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-compile", "--target", str(site), str(ROOT)], check=True, env=env)
    from dragonfly_version import read_version  # type: ignore[import-not-found]

    build_info = {"version": read_version(), "python": list(sys.version_info[:2]),
                  "implementation": sys.implementation.name, "machine": platform.machine()}
    (site / "dragonfly" / "_build.json").write_text(json.dumps(build_info) + "\n")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: the zipapp is the script
    precompile_dataclasses(site)
    if loaders:
        # What the package data actually carried, not what fetch_loaders meant to write.
        absent = [n for n in required_loaders() if not (site / LOADERS_DIR / n).is_file()]
        if absent:
            sys.exit(f"build_zipapp.py: stopped: {', '.join(absent)} missing from "
                     f"{site / LOADERS_DIR} after installing the package")
    else:
        # ipxe/loaders/ may hold an earlier build's loaders: a --no-loaders build carries none,
        # so what it says about itself is true.
        shutil.rmtree(site / LOADERS_DIR, ignore_errors=True)
    pack(site, "dragonfly._entry:main", output, python)
    size = output.stat().st_size / 1e6
    print(f"built {output} ({size:.1f} MB) for CPython {build_info['python'][0]}."
          f"{build_info['python'][1]} on {build_info['machine']}")
    if not loaders:
        print(f"NOTE: {output} has no iPXE loaders (--no-loaders): it CANNOT PXE-boot anything. "
              "The demo works; `dragonfly install` refuses it unless <state_dir>/loaders/ "
              "already holds the loaders.", file=sys.stderr)
    return output


def precompile_dataclasses(site: Path) -> None:
    """dragonfly/_dataclasses.marshal: the code dataclasses generates for the package's
    classes, compiled here rather than at every start (dragonfly/_precompiled.py). Run in
    a separate interpreter (this one, isolated, writing no .pyc) that imports the package
    from ``site``."""
    out = site / "dragonfly" / "_dataclasses.marshal"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from dragonfly._precompiled import main; sys.exit(main(sys.argv[2:]))")
    env = {**os.environ, "DRAGONFLY_CONFIG": str(site / "no-such-config.toml")}
    subprocess.run([sys.executable, "-I", "-B", "-c", script, str(site), str(out)], check=True,
                   cwd=site, env=env)


def pack(site: Path, entry: str, output: Path, python: Path) -> None:
    """``site`` (a pip --target directory) into the zipapp ``output``: the one recipe, which
    bench/startup.py also uses for its peer.

    Modules are compiled here, as unchecked-hash .pyc added to the zipapp beside their sources
    (shiv leaves .pyc out): the first start only unpacks, where shiv's --compile-pyc compiled
    every module of every dependency first (1.7 s here). Unchecked is safe because the unpacked
    copy is never edited (shiv names its directory by the build's hash); hash-based pycs carry
    no timestamps, so the build stays reproducible."""
    for path in [p for p in site.rglob("*") if p.suffix in PRUNED_SUFFIXES and p.is_file()]:
        path.unlink()
    zipped = [n for n in ZIPPED_PACKAGES if (site / n).is_dir()]
    metadata = _zipped_metadata(site, (*(n + "/" for n in zipped),
                                       *(p for ps in LAZY_PACKAGES.values() for p in ps)))
    for name in PRUNED_METADATA:
        for path in site.glob(f"*.dist-info/{name}"):
            path.unlink()
    shutil.rmtree(site / "share", ignore_errors=True)  # man pages (segno's): nothing reads them
    zip_packages(site, zipped, metadata)
    output.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    # shiv names the unpack cache by a hash of everything in site, the zips included.
    subprocess.run([str(python), "-m", "shiv", "--site-packages", str(site), "-e", entry,
                    "-o", str(output), *SHIV_OPTIONS], check=True, env=env)
    compileall.compile_dir(site, quiet=2, workers=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _finish(output, site)
    output.chmod(0o755)


def _finish(output: Path, site: Path) -> None:
    """Rewrite shiv's zipapp with the .pyc beside their sources, _lazy.zip and _zipped.zip
    moved out of site-packages/ (to LATER) and the three zips stored, not deflated."""
    stamp = (1980, 1, 1, 0, 0, 0)  # fixed: reproducible
    data = output.read_bytes()
    prefix = data[:data.index(b"PK\x03\x04")]  # the shebang line
    temp = output.with_name(output.name + ".tmp")
    with zipfile.ZipFile(output) as built, temp.open("wb") as fd:
        fd.write(prefix)
        with zipfile.ZipFile(fd, "w") as archive:
            for info in built.infolist():
                name, compression = info.filename, info.compress_type
                inside = name.removeprefix("site-packages/")
                if inside in (START_ZIP, LAZY_ZIP, ZIPPED):
                    compression = zipfile.ZIP_STORED
                    if inside != START_ZIP:
                        name = LATER + inside
                copy = zipfile.ZipInfo(name, info.date_time)
                copy.external_attr = info.external_attr
                archive.writestr(copy, built.read(info), compression)
            for path in sorted(site.rglob("*.pyc")):
                info = zipfile.ZipInfo(f"site-packages/{path.relative_to(site).as_posix()}",
                                       stamp)
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    temp.replace(output)


def _zipped_metadata(site: Path, moved: tuple[str, ...]) -> list[Path]:
    """The .dist-info directories of packages that go into the zips (every file their RECORD
    lists is one of ``moved``'s): into _zipped.zip with them, ~65 files fewer to unpack."""
    found = []
    for record in sorted(site.glob("*.dist-info/RECORD")):
        meta = record.parent.name
        paths = [line.split(",")[0] for line in record.read_text().splitlines() if line]
        tops = {_top(p) for p in paths
                if not p.startswith((meta + "/", "../", "bin/", "share/"))
                and "__pycache__" not in p}
        if tops and all(t.startswith(moved) for t in tops):
            found.append(record.parent)
    return found


def _top(path: str) -> str:
    """A RECORD path's top-level entry as LAZY_PACKAGES names it ("name/" or the file)."""
    head, _, rest = path.partition("/")
    return head + "/" if rest else head


def zip_packages(site: Path, names: list[str], metadata: list[Path] | None = None) -> None:
    """Move packages into ``site/_zipped.zip`` and the modules of the START_ZIPPED packages
    into ``site/_start.zip``; a .pth file's hook finds them there (zipimport reads their
    modules and importlib.resources their data). Each module's .pyc sits beside its source,
    where zipimport looks for it (it compiles a module without one at every import)."""
    split = [n for n in START_ZIPPED if (site / n / "__init__.py").is_file()]
    lazy = {name: prefixes for name, prefixes in LAZY_PACKAGES.items()
            if any(_entry(p).startswith(prefixes) for p in site.iterdir())}
    if not names and not split and not lazy:
        return
    metadata = metadata or []
    if names or metadata:
        with zipfile.ZipFile(site / ZIPPED, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in names:
                for path in _compiled_files(site / name):
                    _add(archive, site, path, zipfile.ZIP_DEFLATED)
                shutil.rmtree(site / name)
            for meta in metadata:  # found by the hook's find_distributions
                for path in sorted(meta.rglob("*")):
                    if path.is_file():
                        _add(archive, site, path, zipfile.ZIP_DEFLATED)
                shutil.rmtree(meta)
    if split:
        with zipfile.ZipFile(site / START_ZIP, "w", zipfile.ZIP_STORED) as archive:
            for name in split:
                package = site / name
                on_disk = [package / d for d in START_ZIPPED[name]]
                for path in _compiled_files(package):
                    if path.parent == package and (path.name == "__init__.py"
                                                   or path.suffix not in (".py", ".pyc")):
                        continue  # the package's own __init__ and files: on disk
                    if any(path.is_relative_to(d) for d in on_disk):
                        continue
                    _add(archive, site, path, zipfile.ZIP_STORED)
                    path.unlink()
                for path in sorted(package.rglob("*.pyc"), reverse=True):
                    if "__pycache__" not in path.parts:
                        path.unlink()  # zipimport's copies of the modules left on disk
                for path in sorted(package.rglob("*"), reverse=True):
                    if path.is_dir() and not any(path.iterdir()):
                        path.rmdir()  # emptied into the zip
    if lazy:
        with zipfile.ZipFile(site / LAZY_ZIP, "w", zipfile.ZIP_DEFLATED) as archive:
            prefixes = tuple(p for ps in lazy.values() for p in ps)
            for top in sorted(p for p in site.iterdir() if _entry(p).startswith(prefixes)):
                if top.is_dir():
                    compileall.compile_dir(top, quiet=2, workers=0, invalidation_mode=(
                        py_compile.PycInvalidationMode.UNCHECKED_HASH))
                    for path in sorted(top.rglob("*")):
                        if path.is_file():
                            _add(archive, site, path, zipfile.ZIP_DEFLATED)
                    shutil.rmtree(top)
                else:
                    _add(archive, site, top, zipfile.ZIP_DEFLATED)
                    top.unlink()
    (site / "_zipped_path.py").write_text(ZIPPED_HOOK.format(
        names=sorted(names), split=sorted(split), later=LATER, metadata=bool(metadata),
        lazy={name: tuple(prefixes) for name, prefixes in sorted(lazy.items())}))
    (site / "_zipped.pth").write_text("import _zipped_path\n")


def _compiled_files(package: Path) -> list[Path]:
    """The package's files after compiling its modules to .pyc beside them (legacy layout,
    unchecked hash: the zip is never edited), without __pycache__ directories."""
    compileall.compile_dir(package, quiet=2, legacy=True, workers=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return [path for path in sorted(package.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts]


def _entry(path: Path) -> str:
    """A top-level entry of site-packages as LAZY_PACKAGES names it."""
    return path.name + "/" if path.is_dir() else path.name


def _add(archive: zipfile.ZipFile, site: Path, path: Path, compression: int) -> None:
    info = zipfile.ZipInfo(path.relative_to(site).as_posix(), (1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16  # fixed stamp and mode: reproducible
    archive.writestr(info, path.read_bytes(), compression)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DIST / "dragonfly")
    parser.add_argument("--no-loaders", action="store_true",
                        help="build without the iPXE loaders (the result cannot PXE-boot)")
    parser.add_argument("--loader-root", type=Path, default=None, metavar="DIR",
                        help="where the installed ipxe package's files are rooted (default /); "
                             "without its loaders there the build downloads the package")
    parser.add_argument("--deb-cache", type=Path, default=None, metavar="DIR",
                        help="where the downloaded ipxe .deb is kept (default .build/debs)")
    # An optional with REMAINDER takes everything after it, options included (a positional
    # REMAINDER would leave `--run --port 8080` to argparse, which rejects --port).
    parser.add_argument("--run", nargs=argparse.REMAINDER, default=None, metavar="ARGS",
                        help="start the result after building; ARGS go to dragonfly")
    args = parser.parse_args()
    output = build(args.output.resolve(), loaders=not args.no_loaders,
                   loader_root=args.loader_root, deb_cache=args.deb_cache)
    if args.run is not None:
        os.execv(str(output), [str(output), *args.run])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    main()
