"""`coe train` records the embedder that made a router's training vectors in its artifact.

The registry's embedders are replaced by hashing doubles of their own model ids, so `coe train`
goes through the real `load_embedder` (which names the embedder) without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from router import Router
from router.embedder import EMBEDDERS, Embedder, EmbedderRecord, HashingEmbedder
from tests.router.pools import OLD, only, pool
from tests.training.test_cli import _canonical
from training.cli import app
from training.fitting import fit_router

runner = CliRunner()


class Fake(HashingEmbedder):
    """A hashing embedder standing in for a registered one; records each text it embeds."""

    def __init__(self, model_id: str, cache_dir: Path | None, seen: list[str]) -> None:
        super().__init__(dim=16, cache_dir=cache_dir)
        self.model_id = model_id
        self.seen = seen

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(f"{self.model_id}:{t}" for t in texts)
        return super().embed_batch(texts)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    texts: list[str] = []

    def fake(model_id: str) -> Callable[[Path | None, Path | None], Embedder]:
        return lambda cache_dir, _model_dir: Fake(model_id, cache_dir, texts)

    for name in EMBEDDERS:
        monkeypatch.setitem(EMBEDDERS, name, fake(f"fake-{name}"))
    monkeypatch.delenv("COE_EMBEDDER", raising=False)
    return texts


def _train(tmp_path: Path, family: str, out: Path) -> None:
    full, _ = pool(90, seed=0)
    train = _canonical(only(full, OLD), tmp_path / "train.parquet")
    args = ["train", "--train", str(train), "--router", family, "--out", str(out)]
    result = runner.invoke(app, [*args, "--embed-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output


def test_train_records_the_default_embedder(tmp_path: Path, seen: list[str]) -> None:
    _train(tmp_path, "knn", tmp_path / "knn.pkl")
    assert Router.load(tmp_path / "knn.pkl").embedder_ == EmbedderRecord("minilm", "fake-minilm")


def test_train_records_the_embedder_coe_embedder_names(
    tmp_path: Path, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COE_EMBEDDER", "minilm-onnx-int8")
    _train(tmp_path, "cluster", tmp_path / "cluster.pkl")
    recorded = Router.load(tmp_path / "cluster.pkl").embedder_
    assert recorded == EmbedderRecord("minilm-onnx-int8", "fake-minilm-onnx-int8")
    assert seen and all(t.startswith("fake-minilm-onnx-int8:") for t in seen)


def test_a_router_that_reads_no_embedding_records_none(tmp_path: Path, seen: list[str]) -> None:
    _train(tmp_path, "best_single", tmp_path / "best.pkl")
    assert Router.load(tmp_path / "best.pkl").embedder_ is None
    assert not seen  # nothing was embedded


def test_an_artifact_without_a_record_loads_with_none(tmp_path: Path) -> None:
    data, x = pool(60, seed=0)
    fit_router("knn", data, x, {"k": 3}, seed=0).save(tmp_path / "old.pkl")  # not `coe train`
    assert Router.load(tmp_path / "old.pkl").embedder_ is None


def _onboard(tmp_path: Path, base: Path) -> tuple[Path, list[str]]:
    profile, _ = pool(30, seed=4)
    add = _canonical(only(profile, ("newbie",)), tmp_path / "new.parquet")
    grown = tmp_path / "grown.pkl"
    args = ["train", "--base", str(base), "--add", str(add), "--out", str(grown)]
    return grown, [*args, "--embed-cache", str(tmp_path / "cache-add")]  # embeds anew


def test_onboarding_embeds_with_the_bases_embedder_and_keeps_its_record(
    tmp_path: Path, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COE_EMBEDDER", "minilm-onnx-int8")
    _train(tmp_path, "cluster", tmp_path / "base.pkl")
    monkeypatch.delenv("COE_EMBEDDER")  # unset: the base's own embedder
    seen.clear()
    grown, args = _onboard(tmp_path, tmp_path / "base.pkl")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen and all(t.startswith("fake-minilm-onnx-int8:") for t in seen)
    recorded = Router.load(grown).embedder_
    assert recorded == EmbedderRecord("minilm-onnx-int8", "fake-minilm-onnx-int8")


def test_onboarding_refuses_another_coe_embedder(
    tmp_path: Path, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _train(tmp_path, "cluster", tmp_path / "base.pkl")  # minilm
    monkeypatch.setenv("COE_EMBEDDER", "minilm-onnx")
    grown, args = _onboard(tmp_path, tmp_path / "base.pkl")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "COE_EMBEDDER is 'minilm-onnx'" in result.output and "'minilm'" in result.output
    assert not grown.exists()


def test_calibrate_embeds_with_the_artifacts_embedder(
    tmp_path: Path, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COE_EMBEDDER", "minilm-onnx-int8")
    _train(tmp_path, "knn", tmp_path / "knn.pkl")
    args = ["calibrate", "--router", str(tmp_path / "knn.pkl"), "--cost-share", "0.5"]
    args += ["--data", str(tmp_path / "train.parquet"), "--embed-cache", str(tmp_path / "c2")]
    monkeypatch.delenv("COE_EMBEDDER")
    seen.clear()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen and all(t.startswith("fake-minilm-onnx-int8:") for t in seen)
    monkeypatch.setenv("COE_EMBEDDER", "minilm")
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "COE_EMBEDDER is 'minilm'" in refused.output


def test_onboarding_refuses_a_recorded_model_the_embedder_no_longer_is(
    tmp_path: Path, seen: list[str]
) -> None:
    _train(tmp_path, "cluster", tmp_path / "base.pkl")
    base = Router.load(tmp_path / "base.pkl")
    base.embedder_ = EmbedderRecord("minilm", "an-older-model")
    base.save(tmp_path / "base.pkl")
    _, args = _onboard(tmp_path, tmp_path / "base.pkl")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "an-older-model" in result.output
