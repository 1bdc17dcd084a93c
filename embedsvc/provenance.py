"""Provenance: what made a set of vectors, in one type, and the one reader and writer of the JSON
files that carry one.

Every artifact of vectors or of what was trained on them says how its vectors were made: a
store's ``manifest.json``, an index's ``index_infos.json``, a collection snapshot's
``ann_infos.json``, a head's ``head.json``, the ``.npy.json`` beside saved embeddings. Each
module still owns its file's name and the rest of its layout; the provenance inside is always a
``Provenance`` under the key ``provenance``, and every such file is written by ``write_artifact``
(atomic, stamped with ``written_by``) and read by ``read_artifact`` / ``parse_artifact`` (one
error for a missing, unreadable or foreign file). Files written by earlier releases keep loading:
a provenance found under ``binding`` (indexes and snapshots until text encoders came) is read as
one, and keys an older provenance lacks take the value every artifact had before the key existed
(``Provenance.from_dict``).

In memory and on the wire (gRPC's Provenance, HTTP answers) a provenance travels as the plain
dict ``Provenance.to_dict`` gives.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_write_bytes
from .errors import IncompatibleError, InvalidInputError, NotFoundError

PROVENANCE = "provenance"
_OLD_PROVENANCE = "binding"  # index_infos.json and snapshots before text encoders

# The provenance keys that must agree for two sets of vectors to be comparable; ``decode`` and
# ``runtime`` up to MIXABLE.
BINDING_KEYS = ("backbone", "modality", "weights_sha256", "preprocess", "tokenizer_sha256",
                "max_length", "pooling", "dim", "tap", "normalized", "decode", "runtime",
                "projection")

# key → (values that may be mixed, the value of a provenance without the key). Mixable values make
# vectors close enough that no store, index or head can tell:
# - decode: fast vs exact measured cosine 0.998 mean on 500-1200 px photos and the same
#   logistic-head accuracy (preprocess.py; tests/test_fast_decode.py fails below 0.995, and then
#   this rule must go);
# - runtime: the fp32 runtimes reproduce torch's features (cosine 1.0000, tests/test_runtimes.py);
#   int8 ones (cosine ~0.99) mix with nothing but themselves.
# - modality: never mixed (no encoder here declares a space shared by images and text); every
#   provenance from before text encoders is an image's.
MIXABLE = {"decode": ({"fast", "exact"}, "exact"), "runtime": ({"torch", "onnx", "openvino"}, "torch"),
           "modality": (set(), "image")}

_IMAGE_ONLY = ("architecture", "library", "preprocess", "decode")
_TEXT_ONLY = ("tokenizer_sha256", "max_length", "pooling")


@dataclass(frozen=True)
class Provenance:
    """How a set of vectors was made. Image encoders fill ``preprocess`` and ``decode``, text
    encoders ``tokenizer_sha256``, ``max_length`` and ``pooling``; ``dim`` is None only while an
    image tap's width is unknown (before its first batch). A key left None is not checked
    (``check_compatible``)."""

    backbone: str
    dim: int | None = None
    tap: str | None = None
    normalized: bool | None = None  # None only in provenances that never said (a bare binding)
    modality: str = "image"
    weights_sha256: str | None = None
    architecture: str | None = None
    library: str | None = None
    preprocess: dict | None = None
    decode: str | None = None
    tokenizer_sha256: str | None = None
    max_length: int | None = None
    pooling: str | None = None
    runtime: str = "torch"
    projection: dict | None = None  # fewer dimensions: kind, from_dim, dim, sha256 (projection.py)

    @classmethod
    def of_encoder(cls, encoder_fields: Mapping[str, Any], tap: str | None, normalized: bool,
                   **settings: Any) -> "Provenance":
        """An encoder's vectors: the fields of its config (``BackboneConfig.provenance()``, a
        text encoder's), the tap, normalisation, and the settings it ran with (decode,
        runtime, dim)."""
        return cls.from_dict({**encoder_fields, "tap": tap, "normalized": normalized, **settings})

    @classmethod
    def from_dict(cls, d: Any, what: str = "the provenance") -> "Provenance":
        """A provenance as artifacts and requests carry it; keys it lacks take the value every
        artifact had before the key existed (MIXABLE), unknown keys are ignored."""
        if not isinstance(d, Mapping) or not isinstance(d.get("backbone"), str):
            raise IncompatibleError(f"{what} names no encoder (a provenance needs 'backbone')")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for key, (_, before) in MIXABLE.items():
            if values.get(key) is None:
                values[key] = before
        if values["modality"] == "text":
            values.pop("decode", None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fields of its modality (an image provenance has no pooling)."""
        drop = _TEXT_ONLY if self.modality != "text" else _IMAGE_ONLY
        out = {k: v for k, v in asdict(self).items() if k not in drop}
        if out["projection"] is None:  # unprojected vectors' provenance reads as it always did
            del out["projection"]
        return out

    def binding(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in BINDING_KEYS}


def normalized_provenance(d: Mapping[str, Any], what: str = "the provenance") -> dict[str, Any]:
    """``d`` as every artifact writes it (``Provenance.from_dict(d).to_dict()``)."""
    return Provenance.from_dict(d, what).to_dict()


def check_compatible(expected: Mapping[str, Any], actual: Mapping[str, Any], what: str) -> None:
    """Refuse features that were not made the way ``expected`` says (open_clip's probe rule)."""
    for key in BINDING_KEYS:
        if key in MIXABLE:  # absent: the value every artifact had before the key existed
            mixable, before = MIXABLE[key]
            want, got = expected.get(key) or before, actual.get(key) or before
            if want != got and not {want, got} <= mixable:
                raise IncompatibleError(f"{what} expects {key}={want!r} but the embeddings have "
                                        f"{key}={got!r}")
            continue
        if expected.get(key) is not None and expected.get(key) != actual.get(key):
            raise IncompatibleError(
                f"{what} expects {key}={expected.get(key)!r} but the embeddings have "
                f"{key}={actual.get(key)!r}"
            )


def check_weights(cfg, expected: Mapping[str, Any], what: str) -> None:
    """Refuse a loaded backbone (its ``BackboneConfig``) whose weights are not the ones
    ``expected`` (a provenance: store, head, index, run parent) was made with."""
    want = expected["weights_sha256"]
    if cfg.weights_sha256 != want:
        raise IncompatibleError(
            f"{what} {'were' if what.endswith('s') else 'was'} made with {expected['backbone']} "
            f"weights {want[:12]}…, but the loaded weights are {cfg.weights_sha256[:12]}…")


# -- the artifact files ----------------------------------------------------------------------------
def write_artifact(path: str | os.PathLike, meta: Mapping[str, Any],
                   provenance: Mapping[str, Any] | None = None, indent: int | None = 2
                   ) -> dict[str, Any]:
    """Write ``meta`` as JSON at ``path`` atomically, stamped with ``written_by``, with
    ``provenance`` (normalised) under ``provenance``; returns what was written."""
    from .versions import written_by

    body = {k: v for k, v in meta.items() if k not in (PROVENANCE, _OLD_PROVENANCE)}
    if provenance is not None:
        body[PROVENANCE] = normalized_provenance(provenance, str(path))
    body["written_by"] = written_by()
    atomic_write_bytes(path, json.dumps(body, indent=indent).encode())
    return body


def parse_artifact(text: str | bytes, what: str, format: int | None = None) -> dict[str, Any]:
    """An artifact's JSON already read: a dict whose provenance (if any, under either key) is
    normalised under ``provenance``; refused if not JSON, not an object, or (``format`` given)
    of another format."""
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InvalidInputError(f"{what} is not a JSON object")
    if format is not None and meta.get("format") != format:
        raise IncompatibleError(f"{what} has format {meta.get('format')!r}; this embedsvc reads "
                                f"format {format}")
    found = meta.pop(_OLD_PROVENANCE, None)
    found = meta.get(PROVENANCE, found)
    if found is not None:
        meta[PROVENANCE] = normalized_provenance(found, what)
    return meta


def read_artifact(path: str | os.PathLike, what: str, format: int | None = None) -> dict[str, Any]:
    """``parse_artifact`` of the file at ``path``; NotFoundError naming ``what`` if it is absent."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no {what} at {str(path.parent)!r} ({path.name} missing)") from None
    return parse_artifact(text, f"{what} {str(path)!r}", format)
