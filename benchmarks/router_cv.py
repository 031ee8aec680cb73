"""Cross-validated hyperparameter comparison on a training file (never the test split).

    .venv/bin/python benchmarks/router_cv.py --train reports/quality/llmrouter-data/train.parquet

Prints, per configuration, the 5-fold mean of `acc_at_best_single_cost`,
`cost_share_to_match_best_single`, `cost_share_at_95pct_best_quality` and AIQ (± its sd over
folds). The defaults of the router families, of the ensemble and the candidates of
`--router auto` (`training.auto.DEFAULT_CANDIDATES`) were chosen from this table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training.cv import cross_validate
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("knn", {"k": 20}),
    ("knn", {"k": 40}),
    ("knn", {"k": 80}),
    ("classifier", {"c": 0.3}),
    ("classifier", {"c": 1.0}),
    ("classifier", {"c": 3.0}),
    ("category", {"prior": 1.0}),
    ("category", {"prior": 5.0}),
    ("category", {"prior": 5.0, "soft": False}),
    ("mf", {}),
    ("mf", {"dim": 64, "weight_decay": 1e-3}),
    ("skills", {}),
    ("skills", {"n_skills": 96}),
    ("ensemble", {}),
    ("cluster", {"n_clusters": 60, "top": 1}),
    ("cluster", {"n_clusters": 60, "top": 3}),
    ("cluster", {"n_clusters": 30, "top": 3}),
    ("cluster", {"n_clusters": 120, "top": 3}),
    ("stack", {}),
    ("irt", {"rank": 1}),
    ("irt", {"rank": 2}),
    ("irt", {"rank": 4}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--configs", type=str, help="JSON list of [family, params] pairs")
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    configs = [tuple(c) for c in json.loads(args.configs)] if args.configs else CONFIGS
    data = to_routing_data(read_dataset(args.train), args.train)
    embeddings = embed_prompts(data.prompts, cache_dir=args.embed_cache)
    print("| router | params | acc ≤ best cost | share to match | share at 95% | AIQ ± sd |")
    print("|---|---|---|---|---|---|")
    for row in cross_validate(data, embeddings, configs, folds=args.folds):  # type: ignore[arg-type]
        print(
            f"| {row['router']} | {json.dumps(row['params'])} | "
            f"{row['acc_at_best_single_cost']:.3f} | "
            f"{row['cost_share_to_match_best_single']:.3f} | "
            f"{row['cost_share_at_95pct_best_quality']:.3f} | "
            f"{row['aiq']:.4f} ± {row['aiq_sd']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
