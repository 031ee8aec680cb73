"""`benchmarks/chain_subjects.py` on the two-topic pool: per subject, the chain asks the cheap
pair where its agreement is reliable and the strong expert where it is not, on new queries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.router.chain_pools import topic_pool


def test_per_subject_chains_beat_one_chain_on_test() -> None:
    path = Path(__file__).parents[2] / "benchmarks" / "chain_subjects.py"
    spec = importlib.util.spec_from_file_location("chain_subjects", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (train, _), (test, _) = topic_pool(600, 7), topic_pool(300, 8)
    result = bench.evaluate(train, test)
    row = {r["share"]: r for r in result["rows"]}[0.85]
    assert "regions" in row and row["test_accuracy"] > 0.97 and row["test_share"] <= 0.9
    assert result["points"]["match"] is not None
