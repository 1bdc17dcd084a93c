"""A text encoder → an ONNX graph of one tap, and its int8 form.

The graph takes token ids and an attention mask, both (batch, tokens) with both dimensions
dynamic, and returns the tap's pooled, un-normalised features: the rows ``TextEncoder.encode``
makes from a padded batch (exported from a fresh copy of the transformer with its own SDPA
attention; the packed-text attention of ``text/packing.py`` is torch's only).

int8 is dynamic: weights per output channel in int8, activations quantised per batch at run
time. Static ranges (one per tensor, calibrated once, what the image graphs use) fail a
transformer's hidden states, whose few outlier channels dwarf the rest: minilm-l6 on movie
snippets gave cosine 0.82 to fp32 (0.95 with the FFN output projections kept in float), against
0.99 dynamic. The products of two activations (attention scores and their weighted sum) stay in
float: quantising them cost both speed and fidelity here. ``QUANTISED`` lists the forms a
calibration tries, fastest first.
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Sequence

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of the exported graph's features from torch's
# (name, keep the FFN output projections in float): measured on minilm-l6, 2 cores with VNNI,
# movie snippets: 2.55x / 1.71x ONNX Runtime fp32, cosine 0.992 / 0.995
QUANTISED = (("every linear layer", False), ("linear layers but the FFN outputs", True))
MIN_WORD_SHARE = 0.3  # see word_share


def export_text_onnx(cfg, tap: str, path: Path) -> None:
    """Write the ONNX graph of the text encoder ``cfg``'s ``tap`` to ``path``, checked against
    the transformer it came from."""
    import torch

    from ..errors import InvalidInputError
    from ..text.folder import FINAL_TAP
    from ..text.model import load_model, pool

    class Tap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = load_model(cfg)

        def forward(self, ids, mask):
            out = self.model(input_ids=ids, attention_mask=mask,
                             token_type_ids=torch.zeros_like(ids),
                             output_hidden_states=tap != FINAL_TAP)
            hidden = out.last_hidden_state if tap == FINAL_TAP else \
                out.hidden_states[int(tap.removeprefix("block"))]
            return pool(hidden, mask, cfg.pooling)

    graph = Tap().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row, so the mask's path is traced and checked
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (ids, mask), str(path), input_names=["ids", "mask"],
                          output_names=["features"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"ids": {0: "batch", 1: "tokens"},
                                        "mask": {0: "batch", 1: "tokens"},
                                        "features": {0: "batch"}})
    import onnxruntime as ort

    check = torch.randint(1000, 2000, (2, 29), generator=g)  # another shape than the trace's
    check_mask = torch.ones_like(check)
    check_mask[0, 20:] = 0
    with torch.inference_mode():
        want = graph(check, check_mask).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"ids": check.numpy(), "mask": check_mask.numpy()})[0]
    diff = abs(got - want).max()
    if diff > TOLERANCE:
        raise InvalidInputError(f"cannot export {cfg.name!r}: its ONNX graph differs from the "
                                f"model by {diff:.2g}")


def quantize_text(src: Path, dst: Path, keep_ffn_outputs: bool) -> None:
    """``dst``: ``src`` with its weight matrices in int8 per channel, activations quantised per
    batch; products of two activations stay in float, and the FFN output projections too when
    ``keep_ffn_outputs``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        shape = next((weights[i] for i in node.input if i in weights), None)
        # no weight: attention (scores, weighted sum); a wide-to-narrow weight: the FFN output
        if shape is None or (keep_ffn_outputs and len(shape) == 2 and shape[0] > shape[1]):
            keep.append(node.name)
    # its advice to pre-process first (shape inference for static int8) goes to the root logger
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=keep)
    finally:
        quiet.setLevel(level)


def word_share(tokenizer, texts: Sequence[str]) -> float:
    """The share of ``texts``' tokens that are whole words of the tokenizer's vocabulary (not
    unknown, not a word's continuation, two letters or more). A calibration measures int8 on
    the texts it is given; on texts that are not language to the encoder, the measure says
    nothing about the texts it will embed. Measured with minilm-l6: movie, tweet, Amazon and NYT
    snippets 0.62-0.75, source code 0.40; random letters 0.04, base64 0.02, CJK characters (its
    vocabulary is English) 0.00, digits and punctuation 0.00."""
    tokens = [t for e in tokenizer.encode_batch(list(texts)) for t, special in
              zip(e.tokens, e.special_tokens_mask) if not special]
    if not tokens:
        return 0.0
    unknown = getattr(getattr(tokenizer, "model", None), "unk_token", "[UNK]")
    words = sum(t != unknown and not t.startswith("##") and
                len(re.sub(r"[\W\d_]", "", t.lstrip("Ġ▁"))) >= 2 for t in tokens)
    return words / len(tokens)
