"""One JSON shape per kind of result, printed by the local command and its ``client`` twin alike,
so a script written against one works against the other. Numbers are JSON numbers."""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

Pairs = Iterable[tuple[str, float]]


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _top(top: Pairs) -> list[dict[str, Any]]:
    return [{"label": label, "probability": round(float(p), 6)} for label, p in top]


def prediction(id: str, top: Pairs) -> dict[str, Any]:
    """``predict``: the backbone's own ImageNet classifier."""
    return {"id": id, "top": _top(top)}


def classification(id: str, label: str, probability: float, ood_score: float, abstained: bool,
                   top: Pairs) -> dict[str, Any]:
    """``classify`` / ``client classify``."""
    return {"id": id, "label": label, "probability": round(float(probability), 6),
            "ood_score": round(float(ood_score), 6), "abstained": bool(abstained), "top": _top(top)}


def hit(id: int, score: float, metadata: dict[str, Any]) -> dict[str, Any]:
    """``search`` / ``client search``: metadata nested, never mixed with id and score."""
    return {"id": int(id), "score": round(float(score), 6),
            "metadata": {k: v for k, v in metadata.items() if v is not None}}


def embedding(id: str, vector: Sequence[float], dim: int | None = None) -> dict[str, Any]:
    """``embed --json`` / ``client embed``; ``dim``: the vector's, where ``vector`` is its
    int8 or binary code."""
    if getattr(vector, "dtype", None) is not None and vector.dtype.kind in "iu":
        return {"id": id, "dim": dim or len(vector), "vector": vector.tolist()}
    return {"id": id, "dim": len(vector), "vector": [round(float(x), 6) for x in vector]}


def model(name: str, library: str, dim: int | None, input_size: int | None, weights: str,
          description: str, default: bool, loaded: bool | None = None,
          family: bool = False, modality: str = "image") -> dict[str, Any]:
    """``models`` / ``client models`` (``loaded`` only from a server); a family is a name
    pattern (``timm:<model>``), not a model."""
    row = {"name": name, "modality": modality, "library": library, "dim": dim or None,
           "input_size": input_size or None,
           "weights": weights, "default": default, "description": description, "family": family}
    if loaded is not None:
        row["loaded"] = loaded
    return row


def short(text: str, width: int = 60) -> str:
    """An id or text for a table cell: one line, at most ``width`` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= width else one[:width - 1] + "…"


def size(n: int) -> str:
    """Bytes as people read them: 1.3 GiB, 64.0 MiB, 512 B."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
