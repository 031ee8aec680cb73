"""`coe profile --from-training`: a new expert profiled on queries of a router's own training
file (real HTTP calls to fake experts, graded by coe's graders), then `coe train --base --add`
onboarding it by `cf` (the profiled queries are queries the router remembers)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from experts.testing import FakeExpert, FakeNetwork
from router import Router
from router.cluster import ClusterRouter
from router.embedder import HashingEmbedder
from tests.conftest import write_pool
from training.benchsets import training_questions
from training.cli import app
from training.dataset import read_dataset, to_routing_data, write_dataset
from training.embed import embed_prompts
from training.errors import CoeTrainingError, DataError
from training.profile_cli import run_profile

OPTIONS = "\n\n(A) one\n(B) two\n(C) three\n(D) four"


def _prompt(topic: str, i: int) -> str:
    words = {
        "alpha": "apples oranges sum count arithmetic",
        "beta": "rivers mountains capital map geography",
    }[topic]
    return f"{topic} {words} question {i}?{OPTIONS}"


def training_file(path: Path, n: int = 240, gold_column: bool = True) -> Path:
    """Two incumbents on two topics: `cheap` right on alpha only, `dear` on a third of all."""
    rows = []
    for i in range(n):
        topic = "alpha" if i % 2 == 0 else "beta"
        for model, price in (("cheap", 1.0), ("dear", 10.0)):
            right = topic == "alpha" if model == "cheap" else i % 3 == 0
            rows.append(
                {
                    "query_id": f"q{i}",
                    "prompt": _prompt(topic, i),
                    "task": topic,
                    "model": model,
                    "score": float(right),
                    "cost_usd": price * 1e-4,
                    "answer": "B" if right else "C",
                    **({"gold": "B"} if gold_column else {}),
                    "input_price": price,
                    "output_price": price,
                }
            )
    return write_dataset(pd.DataFrame(rows), path)


class Geographer(FakeExpert):
    """Right (B) on every beta question, wrong (C) on alpha ones."""

    async def _chat(self, request: Any) -> Any:
        body = await request.json()
        self.enqueue("The answer is (B)" if "beta" in body["messages"][-1]["content"] else "(C)")
        return await super()._chat(request)


def newcomer_pool(tmp_path: Path) -> Path:
    expert = {"name": "geo", "engine": "openai", "base_url": "http://geo/v1", "input_price": 2.0,
              "output_price": 2.0, "max_concurrency": 4}  # fmt: skip
    return write_pool(tmp_path / "pool.yaml", {"experts": [expert]})


def test_training_questions_keep_the_files_ids_and_prompts_and_grade_by_its_gold(
    tmp_path: Path,
) -> None:
    path = training_file(tmp_path / "train.parquet", n=40)
    drawn = training_questions(path, 10, seed=3)
    assert drawn.candidates == 40 and drawn.no_gold == 0 and drawn.gold_from == "gold column"
    assert len(drawn.questions) == 10
    assert drawn.questions == training_questions(path, 10, seed=3).questions  # seeded
    assert drawn.questions != training_questions(path, 10, seed=4).questions
    frame = read_dataset(path).drop_duplicates("query_id").set_index("query_id")
    for q in drawn.questions:
        assert q.router_prompt == frame.at[q.query_id, "prompt"] and q.bench == frame.at[
            q.query_id, "task"]  # fmt: skip
        assert q.prompt.startswith(q.router_prompt) and "The answer is (X)" in q.prompt
        assert (q.kind, q.gold, q.extra["letters"]) == ("choice", "B", "ABCD")


def test_without_a_gold_column_the_gold_is_a_right_answer_and_ungradable_queries_are_not_drawn(
    tmp_path: Path,
) -> None:
    path = training_file(tmp_path / "train.parquet", n=40, gold_column=False)
    drawn = training_questions(path, 100, seed=0)
    # beta queries with i % 3 != 0: nobody was right, so their gold is unknown
    unknown = sum(1 for i in range(40) if i % 2 == 1 and i % 3 != 0)
    assert drawn.no_gold == unknown and drawn.candidates == 40 - unknown
    assert drawn.gold_from == "answers of rows that scored 1"
    assert {q.gold for q in drawn.questions} == {"B"} and len(drawn.questions) == 40 - unknown
    frame = read_dataset(path).drop(columns=["answer"])
    write_dataset(frame, tmp_path / "bare.parquet")
    with pytest.raises(DataError, match="neither a 'gold' column"):
        training_questions(tmp_path / "bare.parquet", 10)


@pytest.mark.parametrize(
    ("gold", "kind", "reply", "score"),
    [
        ("1,250", "number", "so 1250 in all. The answer is 1250", 1.0),
        ("\\frac{1}{2}", "math", "It is \\boxed{0.5}", 1.0),
        ("(1,2)", "math", "\\boxed{(1, 3)}", 0.0),
    ],
)
async def test_numbers_and_math_answers_are_graded_by_their_own_graders(
    tmp_path: Path, gold: str, kind: str, reply: str, score: float
) -> None:
    from training.grading import grade

    rows = [{"query_id": "m1", "prompt": "Compute it.", "task": "math", "model": "a",
             "score": 1.0, "cost_usd": 1e-4, "gold": gold}]  # fmt: skip
    path = write_dataset(pd.DataFrame(rows), tmp_path / "t.parquet")
    (question,) = training_questions(path, 1).questions
    assert question.kind == kind
    assert await grade(question, reply) == score


async def test_profile_from_training_writes_the_training_queries_graded(tmp_path: Path) -> None:
    path = training_file(tmp_path / "train.parquet", n=60)
    fake = Geographer("geo")
    result = await run_profile(
        newcomer_pool(tmp_path), [], 20, tmp_path, tmp_path / "out", seed=1,
        work_dir=tmp_path / "work", transport=FakeNetwork({"geo": fake}),
        console=Console(file=io.StringIO()), from_training=path,
    )  # fmt: skip
    assert result.dataset is not None
    profile = read_dataset(result.dataset)
    train = read_dataset(path).drop_duplicates("query_id").set_index("query_id")
    assert len(profile) == 20 and set(profile["model"]) == {"geo"}
    assert set(profile["query_id"]) <= set(train.index)
    for _, row in profile.iterrows():
        assert row["prompt"] == train.at[row["query_id"], "prompt"]  # the router's text
        assert row["score"] == float(row["task"] == "beta")  # graded against the gold
        assert row["gold"] == "B" and row["cost_usd"] > 0
    sent = [r["messages"][-1]["content"] for r in fake.requests]
    assert all(s.endswith("'The answer is (X)'.") for s in sent)  # the instruction is sent


@pytest.mark.parametrize("select", ["random", "doptimal", "doptimal-cf", "half-doptimal"])
async def test_profile_from_training_then_add_onboards_the_newcomer_by_cf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, select: str
) -> None:
    monkeypatch.setattr(
        "training.embed.load_embedder",
        lambda cache_dir=None, name=None: HashingEmbedder(dim=32, cache_dir=cache_dir),
    )
    train_path = training_file(tmp_path / "train.parquet")
    base, grown_path = tmp_path / "base.pkl", tmp_path / "grown.pkl"
    cache = ["--embed-cache", str(tmp_path / "cache")]
    params = '{"n_clusters": 4, "top": 1}'
    args = ["train", "--train", str(train_path), "--router", "cluster", "--params", params]
    done = CliRunner().invoke(app, [*args, "--out", str(base), *cache])
    assert done.exit_code == 0, done.output
    result = await run_profile(
        newcomer_pool(tmp_path), [], 100, tmp_path, tmp_path / "out",
        work_dir=tmp_path / "work", transport=FakeNetwork({"geo": Geographer("geo")}),
        console=Console(file=io.StringIO()), from_training=train_path, select=select, base=base,
    )  # fmt: skip
    assert result.dataset is not None
    if select != "random":  # the router's own design: the same queries on every run
        chosen = Router.load(base).select_training_profile(  # type: ignore[attr-defined]
            *_ids_and_prompts(train_path), 100, select
        )
        assert sorted(read_dataset(result.dataset)["query_id"]) == sorted(
            _ids_and_prompts(train_path)[0][i] for i in chosen
        )
    args = ["train", "--base", str(base), "--add", str(result.dataset), "--out", str(grown_path)]
    done = CliRunner().invoke(app, [*args, *cache])
    assert done.exit_code == 0, done.output
    grown = Router.load(grown_path)
    assert isinstance(grown, ClusterRouter) and grown.models_ == ["cheap", "dear", "geo"]
    # `cf` applied: every profiled query is one the router remembers
    profile = to_routing_data(read_dataset(result.dataset), result.dataset)
    assert (grown._matched_rows(profile) >= 0).all()
    assert grown.train_scores_ is not None and grown.train_scores_.shape == (240, 3)
    data = to_routing_data(read_dataset(train_path), train_path)
    x = embed_prompts(data.prompts, cache_dir=tmp_path / "cache", show_progress=False)
    picks = grown.score(x, data.prompts).argmax(axis=1)
    beta = np.array([t == "beta" for t in data.tasks])
    assert (picks == 2).mean() > 0  # the newcomer's share
    assert (picks[beta] == 2).mean() >= 0.9 and (picks[~beta] == 2).mean() <= 0.1


def _ids_and_prompts(path: Path) -> tuple[list[str], list[str]]:
    first = read_dataset(path).drop_duplicates("query_id")
    return first["query_id"].tolist(), first["prompt"].tolist()


def test_profile_cli_select_needs_the_router(tmp_path: Path) -> None:
    train_path = training_file(tmp_path / "train.parquet", n=20)
    args = ["profile", "--pool", str(newcomer_pool(tmp_path)), "-o", str(tmp_path / "out")]
    done = CliRunner().invoke(
        app, [*args, "--from-training", str(train_path), "--select", "doptimal"]
    )
    assert done.exit_code == 2, done.output
    assert "--select doptimal needs the router: pass --base ROUTER.pkl" in done.output


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "random"),
        (["--base", "r.pkl"], "half-doptimal"),
        (["--base", "r.pkl", "--select", "random"], "random"),
    ],
)
def test_profile_cli_design_defaults_to_half_doptimal_with_a_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], expected: str
) -> None:
    seen: dict[str, object] = {}

    async def fake_run_profile(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise CoeTrainingError("stop here")

    monkeypatch.setattr("training.profile_cli.run_profile", fake_run_profile)
    train_path = training_file(tmp_path / "train.parquet", n=20)
    args = ["profile", "--pool", str(newcomer_pool(tmp_path)), "-o", str(tmp_path / "out")]
    CliRunner().invoke(app, [*args, "--from-training", str(train_path), *extra])
    assert seen["select"] == expected
