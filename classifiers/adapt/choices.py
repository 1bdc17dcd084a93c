"""The names of the adaptation methods, importable without torch (the CLI's parser and the
fine-tuning config validate against them; augment.py, text_augment.py and losses.py implement
them)."""
from __future__ import annotations

from embedsvc.errors import InvalidInputError

PRESETS = ("lighting", "camera", "background", "style")  # augment.py: images
TEXT_PRESETS = ("dropout", "swap", "mask", "typos")  # text_augment.py
PRESETS_OF = {"image": PRESETS, "text": TEXT_PRESETS}
DA_METHODS = ("dann", "coral", "mmd")  # losses.py


def parse_presets(text: str | None, modality: str | None = None) -> tuple[str, ...]:
    """"lighting,camera" → ("lighting", "camera"); a name unknown (to ``modality``, when given)
    lists the valid ones."""
    names = tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    allowed = PRESETS_OF[modality] if modality else PRESETS + TEXT_PRESETS
    unknown = [n for n in names if n not in allowed]
    if unknown:
        other = next((m for m, ps in PRESETS_OF.items() if unknown[0] in ps), None)
        raise InvalidInputError(
            f"augmentation preset {unknown[0]!r} is for {other}s, not {modality}s; "
            f"{modality} presets: {', '.join(allowed)}" if other else
            f"unknown augmentation preset {unknown[0]!r}; available: "
            + "; ".join(f"{m}s: {', '.join(ps)}" for m, ps in PRESETS_OF.items()
                        if not modality or m == modality))
    return names


def check_da(method: str) -> str:
    if method not in DA_METHODS:
        raise InvalidInputError(f"unknown adaptation method {method!r}; available: {', '.join(DA_METHODS)}")
    return method
