"""`coe serve` embeds queries with the embedder the router artifact was trained with.

`COE_EMBEDDER` unset: the artifact's; set to another: refused at start, naming the setting;
an artifact from before coe recorded it: the setting (default minilm) and a warning. The
registry's embedders are hashing doubles, so no model loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.settings import Settings
from experts.live import LivePool
from experts.testing import FakeExpert, FakeNetwork
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.embedder import (
    EMBEDDERS,
    Embedder,
    EmbedderMismatchError,
    EmbedderRecord,
    HashingEmbedder,
)
from tests.conftest import POOL, write_pool
from training.fitting import fit_router

pytestmark = pytest.mark.asyncio

NAMES = [str(e["name"]) for e in POOL["experts"]]


@pytest.fixture(autouse=True)
def _fake_embedders(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(model_id: str) -> Callable[[Path | None, Path | None], Embedder]:
        def make(cache_dir: Path | None, model_dir: Path | None) -> Embedder:
            embedder = HashingEmbedder(dim=16)
            embedder.model_id = model_id
            return embedder

        return make

    for name in EMBEDDERS:
        monkeypatch.setitem(EMBEDDERS, name, fake(f"fake-{name}"))


def _artifact(tmp_path: Path, recorded: EmbedderRecord | None, family: str = "knn") -> Path:
    experts = [ExpertDescriptor(name, 1.0, 1.0) for name in NAMES]
    n = 12
    rng = np.random.default_rng(0)
    data = RoutingData(
        query_ids=[str(i) for i in range(n)],
        prompts=[f"question {i}" for i in range(n)],
        tasks=["t"] * n,
        models=[e.name for e in experts],
        scores=rng.random((n, len(experts))),
        costs=np.full((n, len(experts)), 1e-4),
        experts=experts,
    )
    x = HashingEmbedder(dim=16).embed(data.prompts)
    router = fit_router(family, data, x, {"k": 3} if family == "knn" else {}, seed=0)
    router.embedder_ = recorded
    path = tmp_path / f"{family}.pkl"
    router.save(path)
    return path


def _app(tmp_path: Path, artifact: Path, **settings: Any) -> FastAPI:
    fakes = {name: FakeExpert(name) for name in NAMES}
    config = Settings(
        pool=write_pool(tmp_path / "pool.yaml", POOL),
        work_dir=tmp_path / "work",
        router_artifact=artifact,
        _env_file=None,  # type: ignore[call-arg]
        **settings,
    )
    return create_app(config, transport=FakeNetwork(fakes))


INT8 = EmbedderRecord("minilm-onnx-int8", "fake-minilm-onnx-int8")


@pytest.mark.parametrize("setting", [None, "minilm-onnx-int8"])
async def test_unset_or_the_same_embeds_with_the_artifacts_embedder(
    tmp_path: Path, setting: str | None
) -> None:
    app = _app(tmp_path, _artifact(tmp_path, INT8), embedder=setting, cache="semantic")
    async with app.router.lifespan_context(app):
        routing = app.state.routing
        assert routing.embedder_name == "minilm-onnx-int8"
        assert routing.embedder.embedder.model_id == "fake-minilm-onnx-int8"
        assert app.state.cache.embedder is routing.embedder  # the cache follows the same choice


async def test_another_embedder_than_the_artifacts_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start(self: LivePool) -> None:
        raise AssertionError("the pool started before the embedder was checked")

    monkeypatch.setattr(LivePool, "start", start)
    app = _app(tmp_path, _artifact(tmp_path, INT8), embedder="minilm")
    with pytest.raises(EmbedderMismatchError) as refused:
        async with app.router.lifespan_context(app):
            pass
    message = str(refused.value)
    assert "COE_EMBEDDER is 'minilm'" in message and "'minilm-onnx-int8'" in message
    assert "unset COE_EMBEDDER" in message and "retrain" in message


async def test_a_recorded_model_the_embedder_no_longer_is_refused(tmp_path: Path) -> None:
    stale = EmbedderRecord("minilm-onnx-int8", "an-older-export")
    app = _app(tmp_path, _artifact(tmp_path, stale))
    with pytest.raises(EmbedderMismatchError, match=r"an-older-export.*retrain"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize(("setting", "used"), [(None, "minilm"), ("minilm-onnx", "minilm-onnx")])
async def test_an_artifact_without_a_record_uses_the_setting_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, setting: str | None, used: str
) -> None:
    app = _app(tmp_path, _artifact(tmp_path, None), embedder=setting)
    with caplog.at_level(logging.WARNING, logger="coe.api"):
        async with app.router.lifespan_context(app):
            assert app.state.routing.embedder_name == used
            assert app.state.routing.embedder.embedder.model_id == f"fake-{used}"
    warnings = [r for r in caplog.records if "does not record the embedder" in r.getMessage()]
    assert len(warnings) == 1 and repr(used) in warnings[0].getMessage()


async def test_a_router_without_embeddings_has_no_warning_and_the_cache_uses_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = _artifact(tmp_path, None, family="best_single")
    app = _app(tmp_path, artifact, embedder="minilm-onnx", cache="semantic")
    with caplog.at_level(logging.WARNING, logger="coe.api"):
        async with app.router.lifespan_context(app):
            assert app.state.routing.embedder is None
            assert app.state.cache.embedder.embedder.model_id == "fake-minilm-onnx"
    assert not [r for r in caplog.records if "does not record" in r.getMessage()]
