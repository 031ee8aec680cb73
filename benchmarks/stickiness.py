"""How often coe-auto switches expert between the two turns of a conversation, and what
keeping it on one expert costs in predicted quality.

MT-Bench's 80 two-turn questions go through the real gateway (`api.pipeline`: routing with a
router trained on LLMRouter data, the stickiness step, the store) in front of the nine-model
pool it was trained for (`config/nvidia.yaml`); the experts are one fake that answers at once
(the NVIDIA endpoint is not called: routing reads the last user turn, not the answer). Turn 1
is `[user₁]`, turn 2 `[user₁, assistant₁, user₂]`, sent as any OpenAI client would send it.
For each stickiness threshold (0 = the router alone, "before") the table gives the share of
second turns answered by another expert than the first, and the router's predicted quality
(and utility, quality − λ·cost) given up against its own first choice.

    coe data import ../shared/data/llmrouter --format llmrouter --out data/llmrouter
    coe train --train data/llmrouter/train.parquet --router ensemble --out router.pkl \\
        --embed-cache /work/cache/embeddings
    python benchmarks/stickiness.py --router-artifact router.pkl --thresholds 0,0.02,0.05,0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from api.app import create_app
from api.embedding import BatchingEmbedder
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from router.embedder import load_embedder

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT.parent / "shared" / "data" / "benchsets" / "mt_bench_question.jsonl"


@dataclass(frozen=True)
class Row:
    stickiness: float
    conversations: int
    switched: float  # share of second turns answered by another expert than the first
    router_switch: float  # share where the router's own first choice differs from turn 1's
    quality_given_up: float  # mean over second turns of q(router's choice) − q(answering expert)
    quality_given_up_kept: float  # the same, over the turns that stickiness kept
    utility_given_up: float
    mean_quality: float


async def _turn(client: httpx.AsyncClient, messages: list[dict[str, str]], s: float) -> Any:
    body = {"model": "coe-auto", "messages": messages, "coe": {"stickiness": s}}
    r = await client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()


async def measure(
    questions: list[dict[str, Any]], thresholds: list[float], settings: Settings, cache: Path
) -> list[Row]:
    """One fresh gateway (and store) per threshold, so no run sees another's conversations."""
    rows = []
    for s in thresholds:
        fake = FakeExpert("nvidia", default="Here is my answer.")
        app = create_app(settings, transport=FakeNetwork({"integrate.api.nvidia.com": fake}))
        async with app.router.lifespan_context(app):
            routing = app.state.routing
            if routing.embedder is not None:  # the shared cache: nothing is embedded twice
                await routing.embedder.aclose()
                routing.embedder = BatchingEmbedder(load_embedder(cache_dir=cache))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                rows.append(await _run(client, questions, s))
            if routing.embedder is not None:
                await routing.embedder.aclose()
    return rows


async def _run(client: httpx.AsyncClient, questions: list[dict[str, Any]], s: float) -> Row:
    switched = router_switch = 0
    given_up: list[float] = []
    kept: list[float] = []
    utility_given_up: list[float] = []
    quality: list[float] = []
    for q in questions:
        first = [{"role": "user", "content": q["turns"][0]}]
        expert1 = (await _turn(client, first, s))["model"]
        second = [*first, {"role": "assistant", "content": "Here is my answer."},
                  {"role": "user", "content": q["turns"][1]}]  # fmt: skip
        answer = await _turn(client, second, s)
        expert2, coe = answer["model"], answer["coe"]
        sticky = coe["sticky"]  # turn 2 always finds turn 1's expert
        choice = sticky["router_choice"]  # the router's own first choice, before stickiness
        switched += expert2 != expert1
        router_switch += choice != expert1
        lost = coe["scores"][choice] - coe["scores"][expert2]
        given_up.append(lost)
        utility_given_up.append(sticky.get("gain", 0.0) if expert2 != choice else 0.0)
        quality.append(coe["scores"][expert2])
        if expert2 != choice:
            kept.append(lost)
    n = len(questions)
    return Row(
        s,
        n,
        switched / n,
        router_switch / n,
        sum(given_up) / n,
        sum(kept) / len(kept) if kept else 0.0,
        sum(utility_given_up) / n,
        sum(quality) / n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router-artifact", type=Path, default=None, help="else the pool's")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--pool", type=Path, default=ROOT / "config" / "nvidia.yaml")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--thresholds", default="0,0.02,0.05,0.1")
    parser.add_argument("--cost-weight", type=float, default=None)
    parser.add_argument("--embed-cache", type=Path, default=Path("/work/cache/embeddings"))
    args = parser.parse_args()
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line]
    questions = questions[: args.limit]
    os.environ.setdefault("NVIDIA_API_KEY", "unused: the fake answers")
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(
            pool=args.pool,
            router_artifact=args.router_artifact,
            cost_weight=args.cost_weight,
            work_dir=Path(work),
            _env_file=None,  # type: ignore[call-arg]
        )
        thresholds = [float(t) for t in args.thresholds.split(",")]
        rows = asyncio.run(measure(questions, thresholds, settings, args.embed_cache))
    table = Table(title=f"MT-Bench two-turn conversations ({len(questions)}), coe-auto")
    for header in ("stickiness", "2nd turn switches", "router alone would switch",
                   "quality given up / turn", "… per kept turn", "utility given up / turn",
                   "mean predicted quality"):  # fmt: skip
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(
            f"{r.stickiness:g}", f"{r.switched:.1%}", f"{r.router_switch:.1%}",
            f"{r.quality_given_up:.4f}", f"{r.quality_given_up_kept:.4f}",
            f"{r.utility_given_up:.4f}", f"{r.mean_quality:.4f}",
        )  # fmt: skip
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
