"""A text encoder as stages: prepare (tokenise, truncate) → collate (pad to the longest, mask) →
encode (the transformer, pooled at a tap) → finish (normalise, provenance).

The same stages, with the same names, as the image extractor's (``extract.FeatureExtractor``),
so that ``embed-dataset``, the server's batcher and the CLI treat both alike
(``embedsvc/encoders.py``). Tokenisation uses the folder's fast tokenizer directly
(``tokenizers``), with its saved padding and truncation replaced: batches are padded to their
longest input only (dynamic padding) and inputs are cut at the encoder's ``max_length``, each
cut counted. Inputs are stripped of surrounding whitespace, as sentence-transformers does, so
the vectors are the ones ``SentenceTransformer(folder).encode`` gives (tests/test_text.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..datasets.containers import read_input_bytes
from ..embeddings import Embeddings, l2_normalize
from ..errors import InvalidInputError
from ..provenance import Provenance
from .folder import FINAL_TAP, TextEncoderConfig
from .model import load_model, load_tokenizer, pad_batch, pool
from .packing import Packed, pack, pool_packed, use_segment_attention


@dataclass(frozen=True)
class Tokens:
    ids: tuple[int, ...]
    truncated: bool  # the text was longer than max_length tokens and was cut

    @property
    def cost(self) -> int:
        """What this input costs a batch: its tokens (a batch is bounded by their sum)."""
        return len(self.ids)


class TextEncoder:
    modality = "text"
    default_tap = FINAL_TAP
    row_keys = ("text", "truncated")  # what a store's row says of a text
    unit = "text"
    SORT_WINDOW = 16  # batches sorted by length together when a dataset is embedded

    def __init__(self, cfg: TextEncoderConfig, device: str = "auto", tap: str = FINAL_TAP,
                 normalize: bool = True, batch_size: int = 32, runtime: str = "torch"):
        import torch
        from ..runtime import plan_device
        from ..runtimes import check_runtime

        if tap not in cfg.taps:
            raise InvalidInputError(f"text encoder {cfg.name!r} has no tap {tap!r}; "
                                    f"its taps: {', '.join(cfg.taps)}")
        self.cfg, self.tap, self.normalize, self.batch_size = cfg, tap, normalize, batch_size
        self.runtime = check_runtime(runtime, self.modality)
        # exported graphs run on the CPU: "auto" means the CPU for them, even beside a GPU
        self.plan = plan_device("cpu" if runtime != "torch" and device == "auto" else device)
        if runtime != "torch" and self.plan.device.type != "cpu":
            raise InvalidInputError(f"runtime {runtime!r} runs on the CPU; on "
                                    f"{self.plan.device} use runtime 'torch'")
        self.tokenizer, self.pad_id = load_tokenizer(cfg)
        self._torch = torch
        self._runners: dict[str, object] = {}  # tap → exported graph runner (runtime != torch)
        if runtime != "torch":
            self.model, self.packs_inputs = None, False  # padded batches: what the graph takes
            self._runners[tap] = self._load_runner(tap)  # refused here, not at the first text
        else:
            model = load_model(cfg)
            self.model = model.to(self.plan.device)
            # BERT's positions are plain 0..n-1, so packed texts keep their own (models that
            # offset them, as RoBERTa does, are served padded); segment attention stands in
            # for SDPA's
            self.packs_inputs = (model.config.model_type == "bert"
                                 and getattr(model.config, "_attn_implementation", None) == "sdpa")
            if self.packs_inputs:
                use_segment_attention(self.model)
        self.provenance = self.provenance_for(tap, normalize)

    def _load_runner(self, tap: str):
        from ..runtimes.runners import load_runner

        return load_runner(self, tap, self.runtime, self._torch.get_num_threads())

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def taps(self) -> tuple[str, ...]:
        return self.cfg.taps

    def binding(self) -> dict:
        """What a collection of this encoder's vectors is bound to (unit final embeddings)."""
        return self.provenance_for(FINAL_TAP, True)

    def provenance_for(self, tap: str, normalized: bool, dim: int | None = None) -> dict:
        return Provenance.of_encoder(self.cfg.provenance(tap), tap, normalized,
                                     runtime=self.runtime).to_dict()

    # -- stages ----------------------------------------------------------------------------
    def prepare(self, text: str, name: str | None = None) -> Tokens:
        return self.prepare_many([text])[0]

    def prepare_input(self, text: str, name: str | None = None, decoded=None) -> Tokens:
        """The batcher's unit (every encoder answers this call; ``decoded`` is for images)."""
        return self.prepare(text, name)

    def prepare_many(self, texts: Sequence[str]) -> list[Tokens]:
        """``prepare`` for many texts at once (the tokenizer's own threads)."""
        for n, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"text input #{n} must be a string, got {type(t).__name__}")
        return [Tokens(tuple(e.ids), bool(e.overflowing))
                for e in self.tokenizer.encode_batch([t.strip() for t in texts])]

    def collate(self, items: Sequence[Tokens]):
        """(input_ids, attention_mask), padded to the longest of ``items``."""
        return pad_batch(self._torch, [t.ids for t in items], self.pad_id, self.plan.device)

    def collate_packed(self, items: Sequence[Tokens]) -> Packed:
        """``items`` end to end, with no padding (``packing.pack``), so a batch of mixed lengths
        costs its tokens, not its longest text times its size. Only for encoders that
        ``packs_inputs``."""
        return pack(self._torch, [t.ids for t in items], self.plan.device)

    def encode(self, batch, tap: str | None = None) -> np.ndarray:
        """Pooled, un-normalised features of a collated (or packed) batch at ``tap`` (float32
        rows, one per input)."""
        tap = tap or self.tap
        if tap not in self.cfg.taps:
            raise InvalidInputError(f"text encoder {self.name!r} has no tap {tap!r}; "
                                    f"its taps: {', '.join(self.cfg.taps)}")
        torch = self._torch
        if self.runtime != "torch":
            if tap not in self._runners:
                self._runners[tap] = self._load_runner(tap)
            ids, mask = batch
            return self._runners[tap](ids.cpu().numpy(), mask.cpu().numpy()).astype(
                np.float32, copy=False)
        packed = isinstance(batch, Packed)
        ids, mask = (batch.ids, None) if packed else batch
        along = dict(position_ids=batch.positions, segment_lengths=batch.lengths) if packed else {}
        with torch.inference_mode(), self.plan.autocast():
            out = self.model(input_ids=ids, attention_mask=mask,
                             token_type_ids=torch.zeros_like(ids),
                             output_hidden_states=tap != FINAL_TAP, **along)
            hidden = out.last_hidden_state if tap == FINAL_TAP else \
                out.hidden_states[int(tap.removeprefix("block"))]
            pooled = (pool_packed(torch, hidden.float(), batch, self.cfg.pooling) if packed
                      else pool(hidden.float(), mask, self.cfg.pooling))
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def finish(self, ids: Sequence[str], rows: Sequence[np.ndarray], tap: str,
               normalized: bool, truncated: Iterable[str] = ()) -> Embeddings:
        """Raw rows (from batches shared by several requests) → one request's answer."""
        vectors = np.stack(rows).astype(np.float32) if len(rows) else \
            np.zeros((0, self.cfg.dim), np.float32)
        if normalized:
            vectors = l2_normalize(vectors)
        return Embeddings(vectors, tuple(ids), self.provenance_for(tap, normalized),
                          truncated=tuple(truncated))

    @staticmethod
    def cost(tokens: Tokens) -> int:
        return tokens.cost

    @staticmethod
    def notes(tokens: Tokens) -> tuple[int, bool]:
        """(tokens, truncated) of a prepared text (a response's usage and truncation)."""
        return tokens.cost, tokens.truncated

    def dataset_batches(self, infos: list[dict]):
        """(infos, vectors) per batch of dataset records (``Record.to_dict()``), in input order;
        a record whose text cannot be read has an ``error`` and no vector. Each window of
        ``SORT_WINDOW`` batches is embedded in length-sorted batches (less padding), then handed
        back batch by batch in input order, so commits and resumes see the usual batches."""
        batch_size = self.batch_size
        window = batch_size * self.SORT_WINDOW
        for lo in range(0, len(infos), window):
            chunk = [read_text_record(info) for info in infos[lo:lo + window]]
            good = [n for n, info in enumerate(chunk) if "error" not in info]
            tokens = self.prepare_many([chunk[n]["text"] for n in good])
            vectors = self.encode_sorted(tokens, batch_size=batch_size)
            if self.normalize:
                vectors = l2_normalize(vectors)
            row_of = {n: k for k, n in enumerate(good)}
            for n, t in zip(good, tokens):
                chunk[n]["truncated"] = t.truncated
            for b in range(0, len(chunk), batch_size):
                part = range(b, min(b + batch_size, len(chunk)))
                yield [chunk[n] for n in part], vectors[[row_of[n] for n in part if n in row_of]]

    # -- a dataset on another engine (store/ray_engine.py): read in CPU tasks, embedded apart --
    @property
    def dataset_window(self) -> int:
        """Records per unit of work: the window ``dataset_batches`` sorts by length, so the
        batches, and the vectors, are those of a local run."""
        return self.batch_size * self.SORT_WINDOW

    def dataset_reader(self) -> Callable[[list[dict]], tuple[list[dict], bytes]]:
        """A picklable function, run where the records are read: records → their rows with
        their texts (nothing else to carry)."""
        return read_text_batch

    def embed_read(self, infos: list[dict], payload: bytes) -> list[tuple[list[dict], np.ndarray]]:
        """What ``dataset_reader`` made → (infos, vectors as configured) per batch."""
        return list(self.dataset_batches(infos))

    # -- all stages --------------------------------------------------------------------------
    def encode_sorted(self, tokens: Sequence[Tokens], tap: str | None = None,
                      batch_size: int | None = None) -> np.ndarray:
        """Raw rows in the order of ``tokens``, computed in batches of similar lengths: a batch
        is padded to its longest text, so sorting by length first spares most of the padding's
        work (the mask makes the vectors the same either way)."""
        size = batch_size or self.batch_size
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i].ids))
        rows = np.zeros((len(tokens), self.cfg.dim), np.float32)
        for lo in range(0, len(order), size):
            take = order[lo:lo + size]
            rows[take] = self.encode(self.collate([tokens[i] for i in take]), tap)
        return rows

    def embed(self, texts: Sequence[str], ids: Sequence[str] | None = None,
              tap: str | None = None, batch_size: int | None = None,
              progress: bool = False, skip_bad: bool = False) -> Embeddings:
        """Vectors in the order of ``texts`` (see ``encode_sorted``), normalised as configured.
        (``progress``, ``skip_bad``: the image extractor's options; every string embeds.)"""
        texts = list(texts)
        names = list(ids) if ids is not None else [f"#{n}" for n in range(len(texts))]
        if len(names) != len(texts):
            raise InvalidInputError(f"got {len(texts)} texts but {len(names)} ids")
        tap = tap or self.tap
        tokens = self.prepare_many(texts)
        rows = self.encode_sorted(tokens, tap, batch_size)
        return self.finish(names, list(rows), tap, self.normalize,
                           [n for n, t in zip(names, tokens) if t.truncated])


def read_text_record(info: dict) -> dict:
    """A dataset record with its ``text`` (its own cell, or its ``.txt`` file read as UTF-8) and
    the text's sha256 (what ``--dedup`` compares), or with an ``error``. Never raises."""
    info = dict(info)
    if info.get("text") is None:
        try:
            info["text"] = read_input_bytes(info["path"]).decode("utf-8")
        except OSError as exc:
            info["error"] = f"cannot read file ({exc.strerror or exc})"
            return info
        except UnicodeDecodeError as exc:
            info["error"] = f"not UTF-8 text (byte {exc.start})"
            return info
    info["sha256"] = hashlib.sha256(info["text"].encode("utf-8", "surrogatepass")).hexdigest()
    return info


def read_text_batch(infos: list[dict]) -> tuple[list[dict], bytes]:
    return [read_text_record(info) for info in infos], b""

