"""What a request brings to an encoder: inputs that are images (encoded bytes) or texts, each with
the client's id, and the checks each kind gets before any model time is spent.

Both transports turn their messages into ``Input``s (the proto's ``Input``, its older ``Image``,
HTTP's strings and typed images); the core sees nothing else. An input's modality is which of
its fields is set: that decides the encoder a request defaults to, and a request mixing both
kinds, or bringing one kind to an encoder of the other, is refused naming the first misfit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..collection.metadata import MAX_TEXT_ID_BYTES, valid_text
from ..errors import InvalidInputError
from ..images import open_image
from .config import ServeConfig


@dataclass(frozen=True)
class Input:
    id: str
    image: bytes | None = None
    text: str | None = None

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "text"

    @property
    def content(self) -> bytes | str:
        return self.image if self.image is not None else self.text


def modality_of_inputs(inputs: Sequence[Input], what: str = "inputs") -> str:
    """The one modality of a request's inputs (images if it has none)."""
    if not inputs:
        return "image"
    first = inputs[0].modality
    for n, it in enumerate(inputs):
        if it.modality != first:
            raise InvalidInputError(f"{what} mix images and texts (#{n} {it.id!r} is "
                                    f"{'an image' if it.modality == 'image' else 'a text'}); "
                                    f"send each kind in a request of its own")
    return first


def check_fit(inputs: Sequence[Input], encoder_modality: str, encoder: str) -> None:
    """Refuse inputs of another kind than ``encoder`` embeds."""
    for n, it in enumerate(inputs):
        if it.modality != encoder_modality:
            raise InvalidInputError(f"model {encoder!r} embeds {encoder_modality}s; input #{n} "
                                    f"({it.id!r}) is {'an image' if it.modality == 'image' else 'a text'}")


def check_count(n: int, modality: str, config: ServeConfig, what: str | None = None) -> None:
    limit = (config.max_texts_per_request if modality == "text"
             else config.max_images_per_request)
    noun = what or f"{modality}s"
    if n == 0:
        raise InvalidInputError(f"the request has no {noun}")
    if n > limit:
        raise InvalidInputError(f"{n} {noun} in one request; the limit is {limit} "
                                f"(max_{modality}s_per_request)")


def check_inputs(inputs: Sequence[Input], config: ServeConfig) -> None:
    """Ids, then each kind's own limits, before any decoding or tokenising: an image's bytes
    and decoded pixels (from its header), a text's characters."""
    pixels = 0
    for n, it in enumerate(inputs):
        valid_text(it.id, f"the id of input #{n}", MAX_TEXT_ID_BYTES)
        if it.text is not None:
            if len(it.text) > config.max_chars_per_text:
                raise InvalidInputError(f"text {it.id!r} has {len(it.text)} characters; the "
                                        f"limit is {config.max_chars_per_text} (max_chars_per_text)")
            valid_text(it.text, f"text #{n} ({it.id!r})", 4 * config.max_chars_per_text)
            continue
        if len(it.image) > config.max_bytes_per_image:
            raise InvalidInputError(f"image {it.id!r} is {len(it.image)} bytes; the limit is "
                                    f"{config.max_bytes_per_image}")
        w, h = open_image(it.image, it.id, config.max_pixels_per_image).size
        pixels += w * h
    if pixels > config.max_pixels_per_request:
        raise InvalidInputError(f"the request's images hold {pixels} pixels; the limit per "
                                f"request is {config.max_pixels_per_request}")


def check_tokens(costs: Sequence[int], config: ServeConfig) -> None:
    total = sum(costs)
    if total > config.max_tokens_per_request:
        raise InvalidInputError(f"the request's texts hold {total} tokens (after truncation); the "
                                f"limit is {config.max_tokens_per_request} (max_tokens_per_request)")
