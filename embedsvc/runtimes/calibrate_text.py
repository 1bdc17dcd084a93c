"""int8 for a text encoder, chosen and measured on the user's own texts, with the image gate.

The texts are split: three quarters choose the int8 form (``text_graph.QUANTISED``, fastest
first: the first whose embedding cosine to fp32 reaches the threshold on them), the other
quarter measures the chosen one against torch fp32:

- embedding cosine (mean, min);
- with a labelled text store of the same encoder: a logistic-regression probe trained on the
  store's fp32 vectors, its accuracy on held-out rows re-embedded in int8 against their fp32
  vectors.

Texts the encoder does not read as language (``text_graph.word_share``) are refused first: a
report is still written, failed, so the gate says why. The report sits beside the int8 graph
(``calibration.json``), as for images; ``gate.check_gate`` reads it before onnx-int8 runs.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..provenance import write_artifact
from ..versions import library_version
from .cache import fp32_graph, graph_dir, writing
from .calibrate import PROBE_ROWS, _cosines, probe_report
from .gate import MIN_COSINE, REPORT_JSON
from .runners import OnnxRunner
from .text_graph import MIN_WORD_SHARE, QUANTISED, quantize_text, word_share

MAX_TEXTS = 2000  # texts measured (a calibration of 2,000 snippets takes ~20 s on 2 cores)


def calibrate_text(encoder, texts: Sequence[str], store: str | None = None,
                   min_cosine: float = MIN_COSINE) -> dict:
    """Quantise, measure, write ``int8.onnx`` and ``calibration.json`` for ``encoder`` (a
    TextEncoder on torch) at its tap; return the report."""
    import torch

    if not 0 < min_cosine <= 1:
        raise InvalidInputError(f"min_cosine must be in (0, 1], got {min_cosine}")
    texts = [t for t in texts if t.strip()][:MAX_TEXTS]
    if len(texts) < 8:
        raise InvalidInputError(f"calibration needs at least 8 non-blank texts, got {len(texts)}")
    tap, folder = encoder.tap, graph_dir(encoder.cfg, encoder.tap)
    held = np.arange(len(texts)) % 4 == 3
    choose = [t for t, h in zip(texts, held) if not h]
    measure = [t for t, h in zip(texts, held) if h]
    report = {"provenance": encoder.provenance_for(tap, False), "texts": len(texts),
              "calibrated_on": len(choose), "held_out": len(measure),
              "word_share": round(word_share(encoder.tokenizer, texts), 4),
              "min_word_share": MIN_WORD_SHARE, "min_cosine": min_cosine}
    t0 = time.perf_counter()
    if report["word_share"] < MIN_WORD_SHARE:
        report.update(passed=False, refusal=(
            f"its calibration texts are not language to {encoder.name}: "
            f"{100 * report['word_share']:.0f}% of their tokens are whole words of its "
            f"vocabulary (English-like text has 60% or more; at least "
            f"{100 * MIN_WORD_SHARE:.0f}% needed)"))
    else:
        threads = torch.get_num_threads()
        fp32 = fp32_graph(encoder, tap)
        with writing(folder / "int8.onnx") as tmp:
            for form, keep_ffn_outputs in QUANTISED:
                quantize_text(fp32, tmp, keep_ffn_outputs)
                int8 = OnnxRunner(tmp, threads)
                if _cosines(*_both(encoder, int8, choose))["cosine_mean"] >= min_cosine:
                    break
            report.update(form=form, **_cosines(*_both(encoder, int8, measure)),
                          probe=_probe(store, encoder, int8) if store else None,
                          quantiser=f"onnxruntime {library_version('onnxruntime')} dynamic, "
                                    f"per-channel s8 weights, u8 activations")
            report["passed"] = report["cosine_mean"] >= min_cosine
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return write_artifact(folder / REPORT_JSON, report, report["provenance"])


def _both(encoder, int8, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(torch fp32, int8) raw features of ``texts``, in padded batches of similar lengths."""
    tokens = encoder.prepare_many(texts)
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i].ids))
    fp32 = encoder.encode_sorted(tokens)
    q = np.zeros_like(fp32)
    for lo in range(0, len(order), encoder.batch_size):
        take = order[lo:lo + encoder.batch_size]
        ids, mask = encoder.collate([tokens[i] for i in take])
        q[take] = int8(ids.cpu().numpy(), mask.cpu().numpy())
    return fp32, q


def _probe(store_path: str, encoder, int8) -> dict:
    """A logistic probe trained on the store's fp32 vectors: accuracy on held-out rows with their
    fp32 vectors and with their texts re-embedded in int8."""
    from ..encoders import check_encoder
    from ..store import EmbeddingStore

    store = EmbeddingStore.open(store_path)
    check_encoder(encoder, store.provenance, f"store {store_path!r}")
    if store.provenance["tap"] != encoder.tap:
        raise InvalidInputError(f"store {store_path!r} holds tap {store.provenance['tap']}; "
                                f"this calibration is of tap {encoder.tap}")
    meta = store.metadata()
    rows = [i for i, m in enumerate(meta) if m.get("label") and m.get("text")][:PROBE_ROWS]
    if len(rows) < 20:
        raise InvalidInputError(f"store {store_path!r} has {len(rows)} labelled rows with their "
                                f"texts; the probe needs 20")
    return probe_report(store, rows,
                        lambda test_rows: _both(encoder, int8, [meta[i]["text"] for i in test_rows])[1])
