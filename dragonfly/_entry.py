"""Zipapp entry point: check the interpreter before importing anything that needs 3.11.

Kept to syntax and imports that any Python 3.6+ understands, so that running the zipapp with
the wrong interpreter prints a clear sentence instead of a confusing traceback.
"""

import gc
import json
import platform
import sys

SUPPORTED = (3, 11)


def _build_record() -> "dict[str, object]":
    try:
        # Beside the package's __init__, which the zipapp keeps on disk (its modules are in
        # _start.zip): read directly, not through importlib.resources (~10 ms to import).
        from pathlib import Path

        import dragonfly

        text = Path(str(dragonfly.__file__)).with_name("_build.json").read_text()
        record = json.loads(text)
    except Exception:
        return {}  # a checkout or a wheel has no build record: check against SUPPORTED
    return record if isinstance(record, dict) else {}


def interpreter_problem() -> "str | None":
    """Return a sentence explaining why this interpreter cannot run Dragonfly, or None."""
    build = _build_record()
    python = build.get("python")
    want_py = (int(python[0]), int(python[1])) if isinstance(python, list) else SUPPORTED
    want_impl = str(build.get("implementation", "cpython"))
    want_machine = build.get("machine")
    have_py = (sys.version_info[0], sys.version_info[1])
    have_machine = platform.machine()
    if sys.implementation.name != want_impl or have_py != want_py:
        want = f"{want_py[0]}.{want_py[1]}"
        return (
            f"this Dragonfly needs {want_impl} {want} but was started with "
            f"{sys.implementation.name} {have_py[0]}.{have_py[1]} ({sys.executable}). "
            f"Run it with python{want} (e.g. `python{want} ./dragonfly`), or build it for "
            "this interpreter with `python build_zipapp.py`."
        )
    if want_machine and have_machine != want_machine:
        return (
            f"this Dragonfly file was built for {want_machine} and this machine is "
            f"{have_machine}: its compiled parts (aiohttp, cryptography) cannot load here. "
            f"Build it on a {have_machine} machine with `python build_zipapp.py`."
        )
    return None


def _use_precompiled() -> None:
    """Hand dataclasses the code the build compiled for Dragonfly's classes (the zipapp
    carries it beside the package: dragonfly/_precompiled.py)."""
    from pathlib import Path

    import dragonfly
    from dragonfly._precompiled import FILE, use

    use(Path(str(dragonfly.__file__)).with_name(FILE))


def main() -> None:
    problem = interpreter_problem()
    if problem:
        sys.stderr.write("dragonfly: " + problem + "\n")
        sys.exit(3)
    # No garbage collection while the start imports and builds (~20 ms of collections that
    # find next to nothing): cli.main turns it back on, or the server once its services run.
    gc.disable()
    _use_precompiled()
    from dragonfly.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
