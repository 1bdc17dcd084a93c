"""Adapter for open_clip image towers (``open_clip:<arch>`` or ``open_clip:<arch>@<tag>``)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import NotFoundError, WeightsNotFoundError
from .base import PRE_LOGITS, Backbone
from .config import BackboneConfig, PreprocessConfig
from .timm_backbone import weights_mismatch
from ..fingerprint import sha256_file
from .weights import hf_cached_file, require_file

_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipBackbone(Backbone):
    """The image embedding of a CLIP model (``encode_image``), before normalisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        groups = []
        for child_name, child in self.model.visual.named_children():
            names = [f"visual.{child_name}.{p}" for p, _ in child.named_parameters()]
            if names:
                groups.append((child_name, names))
        return groups


def _locate(arch: str, tag: str | None, name: str) -> Path:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        raise WeightsNotFoundError(
            name, [], "open_clip backbones need --weights PATH, or a tag to find in the local "
            f"Hugging Face cache: open_clip:{arch}@TAG with TAG one of: {', '.join(tags) or 'none'}"
        )
    if tag not in tags:
        raise NotFoundError(f"open_clip has no tag {tag!r} for {arch!r}; available: {', '.join(tags)}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub", "").rstrip("/")
    repo = "/".join(hub.split("/")[:2])
    if not repo:
        raise WeightsNotFoundError(name, [], f"{arch}@{tag} has no Hugging Face id; pass --weights PATH.")
    found, looked = hf_cached_file(repo, _HF_FILES)
    if found is None:
        raise WeightsNotFoundError(
            name, [str(p) for p in looked],
            "Put the checkpoint there (HF_HOME decides the folder) or pass --weights PATH. "
            "Nothing is downloaded.",
        )
    return found


def build_open_clip(name: str, weights: str | None = None) -> OpenClipBackbone:
    import open_clip

    spec = name.split(":", 1)[1]
    arch, _, tag = spec.partition("@")
    if arch not in open_clip.list_models():
        raise NotFoundError(
            f"open_clip has no architecture {arch!r}; available: {', '.join(open_clip.list_models())}"
        )
    path = require_file(weights, name) if weights else _locate(arch, tag or None, name)
    try:
        model = open_clip.create_model(arch, pretrained=str(path), device="cpu")
    except Exception as exc:  # the file's fault: not a checkpoint, or another network's
        raise weights_mismatch(name, Path(path), exc) from None
    model.eval()
    pp = model.visual.preprocess_cfg
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][-1]
    pre = PreprocessConfig(
        input_size=(3, int(size), int(size)),
        interpolation=pp.get("interpolation", "bicubic"),
        # open_clip resizes the shorter side straight to the crop size
        crop_pct=1.0,
        mean=tuple(float(v) for v in pp["mean"]),
        std=tuple(float(v) for v in pp["std"]),
    )
    with torch.inference_mode():
        dim = int(model.encode_image(torch.zeros(1, *pre.input_size)).shape[-1])
    cfg = BackboneConfig(
        name=name,
        library="open_clip",
        architecture=arch,
        dim=dim,
        preprocess=pre,
        weights_path=str(path),
        weights_sha256=sha256_file(path),
        num_params=sum(p.numel() for p in model.visual.parameters()),
        taps=(PRE_LOGITS,),
    )
    return OpenClipBackbone(model, cfg)
