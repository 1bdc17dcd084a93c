"""Folded models cached as TorchScript, so that a one-shot command starts without timm.

``embedsvc search --image`` or ``classify`` in a fresh process spent 6 s on 2 cores before its
first image: 1.9 s importing torch, 2.3 s importing timm (which imports torchvision's models and
ops), 0.3 s building the model, loading the weights and folding its BatchNorms, and under 0.1 s
on the image and the search (``bench/cli_startup.py`` prints the breakdown). The folded model
for one tap, traced once, loads with torch alone: the first run makes the file, every later run
skips timm.

A cache file is named by what makes the features (backbone, weights sha256, preprocessing, tap)
and holds the backbone's config beside the graph; it is only used where that provenance is asked
for, on the CPU with the torch runtime (a GPU or an exported runtime takes the usual path). A
file that cannot be read is ignored and written again. ``EMBEDSVC_CACHE`` moves the folder
(default ``~/.cache/embedsvc``, ``runtimes/cache.py``); ``EMBEDSVC_CACHE=off`` turns it off.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .backbones.config import BackboneConfig, PreprocessConfig
from .versions import written_by

log = logging.getLogger("embedsvc.traced")
FORMAT = 1


@contextlib.contextmanager
def _quiet():
    """torch 2.14 marks TorchScript deprecated on every call; it still loads with torch alone,
    which is the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _path(provenance: dict[str, Any]) -> Path | None:
    from .runtimes.cache import cache_base, caches_off

    if caches_off():
        return None
    root = cache_base()
    key = json.dumps([FORMAT, torch.__version__, provenance.get("backbone"),
                      provenance.get("weights_sha256"), provenance.get("preprocess"),
                      provenance.get("tap")], sort_keys=True)
    return root / "traced" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"


class TracedBackbone:
    """What ``FeatureExtractor`` reads of a backbone (its config and name), without the model."""

    def __init__(self, cfg: BackboneConfig):
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.cfg.name


class TracedNet(nn.Module):
    """A traced graph for one tap, behind the ``forward_taps`` the extractor calls."""

    def __init__(self, graph: torch.jit.ScriptModule, tap: str):
        super().__init__()
        self.graph, self.tap = graph, tap

    def forward_taps(self, x: torch.Tensor, taps) -> dict[str, torch.Tensor]:
        if list(taps) != [self.tap]:
            raise KeyError(f"this cached model computes tap {self.tap!r} only")
        return {self.tap: self.graph(x)}


class _OneTap(nn.Module):
    def __init__(self, net: nn.Module, tap: str):
        super().__init__()
        self.net, self.tap = net, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_taps(x, [self.tap])[self.tap]


def load(provenance: dict[str, Any]) -> tuple[TracedBackbone, TracedNet, Any] | None:
    """(backbone, net, transform or None) from the cache; None when absent or unusable."""
    path = _path(provenance)
    if path is None or not path.is_file():
        return None
    try:
        extra = {"cfg.json": ""}
        with _quiet():
            graph = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra["cfg.json"])
        meta.pop("written_by", None)
        fast_plan = meta.pop("fast_plan", None)
        cfg = BackboneConfig(**{**meta, "preprocess": PreprocessConfig.from_dict(meta["preprocess"]),
                                "taps": tuple(meta["taps"])})
    except Exception as exc:  # noqa: BLE001 - a damaged cache file costs one rebuild, no more
        log.warning("ignoring the cached model %s: %s", path, exc)
        return None
    if cfg.weights_sha256 != provenance.get("weights_sha256"):
        return None
    transform = None
    if fast_plan and (provenance.get("decode") or "exact") == "fast":
        from .preprocess import Transform

        transform = Transform(cfg.preprocess, "fast", fast_plan)
    return TracedBackbone(cfg), TracedNet(graph.eval(), provenance["tap"]), transform


def save(provenance: dict[str, Any], cfg: BackboneConfig, net: nn.Module, transform) -> None:
    """Trace ``net`` (a folded eval copy) for the provenance's tap and keep it; never fails the
    caller (a read-only home only means no cache)."""
    path = _path(provenance)
    if path is None:
        return
    try:
        x = torch.zeros(1, *cfg.preprocess.input_size)
        with torch.inference_mode(False), torch.no_grad(), _quiet():
            graph = torch.jit.trace(_OneTap(net, provenance["tap"]).eval(), x, check_trace=False)
        meta = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__ if f != "extra"}
        meta["preprocess"], meta["taps"] = cfg.preprocess.to_dict(), list(cfg.taps)
        meta["fast_plan"] = transform.fast_plan
        meta["written_by"] = written_by()
        buf = io.BytesIO()
        with _quiet():
            torch.jit.save(graph, buf, _extra_files={"cfg.json": json.dumps(meta)})
        atomic_write_bytes(path, buf.getvalue())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not cache the traced model in %s: %s", path, exc)
