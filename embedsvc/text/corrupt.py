"""Texts made atypical on purpose, from real ones: what a text head learns to call out of
distribution beside what is merely far from its training data (outlier exposure, Hendrycks et
al. 2019, with synthetic outliers). Two kinds, both keeping the words of the domain so that only
what makes text language is broken:

- ``shuffled``: a text's own words in a random order (grammar gone, vocabulary kept);
- ``salad``: words drawn at random from the sample's vocabulary, as many as a real text has.

A pooled sentence embedding is close to a bag of words, so a text's distance to its neighbours
barely moves when its words are shuffled; a linear separator of real and corrupted embeddings
does see it (``classifiers/heads/ood.py``).
"""
from __future__ import annotations

import random
from typing import Sequence

KINDS = ("shuffled", "salad")
MIN_WORDS = 4  # shorter texts have too few orders to be told apart from a real one


def atypical_texts(texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` corrupted texts, alternating the kinds, from ``texts`` (sampled with ``seed``)."""
    rng = random.Random(seed)
    words = [t.split() for t in texts]
    long = [w for w in words if len(w) >= MIN_WORDS]
    if not long:
        return []
    vocabulary = [w for ws in long for w in ws]
    out = []
    for i in range(n):
        source = rng.choice(long)
        if KINDS[i % len(KINDS)] == "shuffled":
            shuffled = source[:]
            for _ in range(10):  # a text of one repeated word has a single order
                rng.shuffle(shuffled)
                if shuffled != source:
                    break
            out.append(" ".join(shuffled))
        else:
            out.append(" ".join(rng.choice(vocabulary) for _ in source))
    return out
