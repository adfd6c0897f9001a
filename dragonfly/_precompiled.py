"""The code ``dataclasses`` generates for Dragonfly's classes, compiled when the zipapp is built.

A dataclass's ``__init__``, ``__repr__``, ``__eq__`` ... are written as source and compiled when
its module is imported: ~250 compiles, about a quarter of the time Dragonfly's own modules take
to import. ``build_zipapp.py`` runs ``main`` on the built site: it imports every module of the
package, records the sources dataclasses generated and stores them compiled beside the package
(``_dataclasses.marshal``; marshal is tied to the interpreter version, as the zipapp is and
checks at start). At start, ``use`` gives dataclasses that code for a source it knows; any
other source is compiled as before.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import marshal
import pkgutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import CodeType
from typing import Any

FILE = "_dataclasses.marshal"


class CompiledExec:
    """Stands in for ``exec`` inside the dataclasses module (its only caller there is the
    function that compiles generated methods)."""

    def __init__(self, codes: dict[str, CodeType]) -> None:
        self.codes = codes
        self.misses = 0

    def __call__(self, source: Any, globals: dict[str, Any] | None = None,  # noqa: A002
                 locals: Mapping[str, object] | None = None) -> None:  # noqa: A002
        if isinstance(source, str):
            code = self.codes.get(source)
            if code is None:
                self.misses += 1
            else:
                source = code
        builtins.exec(source, globals, locals)


def use(path: Path) -> CompiledExec | None:
    """Serve dataclasses the code stored in ``path``; None (and nothing changed) without it."""
    try:
        codes = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(codes, dict):
        return None
    hook = CompiledExec(codes)
    setattr(dataclasses, "exec", hook)  # noqa: B010 (a module global, looked up before builtins)
    return hook


def record(modules: Iterable[str]) -> tuple[list[str], list[str]]:
    """Import ``modules`` (consumed while recording: a package walk imports as it goes); the
    sources dataclasses compiled meanwhile, and the modules that failed to import."""
    sources: dict[str, None] = {}

    def recording(source: Any, globals: dict[str, Any] | None = None,  # noqa: A002
                  locals: Mapping[str, object] | None = None) -> None:  # noqa: A002
        if isinstance(source, str):
            sources.setdefault(source)
        builtins.exec(source, globals, locals)

    setattr(dataclasses, "exec", recording)  # noqa: B010
    failed = []
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
    finally:
        vars(dataclasses).pop("exec", None)
    return list(sources), failed


def main(argv: list[str]) -> int:
    """``main([OUT])``: record every module of the package (the one on sys.path) into OUT."""
    import dragonfly

    names = (m.name for m in pkgutil.walk_packages(dragonfly.__path__, "dragonfly.")
             if not m.name.endswith("__main__"))
    sources, failed = record(names)
    Path(argv[0]).write_bytes(marshal.dumps({s: compile(s, "<string>", "exec")
                                             for s in sources}))
    if failed:
        sys.stderr.write(f"_precompiled: not imported (their dataclasses compile at run "
                         f"time): {', '.join(failed)}\n")
    return 0
