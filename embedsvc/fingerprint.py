"""Fingerprints of model files: what provenance records of the weights an encoder loaded, for
images and text alike (``backbones/``, ``text/``, fine-tuning)."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_HASH_LOCK = threading.Lock()
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so reloading a backbone is cheap."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest
