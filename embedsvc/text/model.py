"""A text encoder's parts from its folder: the tokenizer, the transformer (refused when its
weights file lacks a weight), padded batches, pooling as the folder says, and, for fine-tuning,
transformer and pooling as one trainable module with its layer groups (embeddings, then each
block), as an image backbone has its stages."""
from __future__ import annotations

from .folder import TextEncoderConfig


def load_tokenizer(cfg: TextEncoderConfig, max_length: int | None = None):
    """(tokenizer, pad id): the folder's fast tokenizer with its saved padding and truncation
    replaced: no padding (batches pad themselves) and inputs cut at ``max_length`` tokens (the
    encoder's own by default; the folder's tokenizer.json may say another), special tokens kept.
    What was cut is left in ``overflowing``, so it can be counted."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(f"{cfg.folder}/tokenizer.json")
    pad_id = (tokenizer.padding or {}).get("pad_id", 0)  # the folder's own
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length or cfg.max_length)
    return tokenizer, pad_id


def pad_batch(torch, id_lists, pad_id: int, device):
    """(input_ids, attention_mask) of token id lists, padded to the longest."""
    width = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for row, one in enumerate(id_lists):
        ids[row, :len(one)] = torch.tensor(one, dtype=torch.long)
        mask[row, :len(one)] = 1
    return ids.to(device), mask.to(device)


def load_model(cfg: TextEncoderConfig):
    """The transformers model in ``cfg.folder``, in eval mode, on the CPU."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from ..errors import IncompatibleError

    hf_logging.disable_progress_bar()  # a load is quick; its bars would bury our output
    model, loading = AutoModel.from_pretrained(cfg.folder, local_files_only=True,
                                               output_loading_info=True)
    # a weight the file lacks would be random: refuse, never warn and carry on (a pooler head
    # is not used: vectors come from the hidden states)
    missing = [k for k in loading["missing_keys"] if not k.startswith("pooler.")]
    if missing:
        raise IncompatibleError(f"text encoder {cfg.name!r}: its weights file lacks "
                                f"{len(missing)} of the model's weights ({missing[0]}, ...)")
    return model.eval()


def pool(hidden, mask, pooling: str):
    """One row per text of padded hidden states (N, width, dim): its first token (cls), or the
    max or mean of its own tokens (``mask``)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, -1e9).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def text_backbone(cfg: TextEncoderConfig):
    """``cfg``'s transformer and pooling as one ``torch.nn.Module`` (built on first call, so
    that importing this module costs no torch)."""
    from torch import nn

    class TextBackbone(nn.Module):
        """``forward((ids, mask))`` → pooled, un-normalised features (N, dim): the vectors the
        encoder makes, before its normalisation."""

        def __init__(self):
            super().__init__()
            self.cfg = cfg
            self.model = load_model(cfg)

        @property
        def name(self) -> str:
            return self.cfg.name

        def forward(self, batch):
            ids, mask = batch
            hidden = self.model(input_ids=ids, attention_mask=mask,
                                token_type_ids=ids.new_zeros(ids.shape)).last_hidden_state
            return pool(hidden, mask, self.cfg.pooling)

        def layer_groups(self) -> list[tuple[str, list[str]]]:
            """Parameter names from input to output: the embeddings, then each block."""
            names = [n for n, _ in self.model.named_parameters()]
            groups = [("embeddings", [n for n in names if n.startswith("embeddings.")])]
            for b in range(self.cfg.layers):
                groups.append((f"block{b + 1}",
                               [n for n in names if n.startswith(f"encoder.layer.{b}.")]))
            return groups

        def unused_parameters(self) -> list:
            """Weights off the path to the features (a pooler head): never trained."""
            grouped = {n for _, ns in self.layer_groups() for n in ns}
            return [p for n, p in self.model.named_parameters() if n not in grouped]

    return TextBackbone()
