#!/usr/bin/env python3
"""Build ``dist/dragonfly``: one executable file holding Dragonfly and its dependencies.

    python3 build_zipapp.py            # build
    python3 build_zipapp.py --run      # build, then start it (the demo when not installed)

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


def fetch_loaders() -> None:
    """Bundle the iPXE loaders from Debian's ipxe package when it is installed."""
    script = ROOT / "scripts" / "fetch_loaders.py"
    if not script.exists():
        return
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT)
    if result.returncode != 0:
        print("warning: iPXE loaders not bundled (install Debian's `ipxe` package); the demo "
              "does not need them, PXE booting does", file=sys.stderr)


def build(output: Path) -> Path:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"build_zipapp.py needs Python 3.11 (this is {platform.python_version()}): "
                 "the zipapp runs on the interpreter it was built with")
    python = ensure_build_venv()
    fetch_loaders()
    site = BUILD / "site"
    shutil.rmtree(site, ignore_errors=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_NO_WARN_SCRIPT_LOCATION": "1"}
    # A fresh copy of the tree keeps setuptools' build/ and egg-info out of the checkout.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-compile", "--target", str(site), str(ROOT)], check=True, env=env)
    from dragonfly_version import read_version  # type: ignore[import-not-found]

    build_info = {"version": read_version(), "python": list(sys.version_info[:2]),
                  "implementation": sys.implementation.name, "machine": platform.machine()}
    (site / "dragonfly" / "_build.json").write_text(json.dumps(build_info) + "\n")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: the zipapp is the script
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-m", "shiv", "--site-packages", str(site),
                    "-e", "dragonfly._entry:main", "-o", str(output), "-p", "/usr/bin/env python3",
                    "--compile-pyc", "--reproducible", "--compressed"], check=True, env=env)
    output.chmod(0o755)
    size = output.stat().st_size / 1e6
    print(f"built {output} ({size:.1f} MB) for CPython {build_info['python'][0]}."
          f"{build_info['python'][1]} on {build_info['machine']}")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DIST / "dragonfly")
    # An optional with REMAINDER takes everything after it, options included (a positional
    # REMAINDER would leave `--run --port 8080` to argparse, which rejects --port).
    parser.add_argument("--run", nargs=argparse.REMAINDER, default=None, metavar="ARGS",
                        help="start the result after building; ARGS go to dragonfly")
    args = parser.parse_args()
    output = build(args.output.resolve())
    if args.run is not None:
        os.execv(str(output), [str(output), *args.run])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    main()
