"""WiSE-FT (Wortsman et al., 2022): mix pretrained and fine-tuned weights,
θ = (1 − α) θ_pretrained + α θ_fine-tuned, to keep more of the general features the
fine-tuning wore away (robustness under distribution shift) at a small cost on the target.

α = 0 is the pretrained backbone, α = 1 the fine-tuned one. The classifier is the run's own
(it has no pretrained counterpart); integer buffers (BatchNorm's step counters) are taken from
the fine-tuned model. The result is a new run directory that loads as ``finetuned:OUT``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from embedsvc.runs import (HEAD_DIR, WEIGHTS, canonical_name, is_finished_run, read_run,
                           save_weights, write_run)
from embedsvc.fingerprint import sha256_file
from embedsvc.errors import IncompatibleError, InvalidInputError


def interpolate_weights(pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    if set(pretrained) != set(finetuned):
        raise IncompatibleError("pretrained and fine-tuned weights have different parameter names")
    out = {}
    for k, ft in finetuned.items():
        pt = pretrained[k]
        if pt.shape != ft.shape:
            raise IncompatibleError(f"{k}: pretrained shape {tuple(pt.shape)} vs fine-tuned {tuple(ft.shape)}")
        out[k] = ((1 - alpha) * pt.float() + alpha * ft.float()).to(ft.dtype) if ft.is_floating_point() else ft
    return out


def interpolate_run(run_dir: str | Path, alpha: float, out: str | Path | None = None) -> Path:
    from safetensors.torch import load_file

    from classifiers.heads import Head

    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
    run_dir = Path(run_dir)
    meta = read_run(run_dir)
    out = Path(out) if out else run_dir.with_name(f"{run_dir.name}-wise{alpha:g}")
    if out.resolve() == run_dir.resolve():
        raise InvalidInputError("--out must differ from the run directory")
    if is_finished_run(out):
        raise InvalidInputError(f"{str(out)!r} already holds a run; choose another --out")
    from .inputs import parent_weights

    mixed = interpolate_weights(parent_weights(meta, run_dir), load_file(str(run_dir / WEIGHTS)),
                                alpha)
    if meta.get("encoder_files"):  # a text run's folder files
        from embedsvc.text.folder import copy_settings

        copy_settings(run_dir, out, meta["encoder_files"])
    save_weights(mixed, out / WEIGHTS)
    head = Head.load(run_dir / HEAD_DIR)
    head.provenance = {**head.provenance, "backbone": canonical_name(out),
                       "weights_sha256": sha256_file(out / WEIGHTS)}
    head.training = {**head.training, "interpolated_from": str(run_dir.resolve()), "alpha": alpha}
    head.metrics = {}  # measured on the fine-tuned weights, not these
    if (out / HEAD_DIR).exists():
        shutil.rmtree(out / HEAD_DIR)
    head.save(out / HEAD_DIR)
    new_meta = {**meta, "interpolation": {"from": str(run_dir.resolve()), "alpha": alpha},
                "metrics": {}}
    write_run(out, new_meta)  # commit
    return out
