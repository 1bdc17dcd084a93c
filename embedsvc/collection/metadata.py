"""The one check of what a client may store as an item's metadata (and of the ids it names),
for gRPC and HTTP alike, and the escaping that keeps rows already on disk readable.

Every read encodes metadata again (JSON, protobuf), and some reads build paths from it (the
thumbnail of an item whose metadata names an image file): a value that cannot be encoded (a
lone surrogate such as ``"\\ud800"``, which JSON carries but UTF-8 cannot), a NUL, or a path
too long for the file system once made every later read of that collection fail. So such text
is refused when written, and rows written before this check are escaped when read.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError

MAX_KEYS = 64
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 4096  # PATH_MAX on Linux: a path value fits
MAX_STORED_TEXT_BYTES = 400_000  # an upserted text kept as its ``text`` (100,000 characters)
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX: a longer component is ENAMETOOLONG on every read
MAX_PATH_DEPTH = 64
MAX_TEXT_ID_BYTES = 256  # an image's id in embed / classify, echoed back


def valid_text(text: Any, what: str, max_bytes: int) -> str:
    """A string that every encoder takes: valid Unicode (no lone surrogate), no NUL."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, got {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} is not valid Unicode (it holds a lone surrogate such "
                                f"as \\ud800): {text[:40]!r}") from None
    if "\x00" in text:
        raise InvalidInputError(f"{what} holds a NUL character: {text[:40]!r}")
    if size > max_bytes:
        raise InvalidInputError(f"{what} is {size} bytes; the limit is {max_bytes}")
    return text


def valid_metadata(metadata: Any, item: str) -> dict[str, str]:
    """``metadata`` of the item named ``item`` (as "#3 (id 7)"), checked; the error names the
    item and the key."""
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"item {item}: metadata must map strings to strings, "
                                f"got {type(metadata).__name__}")
    if len(metadata) > MAX_KEYS:
        raise InvalidInputError(f"item {item}: metadata has {len(metadata)} keys; the limit "
                                f"is {MAX_KEYS}")
    for key, value in metadata.items():
        valid_text(key, f"item {item}: a metadata key", MAX_KEY_BYTES)
        field = f"item {item}: metadata {key!r}"
        valid_text(value, field, MAX_STORED_TEXT_BYTES if key == "text" else MAX_VALUE_BYTES)
        if key == "path":
            parts = value.split("/")
            if len(parts) > MAX_PATH_DEPTH:
                raise InvalidInputError(f"{field} has {len(parts)} components; the limit is "
                                        f"{MAX_PATH_DEPTH}")
            longest = max(len(p.encode()) for p in parts)
            if longest > MAX_PATH_COMPONENT_BYTES:
                raise InvalidInputError(f"{field} has a component of {longest} bytes; the "
                                        f"limit is {MAX_PATH_COMPONENT_BYTES}")
    return dict(metadata)


def readable(metadata: dict) -> dict[str, str]:
    """Metadata as every encoder takes it: text that UTF-8 cannot hold (rows written before
    ``valid_metadata``) gets its lone surrogates as backslash escapes."""
    if all(_encodable(k) and _encodable(v) for k, v in metadata.items()):
        return metadata
    return {_escaped(k): _escaped(v) for k, v in metadata.items()}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
