"""What every dataset source becomes: an ordered list of ``Record``s."""
from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TEXT_SUFFIXES = {".txt"}


@dataclass(frozen=True)
class Record:
    # absolute; a manifest's text row: MANIFEST#LINE; a container's member: CONTAINER#MEMBER
    # (containers.py). It is what makes a run resumable.
    path: str
    label: str | None = None
    split: str | None = None
    domain: str | None = None
    text: str | None = None  # a text cell (a .txt file or member is read when embedded)

    def to_dict(self) -> dict:
        return asdict(self)


def cell(value) -> str | None:
    """A label, split or domain as text (JSONL and parquet may hold numbers: digits' label 7)."""
    return None if value in (None, "") else str(value)
