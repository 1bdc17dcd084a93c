"""The projections a server applies when a request asks for ``dimensions``: those of the
projected stores listed in serve.toml's ``projections``, loaded at start. One per encoder and
dimension count, so a request's model and dimensions name exactly one; its vectors are then
what ``search`` on that store compares its queries with, and what ``embed --projection STORE``
prints."""
from __future__ import annotations

from typing import Any, Mapping

from ..embeddings import Embeddings
from ..errors import InvalidInputError
from ..projection import Projection, project_embeddings, source_provenance
from ..provenance import BINDING_KEYS


def _key(provenance: Mapping[str, Any]) -> tuple:
    """What must match between a request's vectors and a projection's source vectors."""
    return tuple(str(provenance.get(k)) for k in BINDING_KEYS if k not in ("dim", "projection"))


class Projections:
    def __init__(self, stores: list[str]):
        from ..store import EmbeddingStore

        self.by_key: dict[tuple, dict[int, tuple[Projection, dict, str]]] = {}
        for path in stores:
            store = EmbeddingStore.open(path)
            projection = store.projection()
            if projection is None:
                raise InvalidInputError(f"projections: {path!r} is not a projected store "
                                        f"(make one with 'embedsvc project')")
            source = source_provenance(store.provenance)
            dims = self.by_key.setdefault((_key(source), source["dim"]), {})
            if projection.dim in dims:
                raise InvalidInputError(f"projections: {path!r} and {dims[projection.dim][2]!r} both "
                                        f"project {source['backbone']} to {projection.dim} "
                                        f"dimensions; list one")
            dims[projection.dim] = (projection, dict(store.provenance), path)

    def find(self, source: Mapping[str, Any], dimensions: int) -> tuple[Projection, dict]:
        """The projection of vectors made as ``source`` says to ``dimensions``, and the
        provenance of what it makes."""
        have = int(source["dim"])
        # looked up as the normalised vectors a projection takes; raw ones are then refused
        dims = self.by_key.get((_key({**source, "normalized": True}), have), {})
        if dimensions not in dims:
            offered = ", ".join(str(d) for d in sorted(dims)) or "none"
            raise InvalidInputError(f"dimensions is {dimensions}; {source.get('backbone')} "
                                    f"gives {have}-d vectors, and this server projects them to: "
                                    f"{offered} (projected stores in serve.toml's 'projections')")
        projection, provenance, _ = dims[dimensions]
        return projection, dict(provenance)

    def apply(self, emb: Embeddings, dimensions: int) -> Embeddings:
        """``emb`` with ``dimensions`` dimensions: itself when it has them, else projected."""
        if dimensions == emb.vectors.shape[1]:
            return emb
        projection, provenance = self.find({**emb.provenance, "dim": emb.vectors.shape[1]},
                                           dimensions)
        return project_embeddings(emb, projection, provenance)
