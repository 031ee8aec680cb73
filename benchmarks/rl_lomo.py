"""Leave one model out: can the RL router use an expert it never saw, from its descriptor alone?

    .venv/bin/python benchmarks/rl_lomo.py --data data/llmrouter [--models a,b] [--iterations N]

For each held-out model X: train the RL router on the train split without X's column; then put X
back into the pool through its descriptor only (`RLRouter.set_experts`: prices, size, the
embedding of its description) and evaluate on the test split with all models. Compared with the
same router trained with X, and with the router that never gets X at all. Columns: one-shot
accuracy at λ = 0 (argmax predicted quality) and its share of queries sent to X; the mean
absolute error of X's predicted quality against its true mean score; and the multi-step policy's
accuracy and cost at the router's λ. Costs are estimated (see the dataset's `cost_note`).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from router.data import RoutingData
from router.rl import RLRouter
from router.rl_env import RecordedEnv
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts


def _drop(data: RoutingData, model: str) -> RoutingData:
    keep = [j for j, m in enumerate(data.models) if m != model]
    return RoutingData(
        query_ids=data.query_ids,
        prompts=data.prompts,
        tasks=data.tasks,
        models=[data.models[j] for j in keep],
        scores=data.scores[:, keep],
        costs=data.costs[:, keep],
        experts=[data.experts[j] for j in keep],
        responses=None if data.responses is None else data.responses[:, keep],
    )


def _measure(router: RLRouter, x: np.ndarray, test: RoutingData, model: str) -> list[str]:
    quality = router.score(x, test.prompts)
    cols = [test.models.index(m) for m in router.models_]
    scores, costs = test.scores[:, cols], test.costs[:, cols]
    pick = quality.argmax(axis=1)
    acc = scores[np.arange(len(test)), pick].mean()
    row = [f"{acc:.3f}"]
    if model in router.models_:
        j = router.models_.index(model)
        row += [f"{(pick == j).mean():.1%}", f"{abs(quality[:, j] - scores[:, j]).mean():.3f}"]
    else:
        row += ["—", "—"]
    env = RecordedEnv(scores, costs, router.cost_scale_ or 1.0, router.max_calls)
    state = router.rollout(x, env, np.arange(len(test)), router.cost_weight)
    row += [f"{env.final_scores(state).mean():.3f}", f"{state.spent.mean() * 1e6:.0f}"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/llmrouter"))
    parser.add_argument("--models", default="llama-3.1-nemotron-51b-instruct,gemma-2-9b-it")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--cost-weight", type=float, default=0.1)
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    args = parser.parse_args()
    train = to_routing_data(read_dataset(args.data / "train.parquet"))
    test = to_routing_data(read_dataset(args.data / "test.parquet"), models=train.models)
    x_train = embed_prompts(train.prompts, cache_dir=args.embed_cache)
    x_test = embed_prompts(test.prompts, cache_dir=args.embed_cache)

    def fit(data: RoutingData) -> RLRouter:
        router = RLRouter(cost_weight=args.cost_weight, iterations=args.iterations, progress=False)
        return router.fit(data, x_train)

    started = time.perf_counter()
    full = fit(train)
    head = (
        "| held out | router | acc λ=0 | share to X | MAE of X's quality | steps acc | USD/1M q |"
    )
    print(head + "\n|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        without = fit(_drop(train, model))
        added = copy.deepcopy(without).set_experts(train.experts)
        for label, router in (("trained with X", full), ("X via descriptor", added),
                              ("never has X", without)):  # fmt: skip
            print(
                f"| {model} | {label} | " + " | ".join(_measure(router, x_test, test, model)) + " |"
            )
    print(f"\n{args.iterations} iterations per training; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
