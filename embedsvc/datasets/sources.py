"""Where images come from: a class-folder tree, a flat folder, or a CSV / JSONL manifest.

Every source becomes the same ordered list of ``Record``s, so embedding, training and fine-tuning
read data one way.

- ``root/<label>/<file>``                       label = folder name
- ``root/<split>/<label>/<file>``               when every top folder is a split name
- ``root/<file>``                               flat: no labels
- ``manifest.csv`` / ``manifest.jsonl``         columns path,label,split,domain (path required;
                                                relative paths are relative to the manifest)
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidInputError, NotFoundError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
MANIFEST_COLUMNS = ("path", "label", "split", "domain")


@dataclass(frozen=True)
class Record:
    path: str  # absolute
    label: str | None = None
    split: str | None = None
    domain: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _files(folder: Path) -> list[Path]:
    """Files below ``folder`` in a stable order (sorted), skipping hidden ones."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _class_folders(root: Path, split: str | None) -> list[Record]:
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in _files(label_dir):
            # every file is listed, images or not: unreadable ones are reported by the embedder
            records.append(Record(str(f.resolve()), label_dir.name, split))
    return records


def scan_folder(root: Path) -> list[Record]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and _is_image_name(p.name)]
    if not subdirs:
        return [Record(str(p.resolve())) for p in loose]
    if loose:
        raise InvalidInputError(
            f"{root} mixes image files and class folders; use one layout or a manifest"
        )
    if all(d.name.lower() in SPLIT_NAMES for d in subdirs):
        return [r for d in subdirs for r in _class_folders(d, d.name.lower())]
    return _class_folders(root, None)


def _manifest_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        return rows
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise InvalidInputError(f"{path}: a manifest needs a 'path' column; columns: "
                                    f"{', '.join(MANIFEST_COLUMNS)}")
        return list(reader)


def scan_manifest(path: Path) -> list[Record]:
    records = []
    for n, row in enumerate(_manifest_rows(path), 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise InvalidInputError(f"{path}: row {n} has no 'path'")
        p = Path(row["path"])
        if not p.is_absolute():
            p = path.parent / p
        records.append(Record(str(p.resolve()), *(row.get(k) or None for k in MANIFEST_COLUMNS[1:])))
    return records


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an embedding store (vectors already made) rather than images."""
    path = Path(path)
    return (path / "manifest.json").is_file() and (path / "shards").is_dir()


def scan_source(src: str | os.PathLike) -> list[Record]:
    """The records of a dataset source, in a stable order."""
    path = Path(src)
    if not path.exists():
        raise NotFoundError(f"dataset source {str(path)!r} does not exist")
    if path.is_dir():
        if is_store(path):
            # its folders (shards/, indexes/) are not classes; its vectors are already made
            raise InvalidInputError(
                f"{str(path)!r} is an embedding store, not images; give the image folder or "
                f"manifest it was made from")
        records = scan_folder(path)
    elif path.suffix.lower() in (".csv", ".jsonl"):
        records = scan_manifest(path)
    else:
        raise InvalidInputError(
            f"{str(path)!r} is neither a folder nor a .csv / .jsonl manifest"
        )
    if not records:
        raise InvalidInputError(f"dataset source {str(path)!r} holds no files")
    return records
