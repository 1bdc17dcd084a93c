"""Dataset sources (class folders, flat folders, manifests) and offline dataset writers."""
from .sources import Record, scan_source

__all__ = ["Record", "scan_source"]
