"""The one extraction path: images → (N, D) float32 vectors with provenance.

bytes / paths / PIL images → ``prepare`` (decode with ``images``, then the geometry of the
backbone's own preprocessing, to a uint8 tensor) → batch → ``embed_tensor`` (normalise on the
device, forward under ``torch.inference_mode``, pooled features of the requested tap) →
``finish`` (optional L2 normalisation, provenance). The CLI, ``embed-dataset``, the server's
batcher and fine-tuning all go through these functions; a faster decoder or another runtime is a
change here and nowhere else.
"""
from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones.base import PRE_LOGITS, Backbone
from .backbones.fuse import folded_copy
from .decode_ahead import decoded_batches
from .embeddings import Embeddings, l2_normalize
from .provenance import Provenance, check_weights
from .datasets.containers import read_input_bytes
from .errors import ImageDecodeError, InvalidInputError
from .images import DEFAULT_MAX_PIXELS, ImageSource, describe, load_upright
from .backbones.config import DEFAULT_DECODE, check_decode
from .preprocess import Transform, build_transform, normalize
from .runtime import DevicePlan, plan_device
from .runtimes import DEFAULT_RUNTIME, check_runtime


@dataclass(frozen=True)
class ExtractConfig:
    batch_size: int = 32
    normalize: bool = True
    tap: str = PRE_LOGITS
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA, off on CPU
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode: str = DEFAULT_DECODE  # preprocess.DECODE_MODES
    workers: int | None = None  # decode threads ahead of the model; None: decode_ahead decides
    runtime: str = DEFAULT_RUNTIME  # runtimes.RUNTIMES

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        check_decode(self.decode)
        check_runtime(self.runtime)
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise InvalidInputError(f"workers must be an integer >= 0, got {self.workers!r}")


class FeatureExtractor:
    """Runs one backbone; reusable across calls (the model is moved to its device once). Its
    stages have the names every encoder answers to (``embedsvc/encoders.py``): ``prepare`` one
    input, ``collate`` prepared inputs into a batch, ``encode`` a batch into raw rows at a tap,
    ``finish`` rows into one request's ``Embeddings``."""

    modality = "image"
    default_tap = PRE_LOGITS
    row_keys = ("width", "height")  # what a store's row says of an image beyond its file
    unit = "img"
    packs_inputs = False  # a batch of images is one stacked tensor

    def __init__(self, backbone: Backbone, config: ExtractConfig = ExtractConfig(),
                 net: torch.nn.Module | None = None, transform: Transform | None = None):
        """``net``, ``transform``: the inference model and the transform already made (from a
        cached trace, ``traced.py``), in place of a folded copy of ``backbone`` and the
        transform its config builds."""
        if config.tap not in backbone.cfg.taps:
            raise InvalidInputError(
                f"backbone {backbone.name!r} has no layer tap {config.tap!r}; "
                f"available: {', '.join(backbone.cfg.taps)}"
            )
        self.backbone = backbone
        self.config = config
        # exported runtimes run on the CPU: "auto" means the CPU for them, even beside a GPU
        device = "cpu" if config.runtime != "torch" and config.device == "auto" else config.device
        self.plan: DevicePlan = plan_device(device, config.amp)
        self._runners: dict[str, object] = {}  # tap → exported graph runner (runtime != torch)
        if config.runtime != "torch":
            if self.plan.device.type != "cpu":
                raise InvalidInputError(f"runtime {config.runtime!r} runs on the CPU; on "
                                        f"{self.plan.device} use runtime 'torch'")
            self._runners[config.tap] = self._load_runner(config.tap)  # refused here, not later
        else:
            # an inference-only copy (BatchNorm folded, on the device, in its memory format):
            # the caller's backbone stays as it was, trainable and on its own device
            self.net = (net if net is not None else
                        folded_copy(backbone, backbone.cfg.preprocess.input_size)).to(self.plan.device)
            if self.plan.channels_last:
                self.net.to(memory_format=torch.channels_last)
        self.transform = transform or build_transform(backbone.cfg.preprocess, config.decode)
        self.provenance = self.provenance_for(config.tap, config.normalize)
        if config.tap != PRE_LOGITS:
            self.provenance["dim"] = None  # filled on the first batch (depends on the stage)

    def provenance_for(self, tap: str, normalized: bool, dim: int | None = None) -> dict:
        return Provenance.of_encoder(
            self.backbone.cfg.provenance(), tap, normalized, decode=self.config.decode,
            runtime=self.config.runtime, **({"dim": dim} if dim is not None else {})).to_dict()

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def taps(self) -> tuple[str, ...]:
        return self.backbone.cfg.taps

    def binding(self) -> dict:
        """What a collection of this backbone's vectors is bound to (unit pre-logits)."""
        return self.provenance_for(PRE_LOGITS, True, self.backbone.cfg.dim)

    def _load_runner(self, tap: str):
        from .runtimes.runners import load_runner

        return load_runner(self.backbone, tap, self.config.runtime, torch.get_num_threads())

    # -- one image ---------------------------------------------------------------------------
    def prepare(self, src: ImageSource, name: str | None = None,
                decoded: Callable[[Image.Image], None] | None = None,
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Decode and resize/crop one image: the model's uint8 (3, H, W) input and the upright
        image's (width, height). ``decoded`` sees the decoded image first (a server renders
        its thumbnail from the same decode)."""
        return prepare_image(src, self.transform, name, self.config.max_pixels, decoded)

    def prepare_input(self, data: ImageSource, name: str | None = None,
                      decoded: Callable[[Image.Image], None] | None = None) -> torch.Tensor:
        """The batcher's unit: ``prepare``'s tensor (every encoder answers this call)."""
        return self.prepare(data, name, decoded)[0]

    # -- tensors -----------------------------------------------------------------------------
    def embed_tensor(self, batch: torch.Tensor, tap: str | None = None,
                     normalize_output: bool | None = None) -> np.ndarray:
        """A (N, 3, H, W) batch from ``self.transform`` (uint8, normalised here on the device)
        or already normalised (float) → (N, D) float32. ``tap`` / ``normalize_output`` override
        the config for this call (the server batches one model for several kinds of request)."""
        tap = self.config.tap if tap is None else tap
        l2 = self.config.normalize if normalize_output is None else normalize_output
        n = len(batch)
        if self.plan.device.type == "cuda":
            batch = pad_batch(batch)
            if not batch.is_cuda:
                # page-locked, so the copy below runs asynchronously (uint8: a quarter of the bytes)
                batch = batch.pin_memory()
        x = normalize(batch.to(self.plan.device, non_blocking=True), self.backbone.cfg.preprocess)
        if self.config.runtime != "torch":
            if tap not in self._runners:
                self._runners[tap] = self._load_runner(tap)
            out = self._runners[tap](x.numpy()).astype(np.float32, copy=False)
        else:
            if self.plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), self.plan.autocast():
                feats = self.net.forward_taps(x, [tap])[tap]
            out = feats.float().cpu().numpy().astype(np.float32, copy=False)
        out = out[:n]
        if l2:
            out = l2_normalize(out)
        if self.provenance["dim"] is None and tap == self.config.tap:
            self.provenance["dim"] = int(out.shape[1])
        return out

    @staticmethod
    def collate(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(tensors))

    @staticmethod
    def cost(tensor: torch.Tensor) -> int:
        """What one input costs a batch (the batcher's budget): every image the same."""
        return 1

    @staticmethod
    def notes(tensor: torch.Tensor) -> tuple[int, bool]:
        """(tokens, truncated) of a prepared input, as text encoders report them."""
        return 0, False

    def encode(self, batch: torch.Tensor, tap: str | None = None) -> np.ndarray:
        """Raw (un-normalised) rows of a collated batch at ``tap``."""
        return self.embed_tensor(batch, tap=tap, normalize_output=False)

    def dataset_batches(self, infos: list[dict]):
        """(infos, vectors as configured) per batch of dataset records (``Record.to_dict()``),
        in input order; a record that cannot be read or decoded has an ``error`` and no vector.
        Decoding runs ahead of the model (``decode_ahead``)."""
        c = self.config
        loader = decoded_batches(lambda i: read_image_record(infos[i], self.transform, c.max_pixels),
                                 len(infos), c.batch_size, c.workers, self.plan.device.type)
        dim = self.provenance["dim"] or self.backbone.cfg.dim
        for items in loader:
            tensors = [tensor for _, (tensor, _) in items if tensor is not None]
            vectors = (self.embed_tensor(torch.stack(tensors)) if tensors
                       else np.zeros((0, dim), np.float32))
            yield [info for _, (_, info) in items], vectors

    # -- a dataset on another engine (store/ray_engine.py): read in CPU tasks, embedded apart --
    @property
    def dataset_window(self) -> int:
        """Records per unit of work: one batch."""
        return self.config.batch_size

    def dataset_reader(self) -> Callable[[list[dict]], tuple[list[dict], bytes]]:
        """A picklable function, run where the records are read: records → their rows and the
        decodable images' model inputs (uint8, stacked, as .npy bytes)."""
        return functools.partial(read_image_batch, preprocess=self.backbone.cfg.preprocess,
                                 decode=self.config.decode, max_pixels=self.config.max_pixels)

    def embed_read(self, infos: list[dict], payload: bytes) -> list[tuple[list[dict], np.ndarray]]:
        """What ``dataset_reader`` made → (infos, vectors as configured) per batch."""
        x = np.load(io.BytesIO(payload), allow_pickle=False)
        dim = self.provenance["dim"] or self.backbone.cfg.dim
        return [(infos, self.embed_tensor(torch.from_numpy(x)) if len(x)
                 else np.zeros((0, dim), np.float32))]

    def warm_up(self, max_batch: int, tap: str | None = None) -> None:
        """Run every batch shape ``embed_tensor`` can meet up to ``max_batch`` once, so that no
        request pays for cuDNN's first run of a shape (a server calls this at load on CUDA)."""
        size = 1
        while True:
            self.embed_tensor(torch.zeros((size, *self.backbone.cfg.preprocess.input_size),
                                          dtype=torch.uint8), tap)
            if size >= max_batch:
                return
            size *= 2

    def finish(self, ids: Sequence[str], rows: Sequence[np.ndarray], tap: str,
               normalized: bool) -> Embeddings:
        """Raw feature rows (from batches shared by several requests) → one request's answer."""
        vectors = np.stack(rows).astype(np.float32)
        if normalized:
            vectors = l2_normalize(vectors)
        return Embeddings(vectors, tuple(ids),
                          self.provenance_for(tap, normalized, int(vectors.shape[1])))

    # -- images ------------------------------------------------------------------------------
    def embed(self, images: Iterable[ImageSource], ids: Sequence[str] | None = None,
              skip_bad: bool = False, progress: bool = False) -> Embeddings:
        """Embed images in batches. A bad image raises ImageDecodeError naming it, or with
        ``skip_bad`` is listed in ``Embeddings.skipped`` and the rest are embedded."""
        images = list(images)
        names = list(ids) if ids is not None else [describe(img) for img in images]
        if len(names) != len(images):
            raise InvalidInputError(f"got {len(images)} images but {len(names)} ids")
        kept: list[str] = []
        skipped: list[tuple[str, str]] = []
        chunks: list[np.ndarray] = []

        from tqdm import tqdm

        # batches decoded a few ahead, so memory stays flat however many images there are
        batches = decoded_batches(
            lambda i: prepared_or_error(images[i], self.transform, names[i], self.config.max_pixels),
            len(images), self.config.batch_size, self.config.workers, self.plan.device.type)
        try:
            with tqdm(total=len(images), unit="img", desc=self.backbone.name, disable=not progress) as bar:
                for items in batches:
                    tensors = []
                    for i, item in items:
                        if isinstance(item, ImageDecodeError):
                            if not skip_bad:
                                raise item  # in input order, in the caller's thread
                            skipped.append((names[i], item.reason))
                        else:
                            tensors.append(item)
                            kept.append(names[i])
                    bar.update(len(items))
                    if tensors:
                        chunks.append(self.embed_tensor(torch.stack(tensors)))
        finally:
            batches.close()  # joins the decode threads
        dim = self.provenance["dim"] or self.backbone.cfg.dim
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
        return Embeddings(vectors, tuple(kept), dict(self.provenance), tuple(skipped))


def padded_size(n: int) -> int:
    """The batch size a batch of ``n`` runs at on CUDA: the next power of two. cuDNN builds
    kernels for each new input shape on its first run (measured on an H200 with effnet-lite0:
    1.6 s for the first batch of each size, 5 ms after), and a dynamic batcher forms every size
    from 1 to its maximum; padded, it meets log2(max) + 1 shapes, each built once."""
    return 1 << (n - 1).bit_length()


def pad_batch(batch: torch.Tensor) -> torch.Tensor:
    """``batch`` with zero images appended up to ``padded_size``. Inference treats each row on
    its own (eval-mode BatchNorm, no cross-row state), so the padding changes no real row."""
    extra = padded_size(len(batch)) - len(batch)
    if extra == 0:
        return batch
    return torch.cat([batch, batch.new_zeros((extra, *batch.shape[1:]))])


def prepare_image(src: ImageSource, transform: Transform, name: str | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS,
                  decoded: Callable[[Image.Image], None] | None = None,
                  ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode ``src`` (at the scale ``transform`` allows) and apply ``transform``: the model's
    uint8 input and the upright image's full (width, height). Any failure of either step is an
    ImageDecodeError naming the item. ``decoded(image)`` is called with the decoded image."""
    item = name or describe(src)
    img, size = load_upright(src, item, max_pixels, transform.draft_to)
    if decoded is not None:
        decoded(img)
    try:
        return transform(img), size
    except MemoryError:
        raise ImageDecodeError(item, "not enough memory to resize it") from None
    except Exception as exc:  # noqa: BLE001 - a resize failure is this image's problem only
        raise ImageDecodeError(item, f"cannot resize ({type(exc).__name__}: {exc})") from None


def read_image_record(info: dict[str, Any], transform: Transform,
                  max_pixels: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """Read, hash, decode and preprocess one record (``Record.to_dict()``): the model's input
    and the record's row, or None and the row with an ``error``. Never raises on bad input.
    Both engines decode here, so a store made on Ray holds the rows a local run writes."""
    info = dict(info)
    try:
        data = read_input_bytes(info["path"])
    except OSError as exc:
        info["error"] = f"cannot read file ({exc.strerror or exc})"
        return None, info
    info["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        tensor, (info["width"], info["height"]) = prepare_image(data, transform, info["path"],
                                                                max_pixels)
        return tensor, info
    except ImageDecodeError as exc:
        info["error"] = exc.reason
        return None, info


def prepared_or_error(src: ImageSource, transform: Transform, name: str | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor | ImageDecodeError:
    """``prepare_image``'s tensor, or its error returned rather than raised: decode threads hand
    bad images back to the caller, which reports them in input order."""
    try:
        return prepare_image(src, transform, name, max_pixels)[0]
    except ImageDecodeError as exc:
        return exc


def extractor_for(provenance: dict, device: str = "auto") -> FeatureExtractor:
    """A FeatureExtractor that makes features exactly as ``provenance`` describes (a store's or a
    head's): same backbone, checked by weights hash, same tap, normalisation and decode mode
    (provenances from before decode modes were made with ``exact``)."""
    from . import traced
    from .backbones import create_backbone

    config = ExtractConfig(
        tap=provenance["tap"], normalize=provenance["normalized"], device=device,
        decode=provenance.get("decode") or "exact", runtime=provenance.get("runtime") or "torch")
    on_cpu = config.runtime == "torch" and plan_device(device, config.amp).device.type == "cpu"
    if on_cpu and (cached := traced.load(provenance)) is not None:  # no timm to import
        backbone, net, transform = cached
        return FeatureExtractor(backbone, config, net=net, transform=transform)
    backbone = create_backbone(provenance["backbone"])
    check_weights(backbone.cfg, provenance, "features")
    fe = FeatureExtractor(backbone, config)
    if on_cpu:
        traced.save(provenance, backbone.cfg, fe.net, fe.transform)
    return fe


def read_image_batch(infos: list[dict], preprocess, decode: str,
                     max_pixels: int) -> tuple[list[dict], bytes]:
    """``FeatureExtractor.dataset_reader``'s work: every record read (``read_image_record``),
    the decoded ones' inputs stacked as .npy bytes."""
    transform = build_transform(preprocess, decode)
    decoded = [read_image_record(info, transform, max_pixels) for info in infos]
    tensors = [t.numpy() for t, _ in decoded if t is not None]
    buf = io.BytesIO()
    np.save(buf, np.stack(tensors) if tensors else np.zeros((0, 3, 1, 1), np.uint8))
    return [info for _, info in decoded], buf.getvalue()
