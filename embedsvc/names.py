"""Names clients give to things the server keeps (heads, indexes, fine-tuned runs).

A name becomes one path component, never a path, and is checked once, where it enters.
"""
from __future__ import annotations

from .errors import InvalidInputError

# Far below the 255 bytes file systems allow, so that every file named after a name (with a
# prefix and a suffix for its temporary copy) fits too.
MAX_NAME_BYTES = 128


def valid_name(name: str, what: str = "name") -> str:
    """A name that is one safe path component: letters, digits, '-', '_', '.', not starting
    with '.', at most MAX_NAME_BYTES bytes."""
    if (not isinstance(name, str) or not name or name.startswith(".")
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)):
        raise InvalidInputError(f"{what} must be letters, digits, '-', '_' or '.' (not starting "
                                f"with '.'), got {str(name)[:80]!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidInputError(f"{what} is {len(name.encode())} bytes long; the limit is "
                                f"{MAX_NAME_BYTES}")
    return name
