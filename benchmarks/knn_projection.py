"""How few dimensions the kNN side of routing can use: neighbours, AIQ and time per query.

A neighbour router (`knn`, `irt`, the `knn` member of `ensemble` and `stack`) takes `dims`: the
training vectors and the query are compared in the training embeddings' leading `dims`
singular directions (`router.neighbours`). On the TRAINING file only, for each `--dims`:

1. neighbour overlap: per fold (the same folds as `training.cv`), the projection fitted on the
   other folds, the share of each held-out query's `--k` nearest training queries by the full
   float32 product that the reduced product also finds;
2. AIQ: 5-fold CV (`training.cv.cross_validate`) of the default `ensemble` with its `knn`
   member at `dims`, beside the full-width one;
3. time: one query's similarity and top-`k` (`threadpool_limits(1)`, as the gateway runs it),
   the median over `--repeats` queries, each after a sweep that evicts the training vectors
   from the cache (a loaded machine's case) and right after another query (an idle one's);
   and numpy's int8 product (no BLAS kernel) beside them.

`dims` is chosen by a rule fixed before the run: the smallest candidate whose CV AIQ is within
`--tolerance` of the full width's. `--test` then evaluates the full width and the chosen `dims`
once on the test file (read after the choice, never used for it).

    .venv/bin/python benchmarks/knn_projection.py --data /work/data/llmrouter \\
        --embed-cache /work/cache/embeddings --embedder minilm-onnx-int8 --models MODELS --test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from router.embedder import load_embedder
from router.ensemble import DEFAULT_MEMBERS
from router.neighbours import Projection
from training.cv import cross_validate
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts
from training.evaluate import evaluate_router
from training.fitting import fit_router


def ensemble(dims: int | None) -> tuple[str, dict[str, Any]]:
    """The default ensemble with its neighbour members at `dims` (None: full width)."""
    members = [
        (name, w, {**params, "dims": dims} if name in ("knn", "irt") else params)
        for name, w, params in DEFAULT_MEMBERS
    ]
    return "ensemble", {"members": members}


def overlap(x: np.ndarray, dims: list[int], k: int, folds: int, seed: int = 0) -> dict[int, float]:
    """Mean share of the full product's `k` nearest that the `dims` product finds, over folds."""
    order = np.random.default_rng(seed).permutation(len(x))
    parts = np.array_split(order, folds)
    got: dict[int, list[float]] = {d: [] for d in dims}
    for f in range(folds):
        train = x[np.concatenate([p for i, p in enumerate(parts) if i != f])]
        held = x[parts[f]]
        exact = np.argpartition(-(held @ train.T), k - 1, axis=1)[:, :k]
        for d in dims:
            projection = Projection.fit(train, d)
            sim = projection.apply(held) @ projection.apply(train).T
            near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            shared = [len(np.intersect1d(a, b)) for a, b in zip(exact, near, strict=True)]
            got[d].append(float(np.mean(shared)) / k)
    return {d: float(np.mean(v)) for d, v in got.items()}


def timing(x: np.ndarray, dims: list[int], k: int, repeats: int) -> dict[str, tuple[float, float]]:
    """µs per query (median) for the similarity and top-k: (after a cache sweep, back to back)."""
    junk = np.ones(6_000_000)  # 48 MB, over any L3 here
    queries = x[np.random.default_rng(1).choice(len(x), repeats)]

    def run(step: Any) -> tuple[float, float]:
        cold, warm = [], []
        for q in queries:
            junk.__iadd__(1.0)
            for out in (cold, warm):
                start = time.perf_counter()
                step(q[None, :])
                out.append(time.perf_counter() - start)
        return float(np.median(cold) * 1e6), float(np.median(warm) * 1e6)

    def top(sim: np.ndarray) -> np.ndarray:
        return np.argpartition(-sim, k - 1, axis=1)[:, :k]

    out = {"full float32": run(lambda q: top(q @ x.T))}
    for d in dims:
        projection = Projection.fit(x, d)
        reduced = np.array(projection.apply(x))
        out[f"{d} dims float32"] = run(
            lambda q, p=projection, r=reduced: top(np.asarray(q @ p.components) @ r.T)
        )
    scale = 127.0 / float(np.abs(x).max())
    x8 = np.round(x * scale).astype(np.int8)
    x8t = x8.T.astype(np.int32)  # numpy's integer matmul has no BLAS kernel
    out["full int8 (numpy)"] = run(
        lambda q: top(np.round(q * scale).astype(np.int8).astype(np.int32) @ x8t)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="train.parquet, test.parquet")
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--embedder", default="minilm", help="as COE_EMBEDDER")
    parser.add_argument("--models", type=Path, default=Path(".coe/models"),
                        help="where the ONNX exports are built once")  # fmt: skip
    parser.add_argument("--dims", default="32,48,64,96,128")
    parser.add_argument("--k", type=int, default=100, help="the ensemble's knn k")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--test", action="store_true", help="evaluate the choice once on test")
    parser.add_argument("--test-dims", type=int, default=None,
                        help="with --test: evaluate these dims (fixed beforehand)")  # fmt: skip
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    train_file = args.data / "train.parquet"
    data = to_routing_data(read_dataset(train_file), train_file)
    embedder = load_embedder(args.embed_cache, args.embedder, args.models)
    x = embed_prompts(data.prompts, embedder, show_progress=False)
    print(f"{train_file}: {len(data)} queries, {len(data.models)} models, {x.shape[1]} dims,"
          f" {args.embedder}", flush=True)  # fmt: skip

    shares = overlap(x, dims, args.k, args.folds)
    configs = [ensemble(None)] + [ensemble(d) for d in dims]
    rows = cross_validate(data, x, configs, folds=args.folds)
    full = rows[0]["aiq"]
    head = f"| knn dims | MB ({len(x)} rows) | top-{args.k} overlap (CV) | ensemble AIQ (CV) ± sd |"
    print(f"\n{head}\n|---|---|---|---|")
    sd = rows[0]["aiq_sd"]
    print(f"| {x.shape[1]} (full) | {x.nbytes / 1e6:.1f} | 1 | {full:.4f} ± {sd:.4f} |")
    for d, row in zip(dims, rows[1:], strict=True):
        mb = len(x) * d * 4 / 1e6
        print(f"| {d} | {mb:.1f} | {shares[d]:.3f} | {row['aiq']:.4f} ± {row['aiq_sd']:.4f} |")
    ok = [d for d, row in zip(dims, rows[1:], strict=True) if row["aiq"] >= full - args.tolerance]
    chosen = min(ok) if ok else None
    print(f"\nchosen (smallest dims with CV AIQ ≥ full − {args.tolerance}): {chosen}", flush=True)

    if not args.no_timing:
        with threadpool_limits(1, user_api="blas"):
            times = timing(x, dims, args.k, args.repeats)
        print("\n| one query's similarity + top-k | µs, after a cache sweep | µs, back to back |")
        print("|---|---|---|")
        for name, (cold, warm) in times.items():
            print(f"| {name} | {cold:.0f} | {warm:.0f} |")

    if args.test_dims is not None:
        chosen = args.test_dims
    if args.test and chosen is not None:
        test_file = args.data / "test.parquet"
        test = to_routing_data(read_dataset(test_file), test_file, models=data.models)
        xt = embed_prompts(test.prompts, embedder, show_progress=False)
        scale = float(data.costs.max(axis=1).mean())
        for d in (None, chosen):
            name, params = ensemble(d)
            router = fit_router(name, data, x, params, 0)
            aiq = evaluate_router(router, xt, test, scale).metrics["aiq"]
            print(f"test AIQ, knn dims {d or 'full'}: {aiq:.4f}")


if __name__ == "__main__":
    main()
