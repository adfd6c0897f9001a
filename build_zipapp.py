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
import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUILD = ROOT / ".build"
DIST = ROOT / "dist"
BUILD_VENV = BUILD / "venv"
SOURCE_DATE_EPOCH = "1735689600"  # 2025-01-01: fixed, so two builds of one tree are identical


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
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-m", "shiv", "--site-packages", str(site),
                    "-e", "dragonfly._entry:main", "-o", str(output), "-p", "/usr/bin/env python3",
                    "--compile-pyc", "--reproducible", "--compressed"], check=True, env=env)
    output.chmod(0o755)
    size = output.stat().st_size / 1e6
    print(f"built {output} ({size:.1f} MB) for CPython {build_info['python'][0]}."
          f"{build_info['python'][1]} on {build_info['machine']}")
    if not loaders:
        print(f"NOTE: {output} has no iPXE loaders (--no-loaders): it CANNOT PXE-boot anything. "
              "The demo works; `dragonfly install` refuses it unless <state_dir>/loaders/ "
              "already holds the loaders.", file=sys.stderr)
    return output


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
