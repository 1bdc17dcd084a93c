"""Adapter for torchvision classification models (``torchvision:<model>``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import NotFoundError, WeightsNotFoundError
from .base import PRE_LOGITS, Backbone
from .config import BackboneConfig, PreprocessConfig
from .timm_backbone import weights_mismatch
from ..fingerprint import sha256_file
from .weights import require_file, torch_hub_candidate


class TorchvisionBackbone(Backbone):
    """Pre-logits are the input of the model's last Linear layer, whatever the architecture.

    torchvision models name their classifier differently (fc, classifier[-1], heads.head); the
    input to the final Linear is the pooled feature vector in all of them.
    """

    def __init__(self, model: nn.Module, cfg: BackboneConfig, classifier: nn.Linear):
        super().__init__(model, cfg)
        self._classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self._classifier.register_forward_hook(
            lambda _m, inputs, _out: captured.append(inputs[0])
        )
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)

    def _imagenet_classifier(self) -> nn.Linear | None:
        return self._classifier if self._classifier.out_features == 1000 else None


def _last_linear(model: nn.Module, name: str) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise NotFoundError(f"{name!r} has no Linear classifier to take pre-logit features from")
    return linears[-1]


def build_torchvision(name: str, weights: str | None = None) -> TorchvisionBackbone:
    import torchvision.models as tvm

    arch = name.split(":", 1)[1]
    available = tvm.list_models(module=tvm)
    if arch not in available:
        raise NotFoundError(
            f"torchvision has no classification model {arch!r}; available: {', '.join(available)}"
        )
    default = tvm.get_model_weights(arch).DEFAULT
    if weights:
        path = require_file(weights, name)
    else:
        path = torch_hub_candidate(default.url)
        if not path.is_file():
            raise WeightsNotFoundError(
                name,
                [str(path)],
                f"Copy {Path(default.url).name} there (TORCH_HOME decides the folder), "
                "or pass --weights PATH. Nothing is downloaded.",
            )
    model = tvm.get_model(arch, weights=None)
    try:  # any failure here is the file's: not a checkpoint, or another network's
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    except Exception as exc:
        raise weights_mismatch(name, Path(path), exc) from None
    model.eval()
    classifier = _last_linear(model, name)
    # The weights' own eval transform: resize_size → crop_size, which is timm's crop_pct.
    tf = default.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    pre = PreprocessConfig(
        input_size=(3, crop, crop),
        interpolation=tf.interpolation.value,
        crop_pct=crop / resize,
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
    )
    cfg = BackboneConfig(
        name=name,
        library="torchvision",
        architecture=arch,
        dim=classifier.in_features,
        preprocess=pre,
        weights_path=str(path),
        weights_sha256=sha256_file(path),
        num_params=sum(p.numel() for p in model.parameters()),
        taps=(PRE_LOGITS,),
    )
    return TorchvisionBackbone(model, cfg, classifier)
