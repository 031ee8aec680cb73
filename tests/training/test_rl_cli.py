"""`coe train --router rl --cost-weight λ` on the LLMRouter fixture (hashing embedder: seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from router import Router
from router.embedder import Embedder, HashingEmbedder
from router.rl import RLRouter
from training.cli import app

FIX = Path(__file__).parent / "fixtures"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _fake_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(cache_dir: Path | None = None, name: str | None = None) -> Embedder:
        return HashingEmbedder(dim=32, cache_dir=cache_dir)

    monkeypatch.setattr("training.embed.load_embedder", fake)


def test_train_rl_with_cost_weight_writes_artifact_checkpoints_and_curve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["data", "import", str(FIX / "llmrouter"), "--format", "llmrouter", "--out", str(data)]
    assert runner.invoke(app, args).exit_code == 0
    out = tmp_path / "rl.pkl"
    params = '{"iterations": 4, "batch_size": 8, "checkpoint_every": 2, "progress": false, '
    params += '"descriptor_embedder": "hashing"}'
    train = ["train", "--train", str(data / "train.parquet"), "--out", str(out),
             "--embed-cache", str(tmp_path / "cache"), "--params", params]  # fmt: skip
    result = runner.invoke(app, [*train, "--router", "rl", "--cost-weight", "0.25"])
    assert result.exit_code == 0, result.output
    router = Router.load(out)
    assert isinstance(router, RLRouter) and router.cost_weight == 0.25
    run = tmp_path / "rl_run"
    assert sorted(p.name for p in run.glob("checkpoint_*.npz")) == [
        "checkpoint_00002.npz",
        "checkpoint_00004.npz",
    ]
    assert (run / "learning_curve.png").stat().st_size > 0
    assert all(e.descriptor for e in router.experts_)  # from llm_candidates.json "feature"
    refused = runner.invoke(app, [*train[:-2], "--router", "knn", "--cost-weight", "0.25"])
    assert refused.exit_code == 2 and "--cost-weight applies to" in refused.output
