"""Counted nouns for messages people read: "1 class", "2 classes", "1 epoch"."""
from __future__ import annotations

_IRREGULAR = {"class": "classes", "index": "indexes", "batch": "batches"}


def count(n: int, noun: str, plural: str | None = None) -> str:
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {plural or _IRREGULAR.get(noun, noun + 's')}"
