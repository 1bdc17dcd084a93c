"""Embedding stores: sharded vectors + metadata + a manifest that binds them to a backbone."""
from ..lazy import lazy_exports

__all__ = ["EmbedDatasetConfig", "EmbedReport", "EmbeddingStore", "StoreLock", "StoreLockedError",
           "embed_dataset", "embed_dataset_ray"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "EmbedDatasetConfig": "embed_job", "EmbedReport": "embed_job", "embed_dataset": "embed_job",
    "embed_dataset_ray": "ray_engine",
    "EmbeddingStore": "store", "StoreLock": "store", "StoreLockedError": "store"})
