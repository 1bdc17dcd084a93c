"""Package ``__init__`` exports resolved on first use (PEP 562).

A package re-exports its public names for convenience, but importing the package must not pay
for torch, scikit-learn or FAISS: ``embedsvc --help`` and ``embedsvc client ...`` import the
packages only to read names and defaults.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``exports`` maps a public name to the submodule (relative to ``package``) defining it.

    Returns the package's ``__getattr__`` and ``__dir__``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
