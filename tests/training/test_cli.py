"""`coe data import` → `coe train` → `coe eval` → `coe calibrate` end to end, on fixtures.

The embedder is the torch-free `HashingEmbedder`, so these run in a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router import Router
from router.data import RoutingData
from router.embedder import Embedder, HashingEmbedder
from training.cli import app

FIX = Path(__file__).parent / "fixtures"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _fake_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(cache_dir: Path | None = None, name: str | None = None) -> Embedder:
        return HashingEmbedder(dim=32, cache_dir=cache_dir)

    monkeypatch.setattr("training.embed.load_embedder", fake)


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_import_train_eval_calibrate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = _ok(
        ["data", "import", str(FIX / "llmrouter"), "--format", "llmrouter", "--out", str(data)]
    )
    assert "train.parquet" in out and "test.parquet" in out
    cache = ["--embed-cache", str(tmp_path / "cache")]
    artifact = tmp_path / "knn.pkl"
    _ok(
        [
            "train",
            "--train",
            str(data / "train.parquet"),
            "--router",
            "knn",
            "--params",
            '{"k": 2}',
            "--out",
            str(artifact),
            *cache,
        ]
    )
    router = Router.load(artifact)
    assert router.models_ == ["big", "small"]

    report_dir = tmp_path / "report"
    table = _ok(
        [
            "eval",
            "--train",
            str(data / "train.parquet"),
            "--test",
            str(data / "train.parquet"),
            "--routers",
            "category,mf,cheapest",
            "--out",
            str(report_dir),
            *cache,
        ]
    )
    assert "| category |" in table and "ESTIMATED" in table
    report = json.loads((report_dir / "report.json").read_text())
    assert report["dataset"]["costs_estimated"] is True
    assert set(report["routers"]) == {"category", "mf", "cheapest", "best_single", "oracle"}
    for entry in report["routers"].values():
        assert {
            "aiq",
            "apgr",
            "cpt50",
            "cpt80",
            "arena_score",
            "acc_at_best_single_cost",
            "cost_share_to_match_best_single",
            "curve",
            "per_task",
        } <= set(entry)
        assert all(len(point) == 3 for point in entry["curve"])
    assert report["routers"]["oracle"]["acc_at_best_single_cost"] == pytest.approx(2.5 / 3)
    assert (report_dir / "curves.png").stat().st_size > 1000
    assert (report_dir / "per_task.png").stat().st_size > 1000

    cal = _ok(
        [
            "calibrate",
            "--router",
            str(artifact),
            "--data",
            str(data / "train.parquet"),
            "--quality-share",
            "0.5",
            *cache,
        ]
    )
    assert json.loads(cal)["quality_share_of_strongest"] >= 0.5


def test_split_import_and_errors(tmp_path: Path) -> None:
    out = _ok(
        [
            "data",
            "import",
            str(FIX / "routerbench.csv"),
            "--format",
            "routerbench",
            "--out",
            str(tmp_path),
            "--test-fraction",
            "0.5",
            "--seed",
            "1",
        ]
    )
    assert "2 queries" in out
    bad = runner.invoke(
        app,
        [
            "data",
            "import",
            str(FIX / "long_duplicate.jsonl"),
            "--format",
            "long",
            "--out",
            str(tmp_path),
        ],
    )
    assert bad.exit_code == 2 and "duplicate" in bad.output and "row 5" in bad.output
    unknown = runner.invoke(
        app,
        [
            "train",
            "--train",
            str(tmp_path / "train.parquet"),
            "--router",
            "nope",
            "--out",
            str(tmp_path / "x.pkl"),
        ],
    )
    assert unknown.exit_code == 2 and "choose from" in unknown.output


def test_cli_import_is_cheap() -> None:
    code = (
        "import sys, training.cli, router\n"
        "bad = {'torch', 'sklearn', 'pandas'} & set(sys.modules)\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _canonical(data: RoutingData, path: Path) -> Path:
    import pandas as pd

    rows = [
        {
            "query_id": data.query_ids[i],
            "prompt": data.prompts[i],
            "task": data.tasks[i],
            "model": m,
            "score": float(data.scores[i, j]),
            "cost_usd": float(data.costs[i, j]),
            "input_price": data.experts[j].input_price,
            "output_price": data.experts[j].output_price,
        }
        for i in range(len(data))
        for j, m in enumerate(data.models)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_train_base_add_onboards_a_new_expert(tmp_path: Path) -> None:
    from tests.router.pools import OLD, only, pool

    full, _ = pool(200, seed=0)
    train = _canonical(only(full, OLD), tmp_path / "train.parquet")
    profile, _ = pool(60, seed=4)
    add = _canonical(only(profile, ("newbie",)), tmp_path / "new.parquet")
    cache = ["--embed-cache", str(tmp_path / "cache")]
    base, grown = tmp_path / "base.pkl", tmp_path / "grown.pkl"
    _ok(["train", "--train", str(train), "--router", "cluster", "--out", str(base), *cache])
    out = _ok(["train", "--base", str(base), "--add", str(add), "--out", str(grown), *cache])
    assert "4 experts" in out
    assert Router.load(grown).models_ == [*OLD, "newbie"]
    knn = tmp_path / "knn.pkl"
    _ok(["train", "--train", str(train), "--router", "knn", "--out", str(knn), *cache])
    refused = runner.invoke(app, ["train", "--base", str(knn), "--add", str(add), "--out", "x"])
    assert refused.exit_code == 2 and "cluster" in refused.output


def test_train_auto_prints_the_cv_table_and_saves_the_winner(tmp_path: Path) -> None:
    from tests.router.pools import OLD, only, pool

    full, _ = pool(120, seed=0)
    train = _canonical(only(full, OLD), tmp_path / "train.parquet")
    artifact = tmp_path / "auto.pkl"
    params = '{"candidates": [["best_single", {}], ["knn", {"k": 10}]], "folds": 2}'
    cache = ["--embed-cache", str(tmp_path / "cache")]
    args = ["train", "--train", str(train), "--router", "auto", "--params", params]
    out = _ok([*args, "--out", str(artifact), *cache])
    assert "chosen by 2-fold CV" in out and "← chosen" in out
    router = Router.load(artifact)
    assert router.selection_ is not None and router.name == router.selection_["router"]
