"""Where images and texts come from: a class-folder tree, a flat folder, a CSV / JSONL manifest,
or the containers of the ecosystem's formats (container_sources.py: webdataset tar shards,
parquet, ``datasets`` folders).

Every source becomes the same ordered list of ``Record``s, so embedding, training and fine-tuning
read data one way.

- ``root/<label>/<file>``                       label = folder name
- ``root/<split>/<label>/<file>``               when every top folder is a split name
- ``root/<file>``                               flat: no labels
- ``manifest.csv`` / ``manifest.jsonl``         columns path,label,split,domain (path required;
                                                relative paths are relative to the manifest), or
                                                text,label,split,domain: the text itself
- ``root/metadata.jsonl`` / ``.csv``            ``datasets``' imagefolder: a manifest whose path
                                                column is ``file_name`` (also in split folders)
- ``shards/{00000..00009}.tar``, ``*.parquet``  one container file, or a brace pattern or glob
- a ``save_to_disk`` folder                     its Arrow files
A text is a ``text`` cell, or a ``.txt`` file (UTF-8) in any layout above. Which encoder reads
the records is decided by ``encoders.modality_of_records``.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import InvalidInputError, NotFoundError
from .container_sources import (Columns, is_container, is_datasets_folder, readable,
                                scan_containers, scan_datasets_folder)
from .records import IMAGE_SUFFIXES, TEXT_SUFFIXES, Record, cell

SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
MANIFEST_COLUMNS = ("path", "label", "split", "domain")
TEXT_COLUMN = "text"
PATH_ALIASES = ("path", "file_name")  # file_name: datasets' imagefolder metadata
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def _is_input_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES | TEXT_SUFFIXES


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


def _metadata_file(folder: Path) -> Path | None:
    return next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)


def scan_folder(root: Path) -> list[Record]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if (meta := _metadata_file(root)) is not None:
        return scan_manifest(meta)
    if subdirs and all(d.name.lower() in SPLIT_NAMES and _metadata_file(d) for d in subdirs):
        return [Record(r.path, r.label, r.split or d.name.lower(), r.domain, r.text)
                for d in subdirs for r in scan_manifest(_metadata_file(d))]
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and _is_input_name(p.name)]
    if not subdirs:
        return [Record(str(p.resolve())) for p in loose]
    if loose:
        raise InvalidInputError(
            f"{root} mixes input files and class folders; use one layout or a manifest"
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
        if reader.fieldnames is None or not {*PATH_ALIASES, TEXT_COLUMN} & set(reader.fieldnames):
            raise InvalidInputError(f"{path}: a manifest needs a 'path' or a 'text' column ('file_name' "
                                    f"for a path, as datasets' imagefolder names it); "
                                    f"columns: {', '.join(MANIFEST_COLUMNS)}, {TEXT_COLUMN}")
        return list(reader)


def scan_manifest(path: Path) -> list[Record]:
    records = []
    for n, row in enumerate(_manifest_rows(path), 1):
        file = next((row[k] for k in PATH_ALIASES if row.get(k)), None) if isinstance(row, dict) else None
        if not isinstance(row, dict) or not (file or isinstance(row.get(TEXT_COLUMN), str)):
            raise InvalidInputError(f"{path}: row {n} has neither a 'path' nor a 'text'")
        text = row.get(TEXT_COLUMN)
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"{path}: row {n}: 'text' must be a string, got "
                                    f"{type(text).__name__}")
        if file:
            p = Path(str(file))
            name = str((p if p.is_absolute() else path.parent / p).resolve())
        else:
            name = f"{path.resolve()}#{n}"
        records.append(Record(name, *(cell(row.get(k)) for k in MANIFEST_COLUMNS[1:]), text))
    return records


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an embedding store (vectors already made) rather than images."""
    path = Path(path)
    return (path / "manifest.json").is_file() and (path / "shards").is_dir()


def scan_source(src: str | os.PathLike, columns: Columns = Columns()) -> list[Record]:
    """The records of a dataset source, in a stable order. ``columns`` chooses the columns of
    parquet files and ``datasets`` folders (by default, their usual names)."""
    path = Path(src)
    if is_container(str(src)) and not path.is_dir():
        records = scan_containers(str(src), columns)
        if not records:
            raise InvalidInputError(f"dataset source {str(src)!r} holds no inputs")
        return records
    if not path.exists():
        raise NotFoundError(f"dataset source {str(path)!r} does not exist")
    if path.is_dir():
        if is_store(path):
            # its folders (shards/, indexes/) are not classes; its vectors are already made
            raise InvalidInputError(
                f"{str(path)!r} is an embedding store, not images or texts; give the folder "
                f"or manifest it was made from")
        records = (readable(str(path), "datasets folder", scan_datasets_folder, columns)
                   if is_datasets_folder(path) else scan_folder(path))
    elif path.suffix.lower() in (".csv", ".jsonl"):
        records = scan_manifest(path)
    else:
        raise InvalidInputError(
            f"{str(path)!r} is neither a folder, a .csv / .jsonl manifest, .tar shards nor "
            f".parquet files"
        )
    if not records:
        raise InvalidInputError(f"dataset source {str(path)!r} holds no files")
    return records
