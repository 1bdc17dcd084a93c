"""A text encoder as stages: prepare (tokenise, truncate) → collate (pad to the longest, mask) →
encode (the transformer, pooled at a tap) → finish (normalise).

The same stages as the image extractor's (decode → stack → forward → finish), so that batching
and serving can treat both alike. Tokenisation uses the folder's fast tokenizer directly
(``tokenizers``), with its saved padding and truncation replaced: batches are padded to their
longest input only (dynamic padding) and inputs are cut at the encoder's ``max_length``, each
cut counted. Inputs are stripped of surrounding whitespace, as sentence-transformers does, so
the vectors are the ones ``SentenceTransformer(folder).encode`` gives (tests/test_text.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from .folder import FINAL_TAP, TextEncoderConfig


@dataclass(frozen=True)
class Tokens:
    ids: tuple[int, ...]
    truncated: bool  # the text was longer than max_length tokens and was cut


@dataclass(frozen=True)
class TextEmbeddings:
    vectors: np.ndarray  # (n, dim) float32
    truncated: int  # how many of the inputs were cut at max_length
    provenance: dict


class TextEncoder:
    def __init__(self, cfg: TextEncoderConfig, device: str = "cpu"):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from ..runtime import plan_device

        self.cfg = cfg
        self.plan = plan_device(device)
        self.tokenizer = Tokenizer.from_file(f"{cfg.folder}/tokenizer.json")
        self.pad_id = (self.tokenizer.padding or {}).get("pad_id", 0)  # the folder's own
        self.tokenizer.no_padding()
        # cut at the encoder's own length (the folder's tokenizer.json may say another), its
        # special tokens kept; what was cut is left in ``overflowing``, so it can be counted
        self.tokenizer.enable_truncation(max_length=cfg.max_length)
        model = AutoModel.from_pretrained(cfg.folder, local_files_only=True)
        self.model = model.eval().to(self.plan.device)
        self._torch = torch

    @property
    def name(self) -> str:
        return self.cfg.name

    # -- stages ----------------------------------------------------------------------------
    def prepare(self, text: str) -> Tokens:
        if not isinstance(text, str):
            raise InvalidInputError(f"a text input must be a string, got {type(text).__name__}")
        enc = self.tokenizer.encode(text.strip())
        return Tokens(tuple(enc.ids), bool(enc.overflowing))

    def collate(self, items: Sequence[Tokens]):
        """(input_ids, attention_mask), padded to the longest of ``items``."""
        torch = self._torch
        width = max(len(t.ids) for t in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, t in enumerate(items):
            ids[row, :len(t.ids)] = torch.tensor(t.ids, dtype=torch.long)
            mask[row, :len(t.ids)] = 1
        return ids.to(self.plan.device), mask.to(self.plan.device)

    def encode(self, batch, tap: str = FINAL_TAP):
        """Pooled features of a collated batch at ``tap`` (float32, on the CPU)."""
        if tap not in self.cfg.taps:
            raise InvalidInputError(f"text encoder {self.name!r} has no tap {tap!r}; "
                                    f"its taps: {', '.join(self.cfg.taps)}")
        ids, mask = batch
        torch = self._torch
        with torch.inference_mode(), self.plan.autocast():
            out = self.model(input_ids=ids, attention_mask=mask,
                             token_type_ids=torch.zeros_like(ids),
                             output_hidden_states=tap != FINAL_TAP)
            hidden = out.last_hidden_state if tap == FINAL_TAP else \
                out.hidden_states[int(tap.removeprefix("block"))]
            return _pool(hidden.float(), mask, self.cfg.pooling).cpu()

    def finish(self, pooled, tap: str = FINAL_TAP) -> np.ndarray:
        torch = self._torch
        if self.cfg.normalize and tap == FINAL_TAP:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32, copy=False)

    # -- all stages --------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], tap: str = FINAL_TAP, batch_size: int = 32) -> TextEmbeddings:
        """Vectors in the order of ``texts``, computed in batches of similar lengths: a batch
        is padded to its longest text, so sorting by length first spares most of the padding's
        work (the mask makes the vectors the same either way)."""
        tokens = [self.prepare(t) for t in texts]
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i].ids))
        vectors = np.zeros((len(tokens), self.cfg.dim), np.float32)
        for lo in range(0, len(order), batch_size):
            rows = order[lo:lo + batch_size]
            vectors[rows] = self.finish(self.encode(self.collate([tokens[i] for i in rows]), tap), tap)
        return TextEmbeddings(vectors, sum(t.truncated for t in tokens), self.cfg.provenance(tap))


def _pool(hidden, mask, pooling: str):
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, -1e9).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
