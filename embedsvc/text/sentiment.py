"""Human-rated sentiment snippets in four domains, from the sdist of PyPI ``vaderSentiment`` 3.3.2.

The sdist (not the wheel) carries ``additional_resources/hutto_ICWSM_2014.tar.gz``, the data of
Hutto & Gilbert (ICWSM 2014): snippets rated by people from -4 to +4, one per line as
``id<TAB>mean rating<TAB>text`` (CRLF), in four domains that differ as sentiment data does:
movie reviews (10,605), tweets (4,200), Amazon reviews (3,708) and NYT editorials (5,190).
``make`` puts the sdist in ``local_data.DATA_DIR``.

A snippet is positive when its mean rating is above 0, negative below; the few rated exactly 0
are left out. There is no official split, so the test split is fixed by a hash of the domain
and the snippet's id (one in five): the same on every machine and with any library version.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError
from .local_data import local_file, write_manifest

SDIST = "vaderSentiment-3.3.2.tar.gz"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAINS = {"movies": "movieReviewSnippets_GroundTruth.txt", "tweets": "tweets_GroundTruth.txt",
           "amazon": "amazonReviewSnippets_GroundTruth.txt",
           "nyt": "nytEditorialSnippets_GroundTruth.txt"}
TEST_ONE_IN = 5


@dataclass(frozen=True)
class Snippet:
    id: str
    rating: float
    text: str
    domain: str

    @property
    def label(self) -> str:
        return "positive" if self.rating > 0 else "negative"

    @property
    def split(self) -> str:
        h = int(hashlib.sha256(f"{self.domain}:{self.id}".encode()).hexdigest()[:8], 16)
        return "test" if h % TEST_ONE_IN == 0 else "train"


def read_snippets(domain: str) -> list[Snippet]:
    """Every rated snippet of ``domain`` (one of ``DOMAINS``) but those rated exactly 0, in
    file order."""
    if domain not in DOMAINS:
        raise NotFoundError(f"unknown sentiment domain {domain!r}; available: {', '.join(DOMAINS)}")
    with tarfile.open(local_file(SDIST, "--no-deps --no-binary :all: vaderSentiment==3.3.2")) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{DOMAINS[domain]}").read().decode("utf-8")
    out = []
    for line in raw.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip() and float(parts[1]) != 0.0:
            out.append(Snippet(parts[0].strip(), float(parts[1]), parts[2].strip(), domain))
    return out


def write_dataset(domain: str, out: Path, limit: int | None = None) -> dict[str, int]:
    """``out/manifest.jsonl``: one snippet a line with text, label, split, domain, id and
    rating; ``limit`` keeps the first N of each split."""
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for s in read_snippets(domain):
        rows[s.split].append({"text": s.text, "label": s.label, "split": s.split,
                              "domain": domain, "id": s.id, "rating": s.rating})
    return write_manifest(out, rows, limit)
