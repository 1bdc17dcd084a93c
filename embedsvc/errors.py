"""One exception hierarchy for the core.

The service maps these to gRPC status codes and the CLI to exit codes; nothing in the core knows
about either transport.
"""
from __future__ import annotations


class EmbedsvcError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidInputError(EmbedsvcError, ValueError):
    """The caller sent something unusable (bad image bytes, wrong shape, bad option)."""


class ImageDecodeError(InvalidInputError):
    """An image could not be read; ``item`` names which one."""

    def __init__(self, item: str, reason: str):
        self.item = item
        self.reason = reason
        super().__init__(f"cannot read image {item!r}: {reason}")


class NotFoundError(EmbedsvcError, LookupError):
    """A named thing (backbone, head, index) does not exist."""


class WeightsNotFoundError(NotFoundError):
    """A backbone's weight file is not on this machine. Nothing is downloaded, ever."""

    def __init__(self, backbone: str, expected: list[str], hint: str):
        self.backbone = backbone
        self.expected = list(expected)
        where = f"; looked for: {', '.join(self.expected)}" if self.expected else ""
        super().__init__(f"weights for backbone {backbone!r} not found{where}. {hint}")


class FailedPreconditionError(EmbedsvcError):
    """The request is valid but the thing it needs is not in a usable state (a head that failed
    to load, an artifact written by another library version)."""


class IncompatibleError(FailedPreconditionError):
    """Two artifacts do not belong together (e.g. a head and features of another backbone)."""


class ResourceExhaustedError(EmbedsvcError):
    """A limit was hit (queue full, too many pixels, too many items)."""


class TooLargeError(ResourceExhaustedError):
    """A request larger than a limit lets through at any load: retrying cannot help (HTTP 413)."""


class DeadlineExceededError(EmbedsvcError):
    """The caller's deadline passed before the work was done (queued, or waiting for a model)."""


class UnavailableError(EmbedsvcError):
    """The service is shutting down or the part asked for is being unloaded; retry elsewhere."""


class StoreLockedError(EmbedsvcError):
    """Another process is writing this store (one writer at a time)."""
