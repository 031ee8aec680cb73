"""Choose the onboarding model of the `cluster` router by leave-one-model-out on a TRAINING file.

    .venv/bin/python benchmarks/onboard_cv.py --train /work/data/mmlu_pro/train.parquet \
        --embed-cache /work/cache/embeddings [--models a,b] [--draws 3] [--configs JSON]
        [--embed lexical] [--seed S]

The training file is split 80/20 (seeded): for each held-out model (default: every model), a
router fitted on the 80% without it is given it from 100 profiled queries of that 80%, and
scored by AIQ on the 20% against the router fitted with it (`training.onboarding.lomo_cv`).
Prints, per onboarding config, the mean and worst gap to full retraining over the models, how
often it beats leaving the model out, and the per-model gaps. The test file is never read: the
`ClusterRouter` onboarding defaults come from this table. A config's `select` key says how the
profiled queries are chosen (`ClusterRouter.select_profile`; default random). Only models with a
share of the queries move the table; 3 draws leave about ±0.003 of noise on a model's gap, so
compare candidates on `--draws 6` for the models that matter.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts, lexical_embeddings
from training.onboarding import lomo_cv

CONFIGS: list[dict[str, Any]] = [
    {"onboard": "regression", "onboard_c": 0.1, "onboard_prior": 50.0},
    *(
        {"onboard": "irt", "onboard_rank": r, "onboard_strength": s, "onboard_caution": c}
        for r in (0, 2, 4)
        for s in ((1.0,) if r == 0 else (1.0, 4.0))
        for c in (0.0, 1.0, 2.0)
    ),
    # the prior on the newcomer's ability, its reply costs, and which queries are profiled
    *({"onboard_ability": a, "onboard_costs": k} for a in (0.0, 0.3, 1.0) for k in ("own", "pool")),
    *({"select": s} for s in ("stratified", "doptimal")),
    {"onboard_prior": 20.0},
    {"onboard_prior": 200.0},
    # collaborative filtering: the newcomer's outcome regressed on the existing experts'
    *({"onboard": "cf", "onboard_cf_c": c} for c in (0.1, 0.3, 1.0, 3.0)),
    {"onboard": "cf", "onboard_cf_c": 1.0, "onboard_costs": "cf"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--models", default="", help="held-out models (default: all)")
    parser.add_argument("--draws", type=int, default=3, help="profile draws per model and config")
    parser.add_argument("--n-profile", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split and draws")
    parser.add_argument("--configs", help="JSON list of onboarding parameter dicts")
    parser.add_argument(
        "--embed",
        choices=("minilm", "lexical"),
        default="minilm",
        help="lexical: TF-IDF + SVD(64) of the training prompts, a stand-in for MiniLM",
    )
    args = parser.parse_args()
    configs = json.loads(args.configs) if args.configs else CONFIGS
    train = to_routing_data(read_dataset(args.train), args.train)
    if args.embed == "lexical":
        (x,) = lexical_embeddings(train.prompts)
    else:
        x = embed_prompts(train.prompts, cache_dir=args.embed_cache, show_progress=False)
    models = args.models.split(",") if args.models else list(train.models)
    rows = lomo_cv(
        train, x, models, configs, n_profile=args.n_profile, draws=args.draws, seed=args.seed
    )
    print("| config | mean gap to full | worst gap | beats left out | " + " | ".join(
        m[:14] for m in models) + " |")  # fmt: skip
    print("|---" * (len(models) + 4) + "|")
    for c, config in enumerate(configs):
        gaps = [statistics.fmean(r.added[c]) - r.full for r in rows]
        beats = sum(statistics.fmean(r.added[c]) >= r.left_out for r in rows)
        print(
            f"| {json.dumps(config)} | {statistics.fmean(gaps):+.4f} | {min(gaps):+.4f} "
            f"| {beats}/{len(rows)} | " + " | ".join(f"{g:+.3f}" for g in gaps) + " |"
        )
    print("\n| model | full | left out (gap) | share full |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r.model} | {r.full:.4f} | {r.left_out - r.full:+.4f} | {r.share_full:.1%} |")


if __name__ == "__main__":
    main()
