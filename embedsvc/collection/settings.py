"""How a collection indexes and compacts itself: one frozen dataclass (``[collections]`` in the
server's TOML), checked once."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

CODES = ("none", "int8", "binary")


@dataclass(frozen=True)
class CollectionSettings:
    # exact search below this many live vectors; an approximate index (HNSW, or IVF when the
    # HNSW graph would not fit the memory budget) at and above it
    flat_below: int = 20_000
    memory_budget_bytes: int = 4 << 30
    recall_target: float = 0.95  # recall@10 the approximate index is tuned to
    # compact (write a snapshot, drop the log) once the log holds this many bytes, or half the
    # snapshot's size if that is more: the total written stays linear in the data
    compact_log_bytes: int = 64 << 20
    # rebuild without deleted and overwritten rows once they are this fraction of all rows
    rebuild_dead_fraction: float = 0.25
    index_batch: int = 256  # rows added to the approximate index at a time (searches wait that long)
    # what the approximate index holds: "none" (HNSW or IVF over the float vectors), or compact
    # codes scanned whole, their shortlist re-scored with the rows: "int8" (d bytes a vector,
    # ranges calibrated on the collection) or "binary" (d/8 bytes; int8 where d % 8 != 0)
    codes: str = "none"

    def __post_init__(self) -> None:
        if self.codes not in CODES:
            raise InvalidInputError(f"collections.codes must be one of {', '.join(CODES)}; "
                                    f"got {self.codes!r}")
        for name in ("flat_below", "memory_budget_bytes", "compact_log_bytes", "index_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"collections.{name} must be an integer >= 1, got {value!r}")
        for name in ("recall_target", "rebuild_dead_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise InvalidInputError(f"collections.{name} must be in (0, 1], got {value!r}")
