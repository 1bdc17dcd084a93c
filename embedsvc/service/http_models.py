"""The HTTP API's request bodies, and its response shapes for the OpenAPI document.

Requests are validated by pydantic (FastAPI) once, here: a wrong type, a missing field or an
unknown one (a misspelt option must not be ignored) is a 400 naming the field. Texts travel as
strings; images as base64 strings, plain or as data URIs (``data:image/png;base64,...``), as JSON
carries proto ``bytes``, always in a typed field (``image``, ``data``), so that a string is
never guessed to be one or the other. Responses are written as plain JSON (vectors are large); the models below describe
them in ``/openapi.json``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageIn(_Body):
    id: str = Field("", description="the client's id, echoed back (default: the position)")
    data: str = Field(description="the encoded image (PNG, JPEG, ...) in base64, or a data URI")


class InputIn(_Body):
    """One input of either kind (the proto's ``Input``): exactly one of ``image`` and ``text``."""
    id: str = Field("", description="the client's id, echoed back (default: the position)")
    image: str | None = Field(None, description="an encoded image in base64, or a data URI ...")
    text: str | None = Field(None, description="... or a text")


class EmbeddingsRequest(_Body):
    """OpenAI's embeddings request: ``input`` strings are texts. Images go as typed inputs,
    ``{"image": "<base64 or data URI>"}``. ``tap`` and ``normalize`` are embedsvc's own."""
    model: str = Field(description="an encoder name (GET /v1/models); '' or 'default': the "
                                   "server's default for the inputs' kind")
    input: str | list[str | InputIn] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="a text, a list of texts, or a list of typed inputs ({'image': base64} or "
                    "{'text': ...}); token-id arrays are refused (the server tokenises)")
    encoding_format: Literal["float", "base64", "int8", "binary"] = Field(
        "float", description=(
            "base64: little-endian float32 bytes (what OpenAI clients ask for); int8: d integers "
            "in [-127, 127], each value times 127 over the vector's largest magnitude (compare "
            "by cosine); binary: d/8 integers in [0, 255], bits set where the value is > 0, "
            "first dimension in the highest bit (compare by Hamming distance; refused for "
            "vectors with no negative value, such as pooled image features: ask for dimensions)"))
    dimensions: int | None = Field(None, ge=1, description=(
        "the encoder's own dimension, or one the server projects it to (the projected stores "
        "in serve.toml's 'projections'; 400 lists them)"))
    user: str | None = Field(None, description="accepted and ignored, as OpenAI clients send it")
    tap: str = Field("", description="'': the encoder's default (pre_logits; embedding); "
                                     "'early', 'middle', 'late' for timm; 'blockN' for text")
    normalize: bool = Field(True, description="false: skip L2 normalisation")


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str


class Usage(BaseModel):
    prompt_tokens: int = Field(0, description="tokens of the texts, after truncation")
    total_tokens: int = 0
    images: int = 0
    texts: int = 0


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: Usage
    provenance: dict
    timing: dict
    truncated: list[int] = Field([], description="positions of texts cut at the encoder's "
                                                 "token limit")


class ClassifyRequest(_Body):
    images: list[ImageIn] = []
    inputs: list[InputIn] = Field([], description="images or texts, after any images")
    head: str = Field("imagenet", description="'imagenet' or a trained head (GET /v1/heads)")
    top_k: int = Field(5, ge=1, le=1000)
    abstain_below: float | None = Field(None, description="'unknown' below this top probability")
    max_ood_score: float | None = Field(None, description="'unknown' above this OOD score")


class SearchRequest(_Body):
    index: str
    image: ImageIn | None = Field(None, description="query by image ...")
    input: InputIn | None = Field(None, description="... by an input of the index's kind "
                                                    "(image or text) ...")
    vector: list[float] | None = Field(None, description="... or by vector (exactly one)")
    k: int = Field(10, ge=1, le=10_000)
    where: dict[str, str] = Field({}, description="metadata filter, e.g. {'label': 'bag'}")


class UpsertItem(_Body):
    id: StrictInt | None = Field(None, ge=0,
                                 description="unset: the server assigns the next free id")
    image: str | None = Field(None, description="base64 image or data URI ...")
    text: str | None = Field(None, description="... a text (kept as the 'text' metadata) ...")
    vector: list[float] | None = Field(None, description="... or a vector (exactly one)")
    metadata: dict[str, str] = {}


class UpsertRequest(_Body):
    items: list[UpsertItem]
    dimensions: int | None = Field(None, ge=1, description=(
        "a new index: its images and texts projected to this many dimensions by one of the "
        "server's projections, which the index keeps; an existing index: its own dimension"))


class DeleteRequest(_Body):
    ids: list[StrictInt] = Field(description="absent ids are ignored; an id named twice "
                                             "counts once")


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="the gRPC status the same error gets, in lower case")
    code: str = Field(description="the gRPC status name, e.g. INVALID_ARGUMENT")


class ErrorResponse(BaseModel):
    error: ErrorDetail
