"""Dataset sources (class folders, flat folders, manifests, tar shards, parquet, ``datasets``
folders) and offline dataset writers."""
from .container_sources import Columns
from .containers import read_input_bytes
from .sources import Record, scan_source

__all__ = ["Columns", "Record", "read_input_bytes", "scan_source"]
