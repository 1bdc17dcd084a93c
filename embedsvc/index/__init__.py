"""FAISS indexes over embedding stores: cosine similarity through inner product."""
from ..lazy import lazy_exports

__all__ = ["IndexPlan", "plan_index", "VectorIndex", "build_index"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "IndexPlan": "planner", "plan_index": "planner", "VectorIndex": "vector_index",
    "build_index": "vector_index"})
