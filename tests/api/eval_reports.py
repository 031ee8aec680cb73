"""A real `coe eval` report folder for the dashboard's tests (a helper, not a conftest: each test
module that needs it declares a `reports_dir` fixture calling `write_reports`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.embedder import Embedder, HashingEmbedder
from training.fitting import run_eval
from training.importing import import_dataset
from training.loaders import LoadOptions

FIX = Path(__file__).parent.parent / "training" / "fixtures"


def write_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`REPORTS/llmrouter/report.json`, written by `coe eval`'s own code on the LLMRouter
    fixture (three routers plus the best-single and oracle references). The torch-free hashing
    embedder keeps it to a second."""

    def hashing(cache_dir: Path | None = None, name: str | None = None) -> Embedder:
        return HashingEmbedder(dim=32, cache_dir=cache_dir)

    monkeypatch.setattr("training.embed.load_embedder", hashing)
    data = tmp_path / "data"
    import_dataset("llmrouter", [FIX / "llmrouter"], data, LoadOptions())
    reports = tmp_path / "reports"
    train = data / "train.parquet"
    run_eval(train, train, ["category", "mf", "cheapest"], reports / "llmrouter", 0, None)
    return reports
