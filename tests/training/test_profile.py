"""`coe profile` over fake experts: grading, measured costs, resuming, aggregation, and
the output training a router with `coe train` unchanged."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from experts.testing import FakeExpert, FakeNetwork
from router import Router
from router.embedder import HashingEmbedder
from tests.conftest import write_pool
from training.cli import app
from training.dataset import read_dataset
from training.profile_cli import run_profile

GSM = [
    {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
    {"question": "What is 10 - 4?", "answer": "#### 6"},
]
CHOICE = [
    {"question": "Which is even? The options are: (A) 3 (B) 4 (C) 5 (D) 7", "gold_answer": "B"},
]
HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": 'def double(x: int) -> int:\n    """Twice x."""\n',
    "entry_point": "double",
    "canonical_solution": "    return 2 * x\n",
    "test": "\ndef check(candidate):\n    assert candidate(2) == 4\n",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "benchsets"
    (folder / "symbolic_moe").mkdir(parents=True)
    (folder / "gsm8k_test.jsonl").write_text("\n".join(json.dumps(r) for r in GSM))
    (folder / "symbolic_moe" / "GPQA_test.json").write_text(json.dumps(CHOICE))
    with gzip.open(folder / "HumanEval.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(HUMANEVAL) + "\n")
    return folder


def pool_file(tmp_path: Path) -> Path:
    experts = [
        {"name": n, "engine": "openai", "base_url": f"http://{n}/v1", "input_price": p,
         "output_price": 2 * p, "max_concurrency": 2}
        for n, p in (("good", 2.0), ("poor", 1.0))
    ]  # fmt: skip
    return write_pool(tmp_path / "pool.yaml", {"experts": experts})


class Oracle(FakeExpert):
    """Answers by a rule over the prompt, so concurrent calls in any order get their answer."""

    def __init__(self, name: str, right: bool) -> None:
        super().__init__(name)
        self.right = right

    async def _chat(self, request: Any) -> Any:
        body = await request.json()
        text = body["messages"][-1]["content"] + str(body["messages"][0]["content"])
        if "Answers:" in str(body["messages"][0]["content"]):
            reply = "The answer is 5" if "2 + 3" in text else "The answer is (A)"
        elif "2 + 3" in text:
            reply = "2 + 3 = 5. The answer is 5" if self.right else "The answer is 6"
        elif "10 - 4" in text:
            reply = "The answer is 6" if self.right else "The answer is 7"
        elif "even" in text:
            reply = "The answer is (B)" if self.right else "The answer is (C)"
        else:
            body_ = "    return 2 * x" if self.right else "    return x"
            reply = f"```python\ndef double(x):\n{body_}\n```"
        self.replies.append(reply)
        return await super()._chat(request)  # Starlette caches the body: it reads it again


async def profile(tmp_path: Path, data_dir: Path, network: FakeNetwork, **kw: Any) -> Any:
    return await run_profile(
        pool_file(tmp_path),
        ["gsm8k", "gpqa", "humaneval"],
        5,
        data_dir,
        tmp_path / "out",
        work_dir=tmp_path / "work",
        transport=network,
        console=Console(file=io.StringIO()),
        **kw,
    )


async def test_profile_grades_measures_and_writes_a_trainable_dataset(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = {"good": Oracle("good", True), "poor": Oracle("poor", False)}
    result = await profile(tmp_path, data_dir, FakeNetwork(dict(fakes)))
    frame = read_dataset(result.dataset)
    assert len(frame) == 2 * 4  # 2 experts x (2 gsm8k + 1 gpqa + 1 humaneval)
    scores = frame.groupby("model")["score"].mean()
    assert scores["good"] == 1.0 and scores["poor"] == 0.0
    assert set(frame["task"]) == {"gsm8k", "gpqa", "humaneval"}
    row = frame[(frame["model"] == "good") & (frame["task"] == "gsm8k")].iloc[0]
    sent = fakes["good"].requests[0]
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0
    # the fake reports tokens as words; cost = its tokens x the pool's prices (2 and 4 USD/1M)
    assert row["cost_usd"] == pytest.approx(
        (row["prompt_tokens"] * 2.0 + row["completion_tokens"] * 4.0) / 1e6
    )
    assert row["prompt_tokens"] > 0 and not row["cost_estimated"] and row["latency_s"] > 0
    # aggregation: each expert aggregates the other's answers and is graded
    agg = json.loads((tmp_path / "out" / "aggregation.json").read_text())
    assert set(agg["aggregation"]) == {"good", "poor"} and agg["n"]["good"] == 4
    # the output trains with `coe train` unchanged
    monkeypatch.setattr(
        "training.embed.load_embedder",
        lambda cache_dir=None, name=None: HashingEmbedder(dim=16, cache_dir=cache_dir),
    )
    artifact = tmp_path / "knn.pkl"
    args = ["train", "--train", str(result.dataset), "--router", "knn", "--params", '{"k": 2}']
    outcome = CliRunner().invoke(
        app, [*args, "--out", str(artifact), "--embed-cache", str(tmp_path)]
    )
    assert outcome.exit_code == 0, outcome.output
    assert sorted(Router.load(artifact).models_) == ["good", "poor"]


async def test_profile_resumes_where_it_stopped(tmp_path: Path, data_dir: Path) -> None:
    fakes: dict[str, FakeExpert] = {"good": Oracle("good", True), "poor": Oracle("poor", False)}
    network = FakeNetwork(fakes)
    network.down.add("poor")  # poor is down: its questions stay unanswered, not failed
    first = await profile(tmp_path, data_dir, network, aggregation=False, retries=0)
    assert first.dataset is None and first.incomplete == 4
    assert len(fakes["good"].requests) == 4
    network.down.clear()
    second = await profile(tmp_path, data_dir, network, aggregation=False)
    assert len(fakes["good"].requests) == 4  # nothing asked twice
    assert len(fakes["poor"].requests) == 4
    assert second.incomplete == 0
    assert len(pd.read_parquet(second.dataset)) == 8


def test_profile_cli_fails_clearly_on_a_bad_bench(tmp_path: Path, data_dir: Path) -> None:
    args = ["profile", "--pool", str(pool_file(tmp_path)), "--bench", "gsm9k", "-o", "x"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert "unknown bench(es) ['gsm9k']" in result.output
