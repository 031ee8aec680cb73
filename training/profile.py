"""`coe profile`: run every expert of a live pool on gold-answer questions and grade them.

The output folder holds:

==================  ===========================================================================
``rows.jsonl``      one line per graded (question, expert): the canonical columns plus
                    token counts and any error; appended as answers arrive, so an interrupted
                    run continues where it stopped
``aggregation.jsonl``  one line per (question, aggregator): the expert's grade when it
                    aggregates the *other* experts' answers (Symbolic-MoE's aggregator skill)
``dataset.parquet`` the canonical routing dataset (queries every expert answered), which
                    ``coe train --train OUT/dataset.parquet`` reads unchanged
``aggregation.json``  ``{"aggregation": {expert: accuracy}, "n": {...}}``, which a pool file
                    names as ``compose.aggregation_profile`` to pick coe-compose's aggregator
==================  ===========================================================================

Costs are measured: the expert's reported prompt and completion tokens × the pool file's prices
(`cost_estimated` is false unless an expert reported no usage). Latency is the wall time of the
call, queueing in the gateway's client included. Each expert has its own bounded set of workers
(`concurrency`, default its pool `max_concurrency`), so a slow expert never holds a fast one up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experts.compose.templates import Templates
from experts.errors import ExpertError
from experts.live import LivePool
from router.query import estimate_tokens
from training.benchsets import Question
from training.dataset import validate, write_dataset
from training.grading import grade

__all__ = ["ProfileOptions", "ProfileResult", "profile_pool"]

Json = dict[str, Any]
#: progress(expert or "aggregation", done, total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProfileOptions:
    max_tokens: int = 512
    temperature: float = 0.0
    concurrency: int | None = None
    aggregation: bool = True
    aggregation_n: int | None = None  # questions per bench used for the aggregation profile
    retries: int = 1


@dataclass
class ProfileResult:
    dataset: Path | None
    aggregation: Path | None
    rows: list[Json]
    aggregation_rows: list[Json]
    incomplete: int  # questions left out of the dataset: some expert has no graded answer yet


def _read_lines(path: Path) -> list[Json]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short when a run was killed: it is asked again
    return rows


class _Appender:
    """Appends JSON lines and flushes each, so a killed run loses at most the line in flight."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, row: Json) -> None:
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class _Profiler:
    def __init__(self, pool: LivePool, out_dir: Path, options: ProfileOptions) -> None:
        self.pool = pool
        self.out_dir = out_dir
        self.options = options
        self.descriptors = {d.name: d for d in pool.descriptors()}
        self.templates = Templates.with_overrides(pool.config.compose.templates)

    async def ask(self, expert: str, messages: list[Json]) -> Json:
        """One call: the answer text, measured tokens, cost, latency; `error` if it failed."""
        body = {
            "messages": messages,
            "max_tokens": self.options.max_tokens,
            "temperature": self.options.temperature,
        }
        error: ExpertError | None = None
        for attempt in range(self.options.retries + 1):
            started = time.perf_counter()
            try:
                answer = await self.pool.client.complete(expert, body)
            except ExpertError as exc:
                error = exc
                if not exc.retryable or attempt == self.options.retries:
                    break
                await asyncio.sleep(min(2.0 * (attempt + 1), 10.0))
                continue
            latency = time.perf_counter() - started
            return self._settle(expert, answer, messages, latency)
        assert error is not None
        return {"error": error.message, "retryable": error.retryable}

    def _settle(self, expert: str, answer: Json, messages: list[Json], latency: float) -> Json:
        text = "".join(
            str((c.get("message") or {}).get("content") or "") for c in answer["choices"]
        )
        usage = answer.get("usage") or {}
        estimated = "prompt_tokens" not in usage
        prompt = int(usage.get("prompt_tokens") or estimate_tokens(messages))
        completion = int(usage.get("completion_tokens") or max(1, len(text) // 4))
        descriptor = self.descriptors[expert]
        return {
            "response": text,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": round(descriptor.cost_usd(prompt, completion), 12),
            "cost_estimated": estimated,
            "latency_s": round(latency, 4),
        }

    async def _answer(self, expert: str, question: Question) -> Json | None:
        result = await self.ask(expert, [{"role": "user", "content": question.prompt}])
        if result.get("retryable"):
            return None  # the expert is down: not graded, so a later run asks again
        score = 0.0 if "error" in result else await grade(question, result["response"])
        descriptor = self.descriptors[expert]
        return {
            "query_id": question.query_id,
            "prompt": question.router_prompt,
            "task": question.bench,
            "model": expert,
            "score": score,
            "cost_usd": result.get("cost_usd", 0.0),
            "cost_estimated": result.get("cost_estimated", False),
            "latency_s": result.get("latency_s"),
            "response": result.get("response", ""),
            "prompt_tokens": result.get("prompt_tokens", 0),
            "completion_tokens": result.get("completion_tokens", 0),
            "input_price": descriptor.input_price,
            "output_price": descriptor.output_price,
            "error": result.get("error"),
            "gold": question.gold or None,
        }

    async def _aggregate(
        self, aggregator: str, question: Question, answers: dict[str, str]
    ) -> Json | None:
        others = [answers[e] for e in sorted(answers) if e != aggregator]
        user = [{"role": "user", "content": question.prompt}]
        result = await self.ask(aggregator, self.templates.aggregate_messages(user, others))
        if result.get("retryable"):
            return None
        score = 0.0 if "error" in result else await grade(question, result["response"])
        return {
            "query_id": question.query_id,
            "task": question.bench,
            "aggregator": aggregator,
            "inputs": [e for e in sorted(answers) if e != aggregator],
            "score": score,
            "cost_usd": result.get("cost_usd", 0.0),
            "latency_s": result.get("latency_s"),
            "response": result.get("response", ""),
            "error": result.get("error"),
        }

    async def run_jobs(
        self,
        jobs: dict[str, list[Any]],
        work: Callable[[str, Any], Any],
        sink: _Appender,
        label: Callable[[str], str],
        progress: Progress | None,
    ) -> list[Json]:
        """`work(expert, job)` for every job, `concurrency` at a time per expert."""
        written: list[Json] = []

        async def worker(expert: str, queue: asyncio.Queue[Any], total: int) -> None:
            while not queue.empty():
                job = queue.get_nowait()
                row = await work(expert, job)
                if row is not None:
                    sink.write(row)
                    written.append(row)
                if progress is not None:
                    progress(label(expert), total - queue.qsize(), total)

        tasks = []
        for expert, items in jobs.items():
            queue: asyncio.Queue[Any] = asyncio.Queue()
            for item in items:
                queue.put_nowait(item)
            if progress is not None:
                progress(label(expert), 0, len(items))
            width = (
                self.options.concurrency
                or self.pool.config.experts[self.pool.names.index(expert)].max_concurrency
            )
            tasks += [worker(expert, queue, len(items)) for _ in range(max(1, width))]
        await asyncio.gather(*tasks)
        return written


async def profile_pool(
    pool: LivePool,
    questions: Sequence[Question],
    out_dir: Path,
    options: ProfileOptions | None = None,
    progress: Progress | None = None,
) -> ProfileResult:
    """Profile `pool` (started) on `questions`; resumes from what `out_dir` already holds."""
    options = options or ProfileOptions()
    profiler = _Profiler(pool, out_dir, options)
    rows_path, agg_path = out_dir / "rows.jsonl", out_dir / "aggregation.jsonl"
    rows = _read_lines(rows_path)
    done = {(r["query_id"], r["model"]) for r in rows}
    jobs = {e: [q for q in questions if (q.query_id, e) not in done] for e in pool.names}
    sink = _Appender(rows_path)
    try:
        rows += await profiler.run_jobs(jobs, profiler._answer, sink, lambda e: e, progress)
    finally:
        sink.close()
    wanted = {q.query_id for q in questions}
    rows = [r for r in rows if r["query_id"] in wanted and r["model"] in pool.names]
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        answers[row["query_id"]][row["model"]] = row["response"] or ""
    complete = [q for q in questions if len(answers[q.query_id]) == len(pool.names)]
    agg_rows: list[Json] = []
    if options.aggregation and len(pool.names) > 1:
        agg_rows = await _aggregation(profiler, complete, answers, agg_path, options, progress)
    dataset = _write_dataset(rows, {q.query_id for q in complete}, out_dir)
    aggregation = _write_aggregation(agg_rows, out_dir) if agg_rows else None
    return ProfileResult(dataset, aggregation, rows, agg_rows, len(questions) - len(complete))


async def _aggregation(
    profiler: _Profiler,
    complete: list[Question],
    answers: dict[str, dict[str, str]],
    path: Path,
    options: ProfileOptions,
    progress: Progress | None,
) -> list[Json]:
    per_bench: dict[str, int] = defaultdict(int)
    chosen = []
    for question in complete:
        if options.aggregation_n is None or per_bench[question.bench] < options.aggregation_n:
            per_bench[question.bench] += 1
            chosen.append(question)
    agg_rows = _read_lines(path)
    done = {(r["query_id"], r["aggregator"]) for r in agg_rows}
    names = profiler.pool.names
    jobs = {e: [q for q in chosen if (q.query_id, e) not in done] for e in names}
    sink = _Appender(path)

    async def work(expert: str, question: Question) -> Json | None:
        return await profiler._aggregate(expert, question, answers[question.query_id])

    try:
        agg_rows += await profiler.run_jobs(
            jobs, work, sink, lambda e: f"{e} (aggregating)", progress
        )
    finally:
        sink.close()
    wanted = {q.query_id for q in chosen}
    return [r for r in agg_rows if r["query_id"] in wanted and r["aggregator"] in names]


def _write_dataset(rows: list[Json], complete: set[str], out_dir: Path) -> Path | None:
    import pandas as pd

    kept = [r for r in rows if r["query_id"] in complete]
    if not kept:
        return None
    frame = validate(pd.DataFrame(kept), out_dir / "rows.jsonl")
    return write_dataset(frame, out_dir / "dataset.parquet")


def _write_aggregation(rows: list[Json], out_dir: Path) -> Path:
    scores: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        scores[row["aggregator"]].append(float(row["score"]))
    body = {
        "aggregation": {e: round(sum(s) / len(s), 4) for e, s in sorted(scores.items())},
        "n": {e: len(s) for e, s in sorted(scores.items())},
    }
    path = out_dir / "aggregation.json"
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def summary(result: ProfileResult) -> list[dict[str, Any]]:
    """Per expert: accuracy overall and per task, mean cost and latency, aggregation accuracy."""
    by_model: dict[str, list[Json]] = defaultdict(list)
    for row in result.rows:
        by_model[row["model"]].append(row)
    agg: dict[str, list[float]] = defaultdict(list)
    for row in result.aggregation_rows:
        agg[row["aggregator"]].append(float(row["score"]))
    table = []
    for model, rows in sorted(by_model.items()):
        tasks: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            tasks[row["task"]].append(float(row["score"]))
        latencies = [float(r["latency_s"]) for r in rows if r.get("latency_s") is not None]
        table.append(
            {
                "expert": model,
                "n": len(rows),
                "accuracy": sum(float(r["score"]) for r in rows) / len(rows),
                "tasks": {t: sum(s) / len(s) for t, s in sorted(tasks.items())},
                "mean_cost_usd": sum(float(r["cost_usd"]) for r in rows) / len(rows),
                "mean_latency_s": sum(latencies) / len(latencies) if latencies else None,
                "aggregation": sum(agg[model]) / len(agg[model]) if agg[model] else None,
                "errors": sum(1 for r in rows if r.get("error")),
            }
        )
    return table
