"""Nearest training queries by cosine similarity, over vectors small enough to stay in cache.

A neighbour router compares each query with every training vector. 5,608 MiniLM vectors
(384 float32) are 8.6 MB: more than the L3 of a small VM, so each query streamed them from
memory (~200 ns a row, against ~50 ns while they fit; measured, README "Performance"). A
`Projection` keeps the leading `dims` right singular vectors of the training embeddings
(uncentred, so inner products are approximated directly: `q · x ≈ (q V) · (x V)`, exact when
`dims` is the full width) and the router keeps the training vectors in that basis (64 dims:
1.4 MB). How many dims keep the neighbours, and the routing, is a cross-validation question on
the training file (`benchmarks/knn_projection.py`).

Example::

    projection = Projection.fit(train_embeddings, dims=64)
    reduced = projection.apply(train_embeddings)          # (n, 64) float32
    similarity = projection.apply(query_embeddings) @ reduced.T
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Projection", "reduce", "share_projections", "similarity"]


class Projection:
    """`x ↦ x @ components` (`(width, dims)` float32), fitted on training embeddings.

    The last input and its image are remembered (by value): the members of an ensemble that
    share one projection (`share_projections`) are scored one after another on the same rows,
    and the rows are projected once.
    """

    def __init__(self, components: np.ndarray) -> None:
        self.components = np.ascontiguousarray(components, dtype=np.float32)
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def fit(cls, embeddings: np.ndarray, dims: int) -> Projection:
        """The `dims` leading right singular vectors of `embeddings` (rows: training queries)."""
        x = np.asarray(embeddings, dtype=np.float64)
        if not 1 <= dims <= x.shape[1]:
            raise ValueError(f"dims must be in 1..{x.shape[1]}, got {dims}")
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        return cls(vt[:dims].T)

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """`(n, dims)` float32, C-contiguous."""
        x = np.asarray(embeddings, dtype=np.float32)
        last = self._last
        if last is not None and last[0].shape == x.shape and np.array_equal(last[0], x):
            return last[1]
        out = np.ascontiguousarray(x @ self.components)
        out.flags.writeable = False
        self._last = (x.copy(), out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"components": self.components}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["components"])  # type: ignore[misc]


def share_projections(routers: list[Any]) -> None:
    """Make routers fitted on the same embeddings with the same `dims` use one `Projection`
    and one copy of the reduced training vectors (`projection_`, `reduced_`): one artifact
    copy, one set of rows in cache, one projection per query."""
    first: dict[tuple[int, bytes], Any] = {}
    for router in routers:
        projection = getattr(router, "projection_", None)
        if projection is None:
            continue
        key = (projection.dims, projection.components.tobytes())
        if key in first and np.array_equal(first[key].reduced_, router.reduced_):
            router.projection_, router.reduced_ = first[key].projection_, first[key].reduced_
        else:
            first.setdefault(key, router)


def reduce(embeddings: np.ndarray, dims: int | None) -> tuple[Projection | None, np.ndarray | None]:
    """`(projection, reduced training vectors)` for `dims`, or `(None, None)` when `dims` is
    None (the full-width float32 product)."""
    if dims is None:
        return None, None
    projection = Projection.fit(embeddings, min(dims, embeddings.shape[1]))
    # not `apply`: its memo would keep a copy of the whole training matrix
    reduced = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32) @ projection.components)
    return projection, reduced


def similarity(
    embeddings: np.ndarray,
    full: np.ndarray,
    projection: Projection | None,
    reduced: np.ndarray | None,
) -> np.ndarray:
    """`(n, len(full))` inner products of the query rows with the training vectors, in the
    reduced basis when the router has one (artifacts written before it have none)."""
    if projection is None or reduced is None:
        return np.asarray(np.asarray(embeddings, dtype=np.float32) @ full.T)
    return np.asarray(projection.apply(embeddings) @ reduced.T)
