"""The heads a server offers: ``DATA_DIR/heads/NAME``, rescanned when the folder changes (a new
head needs no restart). A head that fails to load is listed as unavailable with the reason, and
logged once, instead of silently missing."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FailedPreconditionError, NotFoundError

log = logging.getLogger("embedsvc.server")
IMAGENET_HEAD = "imagenet"


@dataclass(frozen=True)
class HeadEntry:
    name: str
    head: Any | None  # classifiers.heads.Head, or None when it failed to load
    error: str = ""

    def public_backbone(self) -> str:
        """The backbone the head takes, as clients name it (never a server path)."""
        if self.head is None:
            return ""
        name = self.head.provenance["backbone"]
        prefix, sep, rest = name.partition(":")
        return f"{prefix}:{Path(rest).name}" if sep and "/" in rest else name


class HeadRegistry:
    def __init__(self, root: Path):
        self.root = root
        self._entries: dict[str, HeadEntry] = {}
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    def entries(self) -> dict[str, HeadEntry]:
        from classifiers.heads import Head
        from classifiers.heads.artifact import HEAD_JSON

        files = sorted(self.root.glob(f"*/{HEAD_JSON}")) if self.root.is_dir() else []
        try:
            stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files)
        except FileNotFoundError:  # a head being replaced right now: use what we have
            stamp = self._stamp
        with self._lock:
            if stamp != self._stamp:
                entries = {}
                for p in files:
                    name = p.parent.name
                    try:
                        entries[name] = HeadEntry(name, Head.load(p.parent))
                    except Exception as exc:  # noqa: BLE001 - one broken head must not hide the others
                        reason = f"{type(exc).__name__}: {exc}".replace(str(self.root), "heads")
                        entries[name] = HeadEntry(name, None, reason)
                        if self._entries.get(name, HeadEntry(name, None)).error != reason:
                            log.warning("head %r is unavailable: %s", name, reason)
                self._entries, self._stamp = entries, stamp
            return dict(self._entries)

    def entry(self, name: str) -> HeadEntry:
        """A loaded head's entry: NOT_FOUND for an unknown name, FAILED_PRECONDITION for a head
        that failed to load."""
        entries = self.entries()
        if name not in entries:
            raise NotFoundError(f"no head named {name!r}; available: "
                                f"{', '.join([IMAGENET_HEAD, *sorted(entries)])}")
        entry = entries[name]
        if entry.head is None:
            raise FailedPreconditionError(f"head {name!r} is unavailable: {entry.error}")
        return entry

    def get(self, name: str):
        return self.entry(name).head
