"""Augmentation presets for text: the guide's "kind of domain difference → augmentation" for the
shifts text meets between domains, with nothing to download (no synonym lists, no
back-translation models).

    dropout   drop words at random                                    terser, clipped text
    swap      swap neighbouring words                                 looser word order
    mask      replace a span of words with the tokenizer's mask        missing or unfamiliar
              token (or drop it, where the tokenizer has none)         words (jargon, names)
    typos     character noise: swapped, dropped, doubled letters,     informal writing (tweets,
              lower case                                              reviews typed on phones)

Presets work on the strings a fine-tuning batch holds, before tokenisation, and draw all their
randomness from the epoch's ``torch.Generator``, so a resumed run sees the same augmented texts
(exact resume). Each text gets a preset with probability ``P_APPLY``, as images do: some clean
texts remain, and the source domain is not forgotten.
"""
from __future__ import annotations

from typing import Callable

import torch

P_APPLY = 0.8
WORD_RATE = 0.15  # dropout, swap, typos: the share of words touched
SPAN = (0.1, 0.25)  # mask: the share of a text's words in its span


def _u(g: torch.Generator) -> float:
    return float(torch.rand(1, generator=g))


def _int(g: torch.Generator, hi: int) -> int:
    """Uniform in [0, hi)."""
    return int(torch.randint(0, hi, (1,), generator=g))


def dropout(words: list[str], g: torch.Generator, mask: str | None) -> list[str]:
    kept = [w for w in words if _u(g) >= WORD_RATE]
    return kept or words[:1]


def swap(words: list[str], g: torch.Generator, mask: str | None) -> list[str]:
    out = list(words)
    for _ in range(max(1, round(WORD_RATE * len(out))) if len(out) > 1 else 0):
        i = _int(g, len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def span_mask(words: list[str], g: torch.Generator, mask: str | None) -> list[str]:
    n = max(1, round((SPAN[0] + (SPAN[1] - SPAN[0]) * _u(g)) * len(words)))
    if n >= len(words):
        return words
    start = _int(g, len(words) - n + 1)
    return words[:start] + ([mask] * n if mask else []) + words[start + n:]


def _typo(word: str, g: torch.Generator) -> str:
    if len(word) < 2:
        return word
    i, kind = _int(g, len(word) - 1), _int(g, 3)
    if kind == 0:  # neighbouring letters swapped
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # a letter dropped
        return word[:i] + word[i + 1:]
    return word[:i + 1] + word[i] + word[i + 1:]  # a letter doubled


def typos(words: list[str], g: torch.Generator, mask: str | None) -> list[str]:
    lower = _u(g) < 0.5
    return [(_typo(w, g) if _u(g) < WORD_RATE else w).lower() if lower else
            (_typo(w, g) if _u(g) < WORD_RATE else w) for w in words]


OPS: dict[str, Callable[[list[str], torch.Generator, str | None], list[str]]] = {
    "dropout": dropout, "swap": swap, "mask": span_mask, "typos": typos}


def apply_text_presets(texts: list[str], presets: tuple[str, ...], g: torch.Generator,
                       mask: str | None = None) -> list[str]:
    """Each text through each preset with probability P_APPLY; ``mask``: the tokenizer's mask
    token (None: masked spans are dropped)."""
    if not presets:
        return texts
    out = []
    for text in texts:
        words = text.split()
        for name in presets:
            if words and _u(g) < P_APPLY:
                words = OPS[name](words, g, mask)
        out.append(" ".join(words))
    return out
