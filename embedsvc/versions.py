"""Which library versions wrote an artifact, and the check for artifacts that depend on one.

Every artifact (store manifest, index info, head, fine-tuning run) carries ``written_by``: the
versions of the libraries whose layout it depends on. Read from package metadata, so stamping an
artifact never imports torch or FAISS.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from typing import Any

from .errors import IncompatibleError

# import name → PyPI distributions that provide it (the first one installed is used)
_DISTRIBUTIONS = {
    "embedsvc": ("embedsvc",), "torch": ("torch",), "timm": ("timm",),
    "sklearn": ("scikit-learn",), "faiss": ("faiss-cpu", "faiss-gpu", "faiss"), "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
}
_RUNTIME_LIBRARIES = ("onnxruntime", "openvino")


@lru_cache(maxsize=None)
def library_version(library: str) -> str | None:
    for dist in _DISTRIBUTIONS[library]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def written_by() -> dict[str, str | None]:
    """The ``written_by`` record of an artifact written now (the runtimes' versions travel in
    the provenance's ``runtime`` and the graph cache's key instead)."""
    return {lib: library_version(lib) for lib in _DISTRIBUTIONS if lib not in _RUNTIME_LIBRARIES}


def require_same_version(meta: dict[str, Any], library: str, what: str) -> None:
    """Refuse an artifact whose correctness depends on ``library``'s private layout when this
    process runs another version of it (answering wrongly would be worse than refusing)."""
    recorded = (meta.get("written_by") or {}).get(library)
    installed = library_version(library)
    if recorded != installed:
        raise IncompatibleError(
            f"{what} was written with {library} {recorded or 'of an unknown version'} and depends on "
            f"its internal layout, but {library} {installed} is installed; retrain it with this "
            f"version (or install {library}=={recorded})")
