"""What people look at besides answers: thumbnails of indexed images, a 2-D map of an index and
a head's training report. Transport-free, like the core; the HTTP API and the web page serve it.

Thumbnails live in ``DATA_DIR/thumbnails/INDEX/XX/ID.jpg``. They are written after an Upsert of
images was acknowledged (derived data: a crash may lose a thumbnail, never a write, and a disk
too full for one fails no Upsert), replaced or removed when the id is overwritten or deleted. An
item without one is shown from its metadata ``path`` when that file lies inside the data dir (an
index filled from images kept there); a path anywhere else is never opened.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..collection.metadata import readable
from ..collection.rows import live_metadata, live_sample
from ..errors import FailedPreconditionError, InvalidInputError, NotFoundError
from ..images import load_upright
from .datadir import DataDir
from .heads import IMAGENET_HEAD

log = logging.getLogger("embedsvc.gallery")
MAP_LIMIT = 20_000  # points one map may hold: a browser draws them, PCA runs on them
HEAD_FIGURES = ("confusion", "learning_curve")  # PNGs train-head writes in HEAD/report/
# what a head report may show of head.json's "training"; the rest names server paths
PUBLIC_TRAINING = ("split", "train_examples", "per_class", "notes", "target_vectors",
                   "target_labelled")


class Thumbnails:
    def __init__(self, data: DataDir, size: int, max_pixels: int, max_bytes: int):
        self.root = data.root / "thumbnails"
        self.data_root = data.root.resolve()
        self.size = size  # 0: none are kept
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def _file(self, index: str, item_id: int) -> Path:
        return self.root / index / f"{item_id % 256:02x}" / f"{item_id}.jpg"

    def _render(self, data: bytes | Path, name: str) -> bytes:
        side = self.size or 128
        img, _ = load_upright(data, name, self.max_pixels, draft_to=side)
        return self.render(img)

    def render(self, img: Image.Image) -> bytes:
        """A decoded image's thumbnail, as JPEG bytes (an upsert renders it from the decode
        that made its vector, and writes it once the write is acknowledged)."""
        side = self.size or 128
        w, h = img.size
        scale = min(side / w, side / h, 1.0)  # what Image.thumbnail does, without changing img
        if scale < 1.0:
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                             Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        return out.getvalue()

    def keep(self, into: dict[str, bytes], name: str, img: Image.Image) -> None:
        """``render`` into ``into[name]``; a failure costs the thumbnail, never the write."""
        try:
            into[name] = self.render(img)
        except Exception as exc:  # noqa: BLE001 - the page shows no thumbnail, that is all
            log.warning("no thumbnail for %s: %s", name, exc)

    def upserted(self, index: str, ids: Sequence[int], jpegs: Sequence[bytes | None]) -> None:
        """After an acknowledged Upsert: each image's thumbnail (``render``'s bytes); an id
        now holding a vector loses the one an earlier image left."""
        for item_id, jpeg in zip(ids, jpegs):
            path = self._file(index, item_id)
            try:
                if jpeg is None or not self.size:
                    path.unlink(missing_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(jpeg)
                os.replace(tmp, path)
            except OSError as exc:  # the write itself stands
                log.warning("no thumbnail for id %d of index %r: %s", item_id, index, exc)

    def deleted(self, index: str, ids: Sequence[int]) -> None:
        for item_id in ids:
            try:
                self._file(index, int(item_id)).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("thumbnail of id %d of index %r stays: %s", item_id, index, exc)

    def _inside(self, metadata: dict | None) -> Path | None:
        """The metadata's image path when it is a file inside the data dir."""
        path = (metadata or {}).get("path")
        if not path:
            return None
        try:  # client text: a NUL (ValueError) or an over-long name (OSError) is no file
            p = Path(path) if Path(path).is_absolute() else self.data_root / path
            p = p.resolve()  # symlinks and '..' resolved before the containment check
            return p if p.is_relative_to(self.data_root) and p.is_file() else None
        except (OSError, RuntimeError, ValueError):
            return None

    def available(self, index: str, item_id: int, metadata: dict | None) -> bool:
        if self._file(index, item_id).is_file():
            return True
        source = self._inside(metadata)
        return source is not None and source.stat().st_size <= self.max_bytes

    def get(self, index: str, item_id: int, metadata: dict | None) -> bytes:
        try:
            return self._file(index, item_id).read_bytes()
        except FileNotFoundError:
            pass
        source = self._inside(metadata)
        if source is None:
            raise NotFoundError(f"item {item_id} of index {index!r} has no thumbnail: it was "
                                f"not upserted as an image, and its metadata names no image "
                                f"file inside the data dir")
        size = source.stat().st_size
        if size > self.max_bytes:
            raise FailedPreconditionError(f"item {item_id}'s image file is {size} bytes, over "
                                          f"max_bytes_per_image ({self.max_bytes})")
        return self._render(source, f"item {item_id}")


class Gallery:
    def __init__(self, data: DataDir, collections, heads, thumbnails: Thumbnails,
                 default_backbone: str):
        self.data = data
        self.default_backbone = default_backbone
        self.collections = collections
        self.heads = heads
        self.thumbnails = thumbnails

    # -- thumbnails --------------------------------------------------------------------------
    def thumbnail(self, index: str, item_id: int) -> bytes:
        view = self.collections.get(index).view
        metadata = live_metadata(view, item_id)
        if metadata is None:
            raise NotFoundError(f"index {index!r} holds no id {item_id}")
        return self.thumbnails.get(index, item_id, metadata)

    def with_thumbnails(self, index: str, hits) -> list[dict[str, Any]]:
        """Search hits as dicts, each saying whether a thumbnail can be shown."""
        return [{"id": i, "score": s, "metadata": m,
                 "thumbnail": self.thumbnails.available(index, i, m)} for i, s, m in hits]

    # -- the map of an index -----------------------------------------------------------------
    def index_map(self, index: str, limit: int = 2000) -> dict[str, Any]:
        """A 2-D PCA projection of up to ``limit`` live vectors, with their labels."""
        if not 2 <= limit <= MAP_LIMIT:
            raise InvalidInputError(f"limit must be in [2, {MAP_LIMIT}], got {limit}")
        coll = self.collections.get(index)
        ids, x, metadata = live_sample(coll.view, limit)
        xy, explained = _pca2(x)
        metadata = [readable(m) for m in metadata]
        points = [{"id": int(i), "x": float(a), "y": float(b), "label": m.get("label", ""),
                   "metadata": m, "thumbnail": self.thumbnails.available(index, int(i), m)}
                  for i, (a, b), m in zip(ids.tolist(), xy, metadata)]
        return {"index": index, "count": coll.count, "shown": len(points), "method": "pca",
                "explained_variance": explained, "points": points}

    # -- head reports ------------------------------------------------------------------------
    def head_report(self, name: str) -> dict[str, Any]:
        from classifiers.heads.ood import DEFAULT_MAX_OOD

        if name == IMAGENET_HEAD:  # listed by ListHeads, so it has a report too
            return {"name": name, "kind": "imagenet", "backbone": self.default_backbone,
                    "classes": [], "metrics": {}, "training": {}, "features": {},
                    "ood_method": "max-probability", "ood": {"default_max_ood": DEFAULT_MAX_OOD},
                    "alignment": None, "figures": [],
                    "note": "the default backbone's own ImageNet classifier: embedsvc trained "
                            "nothing, so there is no held-out report"}
        entry = self.heads.entry(name)
        head, p = entry.head, entry.head.provenance
        return {"name": name, "kind": head.kind, "backbone": entry.public_backbone(),
                "classes": head.classes, "metrics": head.metrics,
                "training": {k: head.training[k] for k in PUBLIC_TRAINING if k in head.training},
                "features": {"dim": p["dim"], "tap": p["tap"], "normalized": p["normalized"],
                             "weights_sha256": p["weights_sha256"]},
                "ood_method": head.ood_method,
                "ood": head.ood.describe() if head.ood is not None
                else {"default_max_ood": DEFAULT_MAX_OOD},
                "alignment": head.alignment.method if head.alignment is not None else None,
                "figures": [f for f in HEAD_FIGURES if self._figure_file(name, f).is_file()]}

    def head_figure(self, name: str, figure: str) -> bytes:
        if figure not in HEAD_FIGURES:
            raise InvalidInputError(f"unknown figure {figure!r}; one of {', '.join(HEAD_FIGURES)}")
        self.heads.get(name)
        try:
            return self._figure_file(name, figure).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"head {name!r} has no {figure} figure (train-head "
                                f"--learning-curve draws the learning curve)") from None

    def _figure_file(self, name: str, figure: str) -> Path:
        return self.data.heads / name / "report" / f"{figure}.png"


def _pca2(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components of the rows, and the share of the variance each
    explains (randomized SVD: a fraction of a second for 20,000 1280-d rows)."""
    if len(x) < 3 or not np.ptp(x, axis=0).any():  # nothing to spread out
        return np.zeros((len(x), 2), np.float32), [0.0, 0.0]
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="randomized", random_state=0).fit(x)
    return pca.transform(x).astype(np.float32), [float(v) for v in pca.explained_variance_ratio_]
