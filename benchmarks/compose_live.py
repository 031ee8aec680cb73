"""Composition live: every expert alone, coe-auto and each coe-compose strategy, graded.

    .venv/bin/python benchmarks/compose_live.py --pool config/local.yaml \\
        [--router-artifact router.pkl] [--bench gsm8k,mmlu_pro] [--n 6] [--seed 1] \\
        [--out reports/compose-live.jsonl]

Starts `coe serve` on the pool (a real uvicorn gateway over the pool's real experts), sends the
same gold-answer questions (`training.benchsets`, the prompts `coe profile` sends) to each
*mode* through the gateway's OpenAI endpoint, grades the answers with `training.grading`, and
prints accuracy, USD and seconds per question for each mode. USD is what the gateway reports
under `coe.cost_usd` (every call of a composition, measured tokens × the pool's prices).
Answers are appended to `--out`, so an interrupted run resumes. Use a `--seed` other than the
one `coe profile` used when coe-auto's router was trained on that profile: the questions are
then held out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import httpx

from experts.pool import load_pool
from training.benchsets import Question, load_questions
from training.grading import grade

STRATEGIES = ("aggregate", "moa", "select", "vote")


def start_gateway(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "api.cli", "serve", "--pool", str(args.pool)]
    command += ["--port", str(args.port)]
    if args.router_artifact:
        command += ["--router-artifact", str(args.router_artifact)]
    env = {**os.environ, "COE_READ_TIMEOUT_S": "600", "COE_COMPOSE_TIMEOUT_S": "900"}
    log = Path(args.out).with_suffix(".gateway.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited; see {log.name}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("the gateway was not ready within 180 s")


def body(mode: str, question: Question, args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": question.prompt}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }
    if mode.startswith("compose:"):
        strategy = mode.split(":", 1)[1]
        coe = {"strategy": strategy, "k": args.k, "layers": args.layers}
        return request | {"model": "coe-compose", "coe": coe}
    return request | {"model": mode}


async def ask(
    client: httpx.AsyncClient, mode: str, question: Question, args: argparse.Namespace
) -> dict[str, Any]:
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body(mode, question, args))
    seconds = time.perf_counter() - started
    data = response.json()
    if response.status_code != 200:
        return {"error": data.get("error", {}).get("message"), "score": 0.0, "seconds": seconds}
    text = data["choices"][0]["message"]["content"] or ""
    coe = data["coe"]
    return {
        "score": await grade(question, text),
        "cost_usd": coe["cost_usd"],
        "seconds": seconds,
        "calls": len(coe.get("compose", {}).get("answers", [])) or 1,
        "experts": coe["experts"],
        "early_stopped": coe.get("compose", {}).get("early_stopped"),
        "response": text,
    }


async def run(
    args: argparse.Namespace, url: str, modes: list[str], done: list[dict[str, Any]], sink: IO[str]
) -> list[dict[str, Any]]:
    """Ask what `done` (read from `--out`) lacks; append each graded answer to `sink`."""
    questions = load_questions(args.bench.split(","), args.data_dir, args.n, args.seed)
    seen = {(r["query_id"], r["mode"]) for r in done}
    todo = [(q, m) for q in questions for m in modes if (q.query_id, m) not in seen]
    limit = asyncio.Semaphore(args.concurrency)
    timeout = httpx.Timeout(1800.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:

        async def one(question: Question, mode: str) -> None:
            async with limit:
                result = await ask(client, mode, question, args)
            row = {"query_id": question.query_id, "task": question.bench, "mode": mode, **result}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done.append(row)
            print(f"{len(done):4d} {mode:<18} {question.query_id:<18} {row['score']}", flush=True)

        await asyncio.gather(*(one(q, m) for q, m in todo))
    wanted = {q.query_id for q in questions}
    return [r for r in done if r["query_id"] in wanted and r["mode"] in modes]


def table(rows: list[dict[str, Any]], modes: list[str]) -> str:
    by_mode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_mode[row["mode"]].append(row)
    tasks = sorted({r["task"] for r in rows})
    head = ["mode", "n", "accuracy", *tasks, "USD/question", "s/question", "calls", "errors"]
    head.append("early stops")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in modes:
        group = by_mode.get(mode, [])
        if not group:
            continue
        n = len(group)
        per_task = []
        for task in tasks:
            scores = [r["score"] for r in group if r["task"] == task]
            per_task.append(f"{sum(scores) / len(scores):.3f}" if scores else "-")
        cost = sum(r.get("cost_usd", 0.0) for r in group) / n
        cells = [
            mode,
            str(n),
            f"{sum(r['score'] for r in group) / n:.3f}",
            *per_task,
            f"{cost:.3g}",
            f"{sum(r['seconds'] for r in group) / n:.1f}",
            f"{sum(r.get('calls', 0) for r in group) / n:.1f}",
            str(sum(1 for r in group if r.get("error"))),
            str(sum(1 for r in group if r.get("early_stopped"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=Path("config/local.yaml"))
    parser.add_argument("--router-artifact", type=Path)
    parser.add_argument("--bench", default="gsm8k,mmlu_pro,medmcqa,gpqa,humaneval")
    parser.add_argument("--n", type=int, default=6, help="questions per bench")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/benchsets"))
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--port", type=int, default=18510)
    parser.add_argument("--out", type=Path, default=Path("reports/compose-live.jsonl"))
    parser.add_argument("--modes", help="comma-separated; default: experts, coe-auto, strategies")
    parser.add_argument(
        "--report", action="store_true", help="only print the table of what --out holds"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    experts = [e.name for e in load_pool(args.pool).experts]
    default = [*experts, "coe-auto", *(f"compose:{s}" for s in STRATEGIES)]
    modes = args.modes.split(",") if args.modes else default
    out = Path(args.out)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rows = done
    if not args.report:
        process, url = start_gateway(args)
        try:
            with out.open("a") as sink:
                rows = asyncio.run(run(args, url, modes, done, sink))
        finally:
            process.terminate()
            process.wait(timeout=30)
    # Compare modes on the same questions only: those every mode has answered.
    answered: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        answered[row["query_id"]].add(row["mode"])
    complete = {q for q, got in answered.items() if set(modes) <= got}
    rows = [r for r in rows if r["query_id"] in complete and r["mode"] in modes]
    print(f"\n{len(complete)} questions answered by every mode, seed {args.seed}, k={args.k}")
    print(table(rows, modes))


if __name__ == "__main__":
    main()
