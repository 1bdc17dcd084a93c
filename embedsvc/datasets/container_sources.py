"""The records of the ecosystem's dataset formats (what img2dataset, ``webdataset`` and
Hugging Face ``datasets`` write), each named ``CONTAINER#MEMBER`` (see containers.py):

- webdataset tar shards, one ``.tar`` or a brace pattern (``data/{00000..00099}.tar``): a sample is
  the members sharing a key (the name up to the first dot of its last part); its input is the
  image member (.jpg .jpeg .png .webp ...) or, with none, its ``.txt``; the label is ``.cls``, or
  ``label`` in its ``.json`` (which may also give ``split`` and ``domain``).
- parquet files, one or a brace pattern: an image-bytes column (img2dataset's ``jpg``, or
  ``datasets``' ``{bytes, path}`` struct), a path column, or a text column; label, split and
  domain columns. Columns are found by their usual names or chosen (``Columns``).
- a ``datasets`` folder written by ``save_to_disk`` (a Dataset, or a DatasetDict whose split
  names become ``split``): the Image feature or a string column is the input, a ClassLabel
  gives label names.
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, NotFoundError
from .containers import SEP, arrow_table, check_uncompressed_tar, tar_members
from .records import IMAGE_SUFFIXES, Record, cell

IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img")
PATH_COLUMNS = ("path", "file_name", "filepath", "image_path")
TEXT_COLUMNS = ("text", "caption", "sentence")
LABEL_COLUMNS = ("label", "labels", "cls", "class")


@dataclass(frozen=True)
class Columns:
    """Which columns of a parquet file or ``datasets`` folder hold what; None: the first of the
    usual names present (``IMAGE_COLUMNS``, ``PATH_COLUMNS``, ``TEXT_COLUMNS``, ``LABEL_COLUMNS``).
    The input is the image column, else the path column, else the text column."""
    image: str | None = None
    path: str | None = None
    text: str | None = None
    label: str | None = None
    split: str | None = "split"
    domain: str | None = "domain"


def expand_pattern(pattern: str) -> list[str]:
    """The files of a brace pattern (``{000..099}``, ``{a,b}``) or a glob, in order; each must
    exist."""
    from braceexpand import braceexpand

    names = []
    for one in braceexpand(pattern):
        found = sorted(glob.glob(one)) if any(c in one for c in "*?[") else [one]
        if not found or not Path(found[0]).is_file():
            raise NotFoundError(f"{one!r} (from {pattern!r}) does not exist")
        names.extend(found)
    return [str(Path(n).resolve()) for n in names]


def is_container(path: str) -> bool:
    return path.lower().endswith((".tar", ".parquet")) or any(c in path for c in "{*?[")


def scan_containers(pattern: str, columns: Columns = Columns()) -> list[Record]:
    files = expand_pattern(pattern)
    kinds = {Path(f).suffix.lower() for f in files}
    if kinds == {".tar"}:
        return [r for f in files for r in readable(f, "webdataset tar shard", scan_tar_shard)]
    if kinds == {".parquet"}:
        return [r for f in files for r in readable(f, "parquet file", scan_parquet, columns)]
    raise InvalidInputError(f"{pattern!r} gives {', '.join(sorted(kinds)) or 'no'} files; a "
                            f"pattern must name .tar shards or .parquet files, one kind")


def readable(path: str, what: str, scan, *args) -> list[Record]:
    """``scan(path, *args)``, with a file its library cannot read refused in one line."""
    import tarfile

    try:
        return scan(path, *args)
    except (InvalidInputError, NotFoundError):
        raise
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a readable {what} ({type(exc).__name__}: "
                                f"{exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's and datasets' own error types
        if type(exc).__module__.split(".")[0] in ("pyarrow", "datasets", "fsspec"):
            raise InvalidInputError(f"{path} is not a readable {what} ({type(exc).__name__}: "
                                    f"{exc})") from None
        raise


# --- webdataset ------------------------------------------------------------------------------

def _sample_key(member: str) -> tuple[str, str]:
    """webdataset's split of a member name into the sample key and the extension."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_tar_shard(shard: str) -> list[Record]:
    check_uncompressed_tar(shard)
    where = {name: (offset, size) for name, offset, size in tar_members(shard)}
    samples: dict[str, dict[str, str]] = {}  # key -> ext -> member, in the shard's order
    for name in where:
        key, ext = _sample_key(name)
        samples.setdefault(key, {})[ext] = name
    records = []
    with open(shard, "rb") as f:  # the labels' small members, read through one handle

        def read(member: str) -> bytes:
            f.seek(where[member][0])
            return f.read(where[member][1])

        for members in samples.values():
            # a plain image member (.jpg) before a compound one (.seg.png, a mask beside it)
            image = next((m for ext, m in sorted(members.items(), key=lambda e: "." in e[0])
                          if f".{ext.rpartition('.')[2]}" in IMAGE_SUFFIXES), None)
            input_member = image or members.get("txt")
            if input_member is None:
                continue  # a sample of other members only (.json, .npy, ...) has no input
            records.append(Record(f"{shard}{SEP}{input_member}", *_sample_meta(read, members)))
    return records


def _sample_meta(read, members: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """(label, split, domain) of a sample: ``.cls`` is the label; ``.json`` may give all three."""
    meta = {}
    if "json" in members:
        try:
            meta = json.loads(read(members["json"]))
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
    label = cell(meta.get("label"))
    if "cls" in members:
        label = read(members["cls"]).decode("utf-8", "replace").strip() or label
    return label, cell(meta.get("split")), cell(meta.get("domain"))


# --- parquet and datasets folders ------------------------------------------------------------

def _pick(names: list[str], chosen: str | None, usual: tuple[str, ...], what: str, where: str) -> str | None:
    if chosen is not None:
        if chosen not in names:
            raise InvalidInputError(f"{where} has no {what} column {chosen!r}; columns: "
                                    f"{', '.join(names)}")
        return chosen
    return next((n for n in usual if n in names), None)


def _columns_table(table, where: str, columns: Columns, base: Path,
                   names: list[str] | None = None) -> list[Record]:
    """Records of an Arrow table (a parquet file's, or a ``datasets`` Arrow file's); ``names``:
    the file's columns, when the table leaves out the image bytes (read when embedded)."""
    names = names or table.column_names
    image = _pick(names, columns.image, IMAGE_COLUMNS, "image", where)
    path = _pick(names, columns.path, PATH_COLUMNS, "path", where) if image is None else None
    text = _pick(names, columns.text, TEXT_COLUMNS, "text", where) if image is path is None else None
    if image is path is text is None:
        raise InvalidInputError(f"{where} has no image, path or text column (looked for "
                                f"{', '.join(IMAGE_COLUMNS + PATH_COLUMNS + TEXT_COLUMNS)}); "
                                f"columns: {', '.join(names)}")
    label = _pick(names, columns.label, LABEL_COLUMNS, "label", where)
    values = {k: table.column(c).to_pylist() if c else [None] * table.num_rows
              for k, c in (("label", label), ("split", columns.split if columns.split in names else None),
                           ("domain", columns.domain if columns.domain in names else None))}
    texts = table.column(text).to_pylist() if text else None
    paths = table.column(path).to_pylist() if path else None
    records = []
    for i in range(table.num_rows):
        meta = (cell(values["label"][i]), cell(values["split"][i]), cell(values["domain"][i]))
        if paths is not None:
            p = Path(paths[i] or "")
            records.append(Record(str((p if p.is_absolute() else base / p).resolve()), *meta))
        elif texts is not None:
            if not isinstance(texts[i], str):
                raise InvalidInputError(f"{where}: row {i}: {text!r} must be a string, got "
                                        f"{type(texts[i]).__name__}")
            records.append(Record(f"{where}{SEP}{text}/{i}", *meta, text=texts[i]))
        else:
            records.append(Record(f"{where}{SEP}{image}/{i}", *meta))
    return records


def scan_parquet(path: str, columns: Columns = Columns()) -> list[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    image = _pick(names, columns.image, IMAGE_COLUMNS, "image", path)
    # every column but the image bytes, which are read a row group at a time when embedded
    table = pf.read(columns=[n for n in names if n != image])
    return _columns_table(table, path, columns, Path(path).parent, names)


def is_datasets_folder(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def scan_datasets_folder(root: Path, columns: Columns = Columns()) -> list[Record]:
    """A folder from ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, opened with
    ``datasets.load_from_disk`` (which checks it and tells the features); rows are read
    from its Arrow files."""
    import datasets

    loaded = datasets.load_from_disk(str(root))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    records = []
    for split, ds in parts:
        features = ds.features
        image = columns.image or next((k for k, f in features.items()
                                       if isinstance(f, datasets.Image)), None)
        chosen = Columns(image=image, path=columns.path, text=columns.text, label=columns.label,
                         split=columns.split, domain=columns.domain)
        label_names = next((f.names for k, f in features.items()
                            if isinstance(f, datasets.ClassLabel) and k == (columns.label or k)), None)
        for cache in ds.cache_files:
            table = arrow_table(cache["filename"])
            for r in _columns_table(table, cache["filename"], chosen, root):
                label = r.label
                if label_names is not None and label is not None and label.isdigit():
                    label = label_names[int(label)]
                records.append(Record(r.path, label, r.split or split, r.domain, r.text))
    return records
