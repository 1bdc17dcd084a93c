"""FAISS indexes over embedding stores: cosine similarity through inner product."""
from .planner import IndexPlan, plan_index
from .vector_index import VectorIndex, build_index

__all__ = ["IndexPlan", "plan_index", "VectorIndex", "build_index"]
