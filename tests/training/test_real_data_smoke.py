"""A few hundred real LLMRouter rows through import → fit → evaluate (skipped without the data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.embedder import HashingEmbedder
from training.dataset import to_routing_data
from training.evaluate import evaluate_router, reference_results
from training.fitting import fit_router
from training.loaders import LOADERS, LoadOptions

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llmrouter"


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/llmrouter is not here")
def test_llmrouter_smoke() -> None:
    splits = LOADERS["llmrouter"]([DATA], LoadOptions())
    assert splits["test"]["query_id"].nunique() == 381  # the 119 shared questions are gone
    train = to_routing_data(splits["train"])
    keep = np.random.default_rng(0).permutation(len(train))[:300]
    sub = train.take(keep)
    test = to_routing_data(splits["test"], models=sub.models)
    embedder = HashingEmbedder(dim=64)
    x_train, x_test = embedder.embed(sub.prompts), embedder.embed(test.prompts)
    scale = float(sub.costs.max(axis=1).mean())
    refs = reference_results(test, scale)
    assert refs["best_single"].metrics["acc_at_best_single_cost"] == pytest.approx(0.597, abs=1e-3)
    assert refs["oracle"].metrics["acc_at_best_single_cost"] == pytest.approx(0.750, abs=1e-3)
    router = fit_router("category", sub, x_train, {}, seed=0)
    result = evaluate_router(router, x_test, test, scale)
    assert 0.0 < result.metrics["aiq"] <= 1.0
