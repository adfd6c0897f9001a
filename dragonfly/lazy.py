"""Package names loaded on first use: a package's ``__getattr__`` that imports the submodule
holding a name only when the name is first asked for (PEP 562), so that importing the package
for one light name does not import its heavy neighbours at start."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, home_of: dict[str, str],
               namespace: dict[str, Any]) -> Callable[[str], Any]:
    """``__getattr__`` for ``package``: ``home_of`` maps each name to its submodule; a name
    found is kept in ``namespace`` (the package's globals), so it is looked up once."""
    def getattr_(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return getattr_
