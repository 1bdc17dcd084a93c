"""Adapter for timm models (also the base of the EfficientNet-Lite builders)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError, NotFoundError, WeightsNotFoundError
from .base import PRE_LOGITS, STAGE_TAPS, Backbone, global_pool, stage_tap_indices
from .config import BackboneConfig, PreprocessConfig
from ..fingerprint import sha256_file
from .weights import hf_cached_file, require_file, torch_hub_candidate


class TimmBackbone(Backbone):
    """A timm model: pre-logits through ``forward_head(pre_logits=True)``, taps from feature_info."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def _forward_stage_taps(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
        modules = dict(self.model.named_modules())
        levels = self.model.feature_info
        index = stage_tap_indices(len(levels))
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for tap in taps:
            if tap == PRE_LOGITS:
                continue
            module = modules[levels[index[tap]]["module"]]
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, out, tap=tap: captured.__setitem__(tap, global_pool(out))
                )
            )
        try:
            pre_logits = self(x)
        finally:
            for h in handles:
                h.remove()
        captured[PRE_LOGITS] = pre_logits
        return {t: captured[t] for t in taps}

    def _imagenet_classifier(self) -> nn.Linear | None:
        head = self.model.get_classifier()
        if isinstance(head, nn.Linear) and head.out_features == 1000:
            return head
        return None

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        # timm's own coarse grouping (stem, one group per stage, head) is what its layer-decay
        # utilities use, so a frozen "stage 3" here is the same set of weights as there.
        from timm.models import group_parameters

        groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
        ordered = [names for _gid, names in sorted(groups.items(), key=lambda kv: kv[0])]
        last = len(ordered) - 1
        return [
            ("stem" if i == 0 else "head" if i == last else f"stage{i}", names)
            for i, names in enumerate(ordered)
        ]

def timm_config(model: nn.Module, name: str, weights_path: Path | str,
                weights_sha256: str | None = None) -> BackboneConfig:
    """Derive the config from the model's own pretrained_cfg, as timm does."""
    from timm.data import resolve_model_data_config

    data = resolve_model_data_config(model)
    pre = PreprocessConfig(
        input_size=tuple(data["input_size"]),
        interpolation=data["interpolation"],
        crop_pct=float(data["crop_pct"]),
        crop_mode=data.get("crop_mode", "center"),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
    )
    taps = (PRE_LOGITS,) + (STAGE_TAPS if getattr(model, "feature_info", None) else ())
    return BackboneConfig(
        name=name,
        library="timm",
        architecture=model.pretrained_cfg.get("architecture", type(model).__name__),
        # pre-logits width: head_hidden_size differs from num_features where the head has its
        # own hidden layer (MobileNetV3's conv_head, ViTs with a pre-logits MLP)
        dim=int(getattr(model, "head_hidden_size", model.num_features)),
        preprocess=pre,
        weights_path=str(weights_path),
        weights_sha256=weights_sha256 or sha256_file(Path(weights_path)),
        num_params=sum(p.numel() for p in model.parameters()),
        taps=taps,
    )


def locate_timm_weights(arch: str, name: str) -> Path:
    """Find a timm model's weights in the Hugging Face cache or TORCH_HOME, never online."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError:
        cfg = None
    if cfg is None:
        raise WeightsNotFoundError(name, [], f"timm has no pretrained config for {arch!r}; pass --weights PATH.")
    looked: list[Path] = []
    if cfg.hf_hub_id:
        found, tried = hf_cached_file(cfg.hf_hub_id, ("model.safetensors", "pytorch_model.bin"))
        looked += tried
        if found:
            return found
    if cfg.url:
        cand = torch_hub_candidate(cfg.url)
        looked.append(cand)
        if cand.is_file():
            return cand
    raise WeightsNotFoundError(
        name,
        [str(p) for p in looked],
        "Copy the weight file to one of these paths, or pass --weights PATH. Nothing is downloaded.",
    )


def build_timm(name: str, weights: str | None = None) -> TimmBackbone:
    """``timm:<model>`` — any timm architecture, weights from --weights or the local caches."""
    import timm

    arch = name.split(":", 1)[1]
    if arch.split(".")[0] not in timm.list_models():
        raise NotFoundError(
            f"timm has no model {arch!r}; see timm.list_models() for the {len(timm.list_models())} choices"
        )
    path = require_file(weights, name) if weights else locate_timm_weights(arch, name)
    # timm loads from a local file when the pretrained_cfg names one; no hub is consulted.
    try:
        model = timm.create_model(
            arch, pretrained=path.is_file(), pretrained_cfg_overlay={"file": str(path)}
        )
    except Exception as exc:  # the file's fault: not a checkpoint, or another network's
        raise weights_mismatch(name, path, exc) from None
    return TimmBackbone(model, timm_config(model, name, path))


def weights_mismatch(name: str, path: Path, exc: Exception) -> InvalidInputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidInputError(
        f"weight file {str(path)!r} does not fit backbone {name!r}: {first}"
    )
