"""Embedding stores: sharded vectors + metadata + a manifest that binds them to a backbone."""
from .embed_job import EmbedDatasetConfig, EmbedReport, embed_dataset
from .store import EmbeddingStore, StoreLock, StoreLockedError

__all__ = ["EmbedDatasetConfig", "EmbedReport", "EmbeddingStore", "StoreLock",
           "StoreLockedError", "embed_dataset"]
