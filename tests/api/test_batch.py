"""`coe batch`: output in input order, each expert woken once, resume, malformed lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from api.batch import read_input, run_batch
from api.cli import app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import write_pool


def vllm(name: str) -> dict[str, object]:
    return {"name": name, "engine": "vllm", "base_url": f"http://{name}/v1", "max_concurrency": 2}


def request(custom_id: str, model: str, text: str = "hi") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body})  # fmt: skip


INPUT = [
    request("r1", "y"),
    request("r2", "x"),
    "{not json",
    request("r3", "y"),
    json.dumps({"body": {"model": "x", "messages": []}}),
    "",
    request("r4", "x"),
    json.dumps({"custom_id": "r5", "body": {"model": "x", "messages": []}}),
    request("r1", "x"),
    request("r6", "coe-auto"),
    request("r7", "y"),
]


class Env:
    def __init__(self, tmp: Path) -> None:
        self.fakes = {n: FakeExpert(n, default=f"{n} says hi") for n in ("x", "y")}
        self.network = FakeNetwork(self.fakes)
        pool = {"experts": [vllm("x"), vllm("y")], "max_resident": 1}
        self.settings = Settings(
            pool=write_pool(tmp / "pool.yaml", pool),
            work_dir=tmp / "work",
            _env_file=None,  # type: ignore[call-arg]
        )
        self.input = tmp / "in.jsonl"
        self.input.write_text("\n".join(INPUT) + "\n")
        self.output = tmp / "out.jsonl"
        self.stderr = io.StringIO()
        self.console = Console(file=self.stderr, width=200)

    async def run(self) -> Any:
        return await run_batch(
            self.settings, self.input, self.output, 2, False, self.console, self.network
        )

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.output.read_text().splitlines()]

    def calls(self) -> int:
        return sum(len(f.requests) for f in self.fakes.values())


async def test_one_output_per_line_in_input_order_and_one_wake_per_expert(tmp_path: Path) -> None:
    env = Env(tmp_path)
    summary = await env.run()
    results = env.results()
    assert [r["custom_id"] for r in results] == [
        "r1", "r2", None, "r3", None, "r4", "r5", "r1", "r6", "r7"
    ]  # fmt: skip
    by_id = {r["custom_id"]: r for r in results if r["error"] is None}
    assert by_id["r1"]["response"]["body"]["choices"][0]["message"]["content"] == "y says hi"
    assert by_id["r2"]["response"]["body"]["coe"]["experts"] == ["x"]
    assert by_id["r6"]["response"]["status_code"] == 200
    assert by_id["r6"]["response"]["request_id"].startswith("chatcmpl-")
    # x was resident: its group ran first, then y was woken once for all of its lines
    assert env.fakes["x"].sleep_calls == ["sleep level=1"]
    assert env.fakes["y"].sleep_calls == ["sleep level=1", "wake_up"]
    assert summary.by_expert == {"x": 3, "y": 3} and summary.ok == 6
    assert summary.malformed == 4 and summary.failed == 0 and summary.wakes == 1


async def test_malformed_lines_are_reported_with_their_line_number(tmp_path: Path) -> None:
    env = Env(tmp_path)
    await env.run()
    errors = [r["error"] for r in env.results() if r["error"] is not None]
    assert [e["line"] for e in errors] == [3, 5, 8, 9]
    messages = [e["message"] for e in errors]
    assert messages[0].startswith("line 3: not valid JSON")
    assert messages[1] == "line 5: 'custom_id' (a string) is missing"
    assert messages[2].startswith("line 8: body.messages")
    assert messages[3] == "line 9: custom_id 'r1' is repeated"
    assert all(e["code"] == "invalid_line" for e in errors)
    assert "line 3: not valid JSON" in env.stderr.getvalue()


async def test_resume_runs_only_what_is_missing_or_failed(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.fakes["y"].enqueue_error(400, "prompt too long")  # r1 fails the first time
    summary = await env.run()
    assert summary.failed == 1
    first = env.results()
    assert first[0]["response"]["status_code"] == 400 and first[0]["error"] is not None
    # an interrupted run: r4's and r7's results lost, and a torn last line
    kept = [json.dumps(r) for r in first if r["custom_id"] not in ("r4", "r7")]
    env.output.write_text("\n".join(kept) + '\n{"custom_id": "r7", "resp')
    calls = env.calls()
    summary = await env.run()
    assert env.calls() - calls == 3  # r1 (failed before), r4, r7
    assert summary.skipped == 3 and summary.ok == 3 and summary.failed == 0  # r2 r3 r6 kept
    again = env.results()
    assert [r["custom_id"] for r in again] == [r["custom_id"] for r in first]
    redone = [again[i] for i in (0, 5, 9)]
    assert [r["custom_id"] for r in redone] == ["r1", "r4", "r7"]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in redone)
    assert again[1] == first[1]  # r2 kept as it was
    calls = env.calls()
    await env.run()  # nothing left to do: the pool is not even started
    assert env.calls() == calls


def test_read_input_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n\n" + request("a", "x") + "\n  \n")
    lines = read_input(path)
    assert [(line.line_no, line.custom_id, line.error) for line in lines] == [(3, "a", None)]


def test_cli_errors_name_the_file(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["batch", str(tmp_path / "nope.jsonl"), "-o", "out.jsonl"])
    assert result.exit_code == 2 and "nope.jsonl: input file not found" in result.output
    (tmp_path / "in.jsonl").write_text(request("a", "x"))
    bad_pool = tmp_path / "pool.yaml"
    bad_pool.write_text("experts: []\nmax_resident: 0\n")
    args = ["batch", str(tmp_path / "in.jsonl"), "-o", "o.jsonl", "--pool", str(bad_pool)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "max_resident" in result.output
