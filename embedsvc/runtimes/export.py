"""A frozen backbone → an ONNX graph of one tap at one input size.

timm's TF-ported models (``tf_efficientnet_lite*``) pad like TensorFlow's "SAME" with
``Conv2dSame``, which computes the padding from the input's shape at run time. Exported as is,
that is a subgraph of Shape/Gather/Pad per convolution: slower, and it breaks static int8
quantisation (ImageNet top-1 agreement 0.63 measured earlier). For a fixed input size the
padding is a constant, so each ``Conv2dSame`` becomes ``ZeroPad2d`` + ``Conv2d(padding=0)``
first: the same arithmetic (checked here, within float rounding).
"""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from ..backbones.base import Backbone
from ..backbones.fuse import folded_copy
from ..errors import InvalidInputError

OPSET = 17
TOLERANCE = 1e-3  # max abs difference of features between the static-padded copy and the original


class _Tap(nn.Module):
    """The graph's one input (normalised float NCHW) and one output (the tap's pooled features)."""

    def __init__(self, net: nn.Module, tap: str):
        super().__init__()
        self.net, self.tap = net, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_taps(x, [self.tap])[self.tap]


def static_padded(net: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Replace every dynamic-padding convolution of ``net`` (in place) by a constant pad and a
    plain convolution for ``input_size``; returns how many were replaced."""
    from timm.layers import Conv2dSame

    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp, name=name: shapes.__setitem__(name, tuple(inp[0].shape[-2:])))
        for name, m in net.named_modules() if isinstance(m, Conv2dSame)]
    with torch.inference_mode():
        net(torch.zeros(1, *input_size))
    for h in hooks:
        h.remove()
    for name, (ih, iw) in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        m = getattr(parent, child)
        ph = _same_pad(ih, m.kernel_size[0], m.stride[0], m.dilation[0])
        pw = _same_pad(iw, m.kernel_size[1], m.stride[1], m.dilation[1])
        conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, 0, m.dilation,
                         m.groups, m.bias is not None)
        conv.weight, conv.bias = m.weight, m.bias
        setattr(parent, child, nn.Sequential(
            nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv))
    return len(shapes)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def export_onnx(backbone: Backbone, tap: str, path: Path) -> None:
    """Write the ONNX graph of ``backbone``'s ``tap`` (BatchNorm folded, padding static) to
    ``path``; the batch dimension stays dynamic."""
    size = backbone.cfg.preprocess.input_size
    original = folded_copy(backbone, size).cpu().eval()
    net = copy.deepcopy(original)
    static_padded(net, size)
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    graph = _Tap(net, tap).eval()
    with torch.inference_mode():
        diff = (_Tap(original, tap)(x) - graph(x)).abs().max().item()
    if diff > TOLERANCE:
        raise InvalidInputError(f"cannot export {backbone.name!r}: its static-padded copy differs "
                                f"from the model by {diff:.2g}")
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (x,), str(path), input_names=["x"], output_names=["features"],
                          dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
