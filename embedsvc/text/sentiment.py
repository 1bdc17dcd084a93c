"""Human-rated sentiment snippets in four domains, from the sdist of PyPI ``vaderSentiment`` 3.3.2.

The sdist (not the wheel) carries ``additional_resources/hutto_ICWSM_2014.tar.gz``, the data of
Hutto & Gilbert (ICWSM 2014): snippets rated by people from -4 to +4, one per line as
``id<TAB>mean rating<TAB>text`` (CRLF), in four domains that differ as sentiment data does:
movie reviews (10,605), tweets (4,200), Amazon reviews (3,708) and NYT editorials (5,190).
``make`` puts the sdist in ``DATA_DIR`` (``pip download --no-binary``, like Debian's data for
images); ``EMBEDSVC_TEXT_DATA_DIR`` points elsewhere.

A snippet is positive when its mean rating is above 0, negative below; the few rated exactly 0
are left out. There is no official split, so the test split is fixed by a hash of the domain
and the snippet's id (one in five): the same on every machine and with any library version.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import NotFoundError

SDIST = "vaderSentiment-3.3.2.tar.gz"
DATA_DIR = Path(os.environ.get("EMBEDSVC_TEXT_DATA_DIR",
                               Path(sys.prefix) / "share" / "embedsvc" / "text-data"))
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


def _sdist() -> Path:
    path = DATA_DIR / SDIST
    if not path.is_file():
        raise NotFoundError(
            f"the vaderSentiment sdist is not in {str(DATA_DIR)!r}; 'make test' puts it there, "
            f"or run: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d "
            f"{DATA_DIR}")
    return path


def read_snippets(domain: str) -> list[Snippet]:
    """Every rated snippet of ``domain`` (one of ``DOMAINS``) but those rated exactly 0, in
    file order."""
    if domain not in DOMAINS:
        raise NotFoundError(f"unknown sentiment domain {domain!r}; available: {', '.join(DOMAINS)}")
    with tarfile.open(_sdist()) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{DOMAINS[domain]}").read().decode("utf-8")
    out = []
    for line in raw.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip() and float(parts[1]) != 0.0:
            out.append(Snippet(parts[0].strip(), float(parts[1]), parts[2].strip(), domain))
    return out


def write_sentiment(domain: str, out: Path, limit: int | None = None) -> dict[str, int]:
    """``out/manifest.jsonl``: one snippet a line with text, label, split, domain, id and
    rating; ``limit`` keeps the first N of each split. Written whole or not at all."""
    rows = {"train": [], "test": []}
    for s in read_snippets(domain):
        if limit is None or len(rows[s.split]) < limit:
            rows[s.split].append({"text": s.text, "label": s.label, "split": s.split,
                                  "domain": domain, "id": s.id, "rating": s.rating})
    lines = [json.dumps(r, ensure_ascii=False) for split in ("train", "test") for r in rows[split]]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
    return {split: len(r) for split, r in rows.items()}
