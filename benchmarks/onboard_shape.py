"""How well the IRT prior predicts a held-out model's region shape, given its true ability.

    .venv/bin/python benchmarks/onboard_shape.py --train /work/data/mmlu_pro/train.parquet \
        [--embed lexical] [--embed-cache /work/cache/embeddings] [--seed S] [--rank 2]

On the 80% of a seeded 80/20 split of a TRAINING file, the `cluster` router's region table is
fitted with every model; for each model, the IRT decomposition of the table without it
(`router.onboard.IrtTable`) predicts its column at its true ability (the mean logit offset)
with the loadings at the prior's centre: the existing experts' mean (`onboard_coupled=False`),
or their line on ability (`True`); and with its best loadings (least squares, the rank's
limit). Prints the rms error per region in accuracy. No outcome of the newcomer beyond its
ability is used: it says how much of a newcomer's shape the prior alone gets right.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from router.cluster import ClusterRouter
from router.onboard import IrtTable, _logit
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts, lexical_embeddings
from training.fitting import validation_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--embed", choices=("minilm", "lexical"), default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=2)
    args = parser.parse_args()
    train = to_routing_data(read_dataset(args.train), args.train)
    if args.embed == "lexical":
        (x,) = lexical_embeddings(train.prompts)
    else:
        x = embed_prompts(train.prompts, cache_dir=args.embed_cache, show_progress=False)
    fit, _ = validation_split(len(train), 0.2, args.seed)
    table = ClusterRouter().fit(train.take(fit), x[fit]).table_
    print("| model | accuracy | rms: mean loadings | on ability (coupled) | best loadings |")
    print("|---|---|---|---|---|")
    for j, model in enumerate(train.models):
        irt = IrtTable(np.delete(table, j, axis=1), args.rank)
        truth = _logit(table[:, j])
        ability = float((truth - irt.difficulty).mean())
        errors = []
        for coupled in (False, True):
            centre, coupling, _ = irt._loading_prior(coupled)
            loadings = centre[1:] + coupling * (ability - centre[0])
            errors.append(_rms(irt.difficulty + ability + irt.regions @ loadings, table[:, j]))
        best = np.linalg.lstsq(irt.regions, truth - irt.difficulty - ability, rcond=None)[0]
        errors.append(_rms(irt.difficulty + ability + irt.regions @ best, table[:, j]))
        accuracy = float(train.take(fit).scores[:, j].mean())
        print(f"| {model} | {accuracy:.3f} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")


def _rms(logits: np.ndarray, table_column: np.ndarray) -> float:
    return float(np.sqrt(np.mean((1 / (1 + np.exp(-logits)) - table_column) ** 2)))


if __name__ == "__main__":
    main()
