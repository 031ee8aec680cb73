"""The lexical stand-in for sentence embeddings that benchmarks can use (`lexical_embeddings`)."""

from __future__ import annotations

import numpy as np

from training.embed import lexical_embeddings


def test_lexical_embeddings_are_unit_vectors_learned_from_the_fitting_texts_only() -> None:
    fit = [f"algebra equation number {i}" for i in range(20)] + [
        f"court law contract {i}" for i in range(20)
    ]
    x, y = lexical_embeddings(fit, ["an equation in algebra", "a contract in court"], dims=4)
    assert x.shape == (40, 4) and y.shape == (2, 4) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # each new text lands nearest the fitting texts of its topic
    assert (x[:20] @ y[0]).mean() > (x[20:] @ y[0]).mean()
    assert (x[20:] @ y[1]).mean() > (x[:20] @ y[1]).mean()
    # what the fitting texts never saw maps to the zero vector, not to NaN
    (_, unseen) = lexical_embeddings(fit, ["zzz"], dims=4)
    assert np.isfinite(unseen).all()
