"""How much what a reply's text shows separates right replies from wrong ones, per model.

    .venv/bin/python benchmarks/reply_features.py --data DIR [--split train] [--out FILE.json]

Reads `DIR/train.parquet` (the training file: what a chain may learn from) and, for every
model's recorded reply, the features of `router.reply_checks.features`: arithmetic steps
checked and found wrong, whether the final answer is the last value computed, the length, an
explicit answer marker, `\\boxed{}`. Per model it prints the accuracy of its replies, and the
share of replies and their accuracy with each binary feature on and off (a feature separates
when the accuracy differs much between the two). `--split test` reads the test file instead
(for the record only: nothing here is chosen from it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from router.answers import conclusion
from router.reply_checks import features
from training.dataset import read_dataset, to_routing_data


def _split(flag: np.ndarray, right: np.ndarray) -> dict[str, float | None]:
    on, off = flag, ~flag
    return {
        "share": float(on.mean()),
        "acc_on": float(right[on].mean()) if on.any() else None,
        "acc_off": float(right[off].mean()) if off.any() else None,
        "n_on": int(on.sum()),
        "wrong_on": int((~right[on]).sum()),
    }


def measure(path: Path) -> dict[str, Any]:
    data = to_routing_data(read_dataset(path), path)
    assert data.responses is not None
    tasks = [t for t in data.tasks if t]
    math = bool(tasks) and all(t.lower().startswith("math") for t in tasks)
    out: dict[str, Any] = {"file": str(path), "math": math, "models": {}}
    for j, model in enumerate(data.models):
        rows = [
            (i, features(text, conclusion(text, data.prompts[i], math)))
            for i, text in enumerate(data.responses[:, j])
            if isinstance(text, str)
        ]
        right = np.array([data.scores[i, j] > 0.5 for i, _ in rows])
        f = [r for _, r in rows]
        length = np.array([x.length for x in f])
        long = length > np.median(length)
        out["models"][model] = {
            "n": len(rows),
            "accuracy": float(right.mean()),
            "wrong_step": _split(np.array([x.wrong > 0 for x in f]), right),
            "no_step_checked": _split(np.array([x.steps == 0 for x in f]), right),
            "answer_not_last_value": _split(
                np.array([x.ends_on_last_value is False for x in f]), right
            ),
            "no_marker": _split(np.array([not x.marker for x in f]), right),
            "no_boxed": _split(np.array([not x.boxed for x in f]), right),
            "longer_than_median": _split(long, right),
        }
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(result: dict[str, Any]) -> list[str]:
    names = [
        "wrong_step",
        "answer_not_last_value",
        "no_step_checked",
        "no_marker",
        "no_boxed",
        "longer_than_median",
    ]
    lines = [
        "| model | acc | " + " | ".join(f"{n}: share, acc on / off" for n in names) + " |",
        "|---" * (2 + len(names)) + "|",
    ]
    for model, row in sorted(result["models"].items(), key=lambda kv: kv[1]["accuracy"]):
        cells = [
            f"{row[n]['share']:.3f}, {_fmt(row[n]['acc_on'])} / {_fmt(row[n]['acc_off'])}"
            for n in names
        ]
        lines.append(f"| {model} | {row['accuracy']:.3f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.data / f"{args.split}.parquet")
    print("\n".join(table(result)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
