"""A server's data dir, and installing things into it.

    DATA_DIR/heads/NAME/        trained heads (served as Classify(head=NAME))
    DATA_DIR/indexes/NAME/      collections (Upsert / Search / Delete)
    DATA_DIR/backbones/NAME/    fine-tuned runs (served as backbone finetuned:NAME)

Clients only ever name things; a name is one path component, never a path. Installing is
atomic: a running server sees a whole head or run, or none of it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..names import valid_name

@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def heads(self) -> Path:
        return self.root / "heads"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def backbones(self) -> Path:
        return self.root / "backbones"

    def lock_writer(self):
        """Held by the one server that writes here (role single or writer) until it closes: a
        second one would append to the same collection logs. Readers take no lock."""
        from ..store.store import StoreLock

        self.root.mkdir(parents=True, exist_ok=True)
        return StoreLock(self.root / ".writer.lock", held_by=(
            f"data dir {str(self.root)!r} is written by another server; start this one with "
            f"--role reader to serve it read-only")).acquire()

    def runs(self) -> list[str]:
        from ..runs import RUN_JSON

        d = self.backbones
        return sorted(p.parent.name for p in d.glob(f"*/{RUN_JSON}")) if d.is_dir() else []

    def register_head(self, head_dir: str | Path, name: str, backbone: str | None = None) -> Path:
        """Copy a head folder in as heads/NAME; ``backbone`` renames the backbone its provenance
        names (a fine-tuned run's head refers to the run by its served name)."""
        def adjust(staging: Path) -> None:
            if backbone is not None:
                from classifiers.heads import Head

                head = Head.load(staging)
                head.provenance["backbone"] = backbone
                head.save(staging)

        return _install(Path(head_dir), self.heads / valid_name(name, "head name"), adjust)

    def register_run(self, run_dir: str | Path, name: str) -> Path:
        """Install a fine-tuning run as backbones/NAME and its head as heads/NAME, so a server
        serves backbone finetuned:NAME and head NAME."""
        from ..runs import HEAD_DIR, PREFIX, encoder_files, read_run

        run_dir = Path(run_dir)
        valid_name(name, "run name")
        keep = {Path(f).parts[0] for f in encoder_files(read_run(run_dir))}

        def keep_only_model(staging: Path) -> None:
            for p in staging.iterdir():  # checkpoints and reports stay with the run
                if p.name not in keep:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

        target = _install(run_dir, self.backbones / name, keep_only_model)
        self.register_head(run_dir / HEAD_DIR, name, backbone=f"{PREFIX}:{name}")
        return target


def _install(src: Path, target: Path, adjust=None) -> Path:
    if not src.is_dir():
        raise InvalidInputError(f"{src} is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    if adjust is not None:
        adjust(staging)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    return target
