"""Finding weight files on local disk (``fingerprint.py`` hashes them).

Nothing here opens a network connection: the caches are read as plain directories.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse


def torch_hub_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where torchvision and timm keep URL downloads."""
    torch_home = os.environ.get(
        "TORCH_HOME",
        os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"),
    )
    return Path(torch_home) / "hub" / "checkpoints"


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get(
        "HF_HOME",
        os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"),
    )
    return Path(hf_home) / "hub"


def torch_hub_candidate(url: str) -> Path:
    """Where torch.hub would have saved ``url``."""
    return torch_hub_dir() / os.path.basename(urlparse(url).path)


def hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> tuple[Path | None, list[Path]]:
    """Look up a Hugging Face repo's file in the local cache only.

    Returns (found path or None, the paths that were looked at), so a miss can say exactly where
    the file was expected.
    """
    repo_dir = hf_hub_dir() / ("models--" + repo_id.replace("/", "--"))
    looked: list[Path] = []
    snapshots = repo_dir / "snapshots"
    revs = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    for name in filenames:
        if not revs:
            looked.append(snapshots / "<revision>" / name)
        for rev in revs:
            cand = rev / name
            looked.append(cand)
            if cand.is_file():
                return cand, looked
    return None, looked


def require_file(path: str | os.PathLike, backbone: str) -> Path:
    """An explicit ``--weights PATH`` must exist; say so plainly if it does not."""
    from ..errors import WeightsNotFoundError

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(
            backbone, [str(p)], "The file given with --weights does not exist or is not a file."
        )
    return p
