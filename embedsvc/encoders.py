"""Encoders of every modality behind one set of calls; the one place that decides which modality
a name, a provenance or an input is.

An encoder is an image backbone's ``extract.FeatureExtractor`` or a ``text.TextEncoder``. Both
answer the same calls: ``prepare_input(item, name)`` one input, ``collate(prepared)`` a batch,
``encode(batch, tap)`` raw rows, ``finish(ids, rows, tap, normalized)`` one request's
``Embeddings``; ``cost(prepared)`` what an input costs a batch (1 per image, its tokens per text)
and ``notes(prepared)`` its (tokens, truncated); ``embed(inputs, ids)`` all stages at once,
``dataset_batches(records)`` a dataset's, ``binding()`` what a collection of its vectors is
bound to. Everything after the vector (stores, indexes, heads, collections) sees only vectors
and provenance; ``modality`` in a provenance keeps image and text vectors apart.

Nothing heavy is imported here: names resolve without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backbones import DEFAULT_BACKBONE, list_backbones, resolve
from .errors import IncompatibleError, NotFoundError
from .text.catalog import DEFAULT_TEXT_ENCODER, find as find_text, list_text_encoders

IMAGE, TEXT = "image", "text"
MODALITIES = (IMAGE, TEXT)
DEFAULTS = {IMAGE: DEFAULT_BACKBONE, TEXT: DEFAULT_TEXT_ENCODER}


def modality_of_name(name: str) -> str:
    """The modality of encoder ``name``; an unknown name lists every valid one."""
    if find_text(name) is not None:
        return TEXT
    try:
        resolve(name)
    except NotFoundError:
        choices = [e.name for _, e in listing()]
        raise NotFoundError(f"unknown encoder {name!r}; available: {', '.join(choices)}") from None
    return IMAGE


def modality_of(provenance: dict[str, Any]) -> str:
    """What a store, head, index or collection holds (provenances before text: images)."""
    return provenance.get("modality") or IMAGE


def default_encoder(modality: str) -> str:
    return DEFAULTS[modality]


def modality_of_records(records) -> str:
    """What a dataset source holds: text when its records carry text cells or are all ``.txt``
    files, else images (a file that is neither is reported by the embedder)."""
    from .datasets.sources import TEXT_SUFFIXES

    if any(r.text is not None for r in records) or records and all(
            Path(r.path).suffix.lower() in TEXT_SUFFIXES for r in records):
        return TEXT
    return IMAGE


def record_inputs(records, modality: str) -> tuple[list, list[str]]:
    """(inputs an encoder's ``embed`` takes, their ids) for dataset records: image paths, or
    texts (a record's own, or its ``.txt`` file read; one that cannot be read is left out)."""
    if modality != TEXT:
        return [r.path for r in records], [r.path for r in records]
    from .text.encoder import read_text_record

    read = [read_text_record(r.to_dict()) for r in records]
    ok = [x for x in read if "error" not in x]
    return [x["text"] for x in ok], [x["path"] for x in ok]


def check_query(given: str, provenance: dict[str, Any], what: str) -> None:
    """Refuse queries of another modality than the vectors ``what`` was made from."""
    have = modality_of(provenance)
    if given != have:
        raise IncompatibleError(f"{what} holds {have} vectors ({provenance.get('backbone')}); "
                                f"query it with {have}s, not {given}s")


def check_source(name: str, records, what: str) -> None:
    """Refuse to embed a source with an encoder of another modality, naming both."""
    have, want = modality_of_records(records), modality_of_name(name)
    if have != want:
        raise IncompatibleError(f"{what} holds {have}s, but {name} encodes {want}s; choose an "
                                f"encoder of {have}s (default {DEFAULTS[have]}, see 'embedsvc models')")


def listing() -> list[tuple[str, Any]]:
    """(modality, entry) for every registered name and family: images, then text."""
    return [(IMAGE, e) for e in list_backbones()] + [(TEXT, e) for e in list_text_encoders()]


@dataclass(frozen=True)
class EncodeOptions:
    """How to run an encoder; the image-only fields (decode, pixels, workers) are ignored by
    text encoders."""

    tap: str | None = None  # None: the encoder's default (pre_logits; embedding)
    normalize: bool = True
    batch_size: int = 32
    device: str = "auto"
    decode: str | None = None
    runtime: str | None = None
    max_pixels: int | None = None
    workers: int | None = None


def open_encoder(name: str, weights: str | None = None, options: EncodeOptions = EncodeOptions()):
    """The encoder ``name`` names, ready to embed as ``options`` say."""
    if modality_of_name(name) == TEXT:
        from .text.catalog import text_encoder_config
        from .text.encoder import TextEncoder

        if weights:
            raise IncompatibleError(f"text encoder {name!r} reads its weights from its folder; "
                                    f"--weights is for image backbones (use hf:<folder>)")
        return TextEncoder(text_encoder_config(name), options.device,
                           options.tap or TextEncoder.default_tap, options.normalize,
                           options.batch_size, options.runtime or "torch")
    from .backbones import create_backbone
    from .extract import ExtractConfig, FeatureExtractor

    given = {k: v for k, v in (("decode", options.decode), ("runtime", options.runtime),
                               ("max_pixels", options.max_pixels), ("workers", options.workers))
             if v is not None}
    config = ExtractConfig(batch_size=options.batch_size, normalize=options.normalize,
                           tap=options.tap or FeatureExtractor.default_tap,
                           device=options.device, **given)
    return FeatureExtractor(create_backbone(name, weights=weights), config)


def encoder_for(provenance: dict[str, Any], device: str = "auto"):
    """An encoder that makes vectors exactly as ``provenance`` (a store's, head's, index's)
    describes, its weights (and tokenizer) checked by hash."""
    if modality_of(provenance) == TEXT:
        from .text.catalog import text_encoder_config
        from .text.encoder import TextEncoder

        cfg = text_encoder_config(provenance["backbone"])
        _check_text_config(cfg, provenance, "the vectors")
        return TextEncoder(cfg, device, provenance["tap"], provenance["normalized"],
                           runtime=provenance.get("runtime") or "torch")
    from .extract import extractor_for

    return extractor_for(provenance, device)


def check_encoder(encoder, provenance: dict[str, Any], what: str) -> None:
    """Refuse a loaded encoder that is not the one ``provenance`` (a head's, an index's) was
    made with: its modality, its weights (and a text encoder's tokenizer, length, pooling)."""
    if encoder.modality != modality_of(provenance):
        raise IncompatibleError(f"{what} holds {modality_of(provenance)} vectors; "
                                f"{encoder.name} embeds {encoder.modality}s")
    if encoder.modality == TEXT:
        _check_text_config(encoder.cfg, provenance, what)
    else:
        from .provenance import check_weights

        check_weights(encoder.backbone.cfg, provenance, what)


def _check_text_config(cfg, provenance: dict[str, Any], what: str) -> None:
    for key in ("weights_sha256", "tokenizer_sha256", "max_length", "pooling"):
        if provenance.get(key) != getattr(cfg, key):
            raise IncompatibleError(
                f"{what} {'were' if what.endswith('s') else 'was'} made by "
                f"{provenance['backbone']} with {key}={str(provenance.get(key))[:12]!r}, but the "
                f"installed encoder has {str(getattr(cfg, key))[:12]!r}")


def query_encoder(provenance: dict[str, Any], device: str = "auto", inputs: int = 1):
    """What embeds ``inputs`` queries the way ``provenance`` says, soonest: for a few images a
    cached graph without torch (``query.py``), else ``encoder_for``. For projected vectors'
    provenance: the encoder's own vectors, which the caller projects."""
    from .projection import source_provenance

    provenance = source_provenance(provenance)
    if modality_of(provenance) == TEXT:
        return encoder_for(provenance, device)
    from .query import embedder_for

    return embedder_for(provenance, device, inputs)


def atypical_vectors(provenance: dict[str, Any], rows: list[dict], n: int, seed: int = 0,
                     device: str = "auto"):
    """Vectors of inputs made atypical on purpose from a store's ``rows`` (outlier exposure for
    a head's OOD score), made as ``provenance`` says; None where the modality has no such
    corruptions (images) or the rows keep no inputs."""
    if modality_of(provenance) != TEXT:
        return None
    from .text.corrupt import atypical_texts

    texts = atypical_texts([r["text"] for r in rows if r.get("text")], n, seed)
    if not texts:
        return None
    return encoder_for(provenance, device).embed(texts).vectors
