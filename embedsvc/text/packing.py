"""Texts packed into rows: a batch of mixed lengths without padding between its texts.

A padded batch costs its size times its longest text: a 20-token snippet beside a 256-token post
pays for 256. Packed, texts sit end to end in rows of at most ``max_length`` tokens (first fit,
longest first); each keeps its own positions (0..n-1) and attends only to itself (a
block-diagonal mask), so its hidden states, and its pooled vector, are the ones it gets alone
(tests/test_text.py compares them). The server's batcher packs what it gathers from concurrent
requests, whose lengths it cannot choose (``service/batcher.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Packed:
    ids: Any  # (rows, width) token ids, padded at the rows' ends
    positions: Any  # (rows, width) each text's own positions
    mask: Any  # (rows, 1, width, width) bool: True where a token may attend
    owner: Any  # (rows * width,) the input each position belongs to; -1 for padding
    starts: Any  # (inputs,) the flat position of each input's first token
    counts: Any  # (inputs,) tokens of each input


def pack(torch, id_lists: Sequence[Sequence[int]], max_width: int, pad_id: int, device) -> Packed:
    order = sorted(range(len(id_lists)), key=lambda i: -len(id_lists[i]))
    rows: list[list[int]] = []  # the inputs of each row
    used: list[int] = []
    for i in order:  # first fit, longest first
        n = len(id_lists[i])
        r = next((r for r in range(len(rows)) if used[r] + n <= max_width), None)
        if r is None:
            rows.append([]), used.append(0)
            r = len(rows) - 1
        rows[r].append(i)
        used[r] += n
    width = max(used)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    starts = torch.zeros(len(id_lists), dtype=torch.long)
    counts = torch.zeros(len(id_lists), dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = len(id_lists[i])
            ids[r, at:at + n] = torch.tensor(id_lists[i], dtype=torch.long)
            positions[r, at:at + n] = torch.arange(n)
            owner[r, at:at + n] = i
            starts[i], counts[i] = r * width + at, n
            at += n
    same = owner[:, :, None] == owner[:, None, :]
    # a padding position attends to itself only: no row of the mask is empty (an empty one
    # gives NaN in attention, which would not stay in the padding)
    alone = torch.eye(width, dtype=torch.bool)[None] & (owner[:, :, None] < 0)
    mask = ((same & (owner[:, :, None] >= 0)) | alone)[:, None]
    return Packed(ids.to(device), positions.to(device), mask.to(device), owner.reshape(-1).to(device),
                  starts.to(device), counts.to(device))


def pool_packed(torch, hidden, packed: Packed, pooling: str):
    """One row per input from packed hidden states (rows, width, dim), as ``_pool`` does from
    padded ones: its first token (cls), or the max or mean of its own tokens."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    if pooling == "cls":
        return flat[packed.starts]
    valid = packed.owner >= 0
    owner, values = packed.owner[valid], flat[valid]
    n, dim = len(packed.counts), flat.shape[1]
    if pooling == "max":
        out = torch.full((n, dim), float("-inf"), dtype=flat.dtype, device=flat.device)
        return out.scatter_reduce(0, owner[:, None].expand(-1, dim), values, reduce="amax")
    sums = torch.zeros((n, dim), dtype=flat.dtype, device=flat.device).index_add(0, owner, values)
    return sums / packed.counts[:, None].to(flat.dtype)
