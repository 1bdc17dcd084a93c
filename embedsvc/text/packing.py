"""Texts packed end to end: a batch of mixed lengths without padding, each text attending to
itself only.

A padded batch costs its size times its longest text: a 20-token snippet beside a 256-token post
pays for 256. Packed, the texts of a batch sit end to end in one sequence; each keeps its own
positions (0..n-1), and attention runs text by text (``segment_attention``), so a text's hidden
states, and its pooled vector, are the ones it gets alone (tests/test_text.py compares them).
The linear layers, most of a BERT's work, see exactly the batch's tokens; attention costs each
text's own length squared, not the batch's. The server's batcher packs what it gathers from
concurrent requests, whose lengths it cannot choose (``service/batcher.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any, Sequence

# the name under which transformers' attention registry holds ``segment_attention``
SEGMENT_ATTENTION = "embedsvc-segments"


@dataclass(frozen=True)
class Packed:
    ids: Any  # (1, tokens) every input's token ids, end to end
    positions: Any  # (1, tokens) each input's own positions
    lengths: tuple[int, ...]  # tokens of each input, in order
    owner: Any  # (tokens,) the input each token belongs to


def pack(torch, id_lists: Sequence[Sequence[int]], device) -> Packed:
    import numpy as np

    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    ids = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return Packed(torch.from_numpy(ids)[None].to(device),
                  torch.from_numpy(positions)[None].to(device), tuple(lengths.tolist()),
                  torch.from_numpy(owner).to(device))


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, segment_lengths=None, **kwargs):
    """Attention within each text of a packed sequence (``segment_lengths``); without them,
    transformers' own SDPA attention, so the model serves padded batches as before."""
    from torch.nn.functional import scaled_dot_product_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segment_lengths is None:  # a padded batch
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    import torch

    assert attention_mask is None, "a packed sequence has no mask"
    parts = [scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
             for q, k, v in zip(query.split(segment_lengths, 2), key.split(segment_lengths, 2),
                                value.split(segment_lengths, 2))]
    return torch.cat(parts, 2).transpose(1, 2).contiguous(), None


def segment_mask(attention_mask=None, **kwargs):
    """No mask for a packed sequence (given none: ``segment_attention`` needs none, and
    transformers would build one of tokens squared from its positions); SDPA's otherwise."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(attention_mask=attention_mask, **kwargs)


def use_segment_attention(model) -> None:
    """Give ``model`` (an SDPA-attention transformers model) ``segment_attention``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, segment_mask)
    model.set_attn_implementation(SEGMENT_ATTENTION)


def pool_packed(torch, hidden, packed: Packed, pooling: str):
    """One row per input from packed hidden states (1, tokens, dim), as ``_pool`` does from
    padded ones: its first token (cls), or the max or mean of its own tokens."""
    flat = hidden[0]
    n, dim = len(packed.lengths), flat.shape[1]
    if pooling == "cls":
        starts = torch.tensor((0,) + packed.lengths[:-1], device=flat.device).cumsum(0)
        return flat[starts]
    if pooling == "max":
        out = torch.full((n, dim), float("-inf"), dtype=flat.dtype, device=flat.device)
        return out.scatter_reduce(0, packed.owner[:, None].expand(-1, dim), flat, reduce="amax")
    sums = torch.zeros((n, dim), dtype=flat.dtype, device=flat.device).index_add(0, packed.owner,
                                                                                 flat)
    counts = torch.tensor(packed.lengths, dtype=flat.dtype, device=flat.device)
    return sums / counts[:, None]
