"""The names of the adaptation methods, importable without torch (the CLI's parser and the
fine-tuning config validate against them; augment.py and losses.py implement them)."""
from __future__ import annotations

from embedsvc.errors import InvalidInputError

PRESETS = ("lighting", "camera", "background", "style")  # augment.py
DA_METHODS = ("dann", "coral", "mmd")  # losses.py


def parse_presets(text: str | None) -> tuple[str, ...]:
    """"lighting,camera" → ("lighting", "camera"); an unknown name lists the valid ones."""
    names = tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise InvalidInputError(f"unknown augmentation preset {unknown[0]!r}; available: {', '.join(PRESETS)}")
    return names


def check_da(method: str) -> str:
    if method not in DA_METHODS:
        raise InvalidInputError(f"unknown adaptation method {method!r}; available: {', '.join(DA_METHODS)}")
    return method
