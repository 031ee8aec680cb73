"""Composition offline: `vote` and `select` on RouteLLM's recorded GSM8K answers vs each model.

    .venv/bin/python benchmarks/compose_offline.py [--data ../shared/data]

RouteLLM recorded GPT-4's and Mixtral's full answers to the 1,319 GSM8K test questions with a
correctness flag each (contaminated prompts excluded here, as in `coe data import`). That is
two experts, so:

- `vote` (k=2) is decided by its tie-break whenever the two disagree: the table shows both
  tie-breaks (the best-ranked expert first, as the gateway does, under a quality router and
  under the `cheapest` router). When they agree the cheaper answer is taken.
- `select` needs a judge model, and none can run offline. Its stand-in here is deterministic
  and says so: SMoA's early stop when the two answers agree (no judge call), else an
  *arithmetic-check judge* that re-computes every `a op b = c` step in each answer and picks the
  answer with fewer wrong steps (ties: the best-ranked expert). The cost column charges a real
  GPT-4 judge call (both answers in, 2 tokens out) on every disagreement, so the cost is what
  `select` with a GPT-4 judge would pay; its accuracy is the proxy's, not GPT-4's.

Answers are compared by `router.answers.normalise` (the gateway's own code). Every
row, single models included, is scored by one grader: `training.grading.grade_number` against
the gold answers in `benchsets/gsm8k_test.jsonl` (scoring composed answers by RouteLLM's
per-response flags instead would count its grading noise as a gain: two answers with the same
final number are sometimes flagged differently). The recorded accuracies are printed for
reference, with how often our grader agrees with them. Costs are ESTIMATED (list price × tokens
counted with the MiniLM WordPiece tokenizer), as in `training.loaders.routellm`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from router.answers import normalise
from training.grading import grade_number
from training.loaders import LoadOptions
from training.loaders.routellm import PRICES, load_routellm
from training.tokens import TokenCounter

GPT4, MIXTRAL = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
_STEP = re.compile(
    r"(-?\d[\d,]*(?:\.\d+)?)\s*([-+*/x×÷])\s*(-?\d[\d,]*(?:\.\d+)?)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)"
)


def wrong_steps(text: str) -> int:
    """Arithmetic steps `a op b = c` in `text` whose result is wrong (the judge proxy)."""
    wrong = 0
    for a, op, b, c in _STEP.findall(text):
        x, y, z = (float(v.replace(",", "")) for v in (a, b, c))
        if op in "x×*":
            value = x * y
        elif op in "/÷":
            if y == 0:
                continue
            value = x / y
        else:
            value = x + y if op == "+" else x - y
        wrong += abs(value - z) > 1e-6 * max(1.0, abs(value))
    return wrong


def rows(data: Path) -> list[dict[str, Any]]:
    """Per question: each model's answer, its recorded flag, our grade and estimated cost."""
    gold = {}
    for line in (data / "benchsets" / "gsm8k_test.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold[row["question"]] = row["answer"].split("####")[-1].strip()
    frame = load_routellm([data / "routellm" / "gsm8k"], LoadOptions())["all"]
    by_query: dict[str, dict[str, Any]] = {}
    for r in frame.itertuples():
        if r.prompt not in gold:
            continue
        text = r.response or ""
        entry = by_query.setdefault(r.query_id, {"prompt": r.prompt})
        entry[r.model] = {
            "recorded": r.score,
            "score": grade_number(text, gold[r.prompt]),
            "cost": r.cost_usd,
            "text": text,
        }
    return [q for q in by_query.values() if GPT4 in q and MIXTRAL in q]


def judge_cost(query: dict[str, Any], counter: TokenCounter) -> float:
    text = query["prompt"] + query[GPT4]["text"] + query[MIXTRAL]["text"]
    inp, out = PRICES[GPT4]
    return (counter.count([text])[0] * inp + 2 * out) / 1e6


def evaluate(queries: list[dict[str, Any]]) -> list[tuple[str, float, float, str]]:
    counter = TokenCounter()
    n = len(queries)
    table: list[tuple[str, float, float, str]] = []
    for model in (GPT4, MIXTRAL):
        acc = sum(q[model]["score"] for q in queries) / n
        recorded = sum(q[model]["recorded"] for q in queries) / n
        cost = sum(q[model]["cost"] for q in queries) / n
        table.append((f"single {model}", acc, cost, f"recorded grading: {recorded:.3f}"))
    both = sum(q[GPT4]["cost"] + q[MIXTRAL]["cost"] for q in queries) / n
    oracle = sum(max(q[GPT4]["score"], q[MIXTRAL]["score"]) for q in queries) / n
    table.append(("oracle (either right)", oracle, both, "upper bound"))
    agree = [normalise(q[GPT4]["text"]) == normalise(q[MIXTRAL]["text"]) for q in queries]
    for first, label in ((GPT4, "quality router"), (MIXTRAL, "cheapest router")):
        score = sum(
            q[MIXTRAL]["score"] if same else q[first]["score"]
            for q, same in zip(queries, agree, strict=True)
        )
        name = f"vote k=2, ties → {first.split('/')[-1].split('-Instruct')[0]}"
        table.append((name, score / n, both, f"tie-break of a {label}"))
    picked, judged, cost = 0.0, 0, 0.0
    for q, same in zip(queries, agree, strict=True):
        cost += q[GPT4]["cost"] + q[MIXTRAL]["cost"]
        if same:
            picked += q[MIXTRAL]["score"]
            continue
        judged += 1
        cost += judge_cost(q, counter)
        choice = MIXTRAL if wrong_steps(q[MIXTRAL]["text"]) < wrong_steps(q[GPT4]["text"]) else GPT4
        picked += q[choice]["score"]
    note = f"judge called on {judged}/{n} ({judged / n:.0%}); early stop on the rest"
    table.append(("select k=2 (arithmetic-check proxy judge)", picked / n, cost / n, note))
    return table


def grader_agreement(queries: list[dict[str, Any]]) -> tuple[float, int]:
    pairs = [(q[m]["score"], q[m]["recorded"]) for q in queries for m in (GPT4, MIXTRAL)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs)), len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    queries = rows(args.data)
    print(f"RouteLLM GSM8K, {len(queries)} questions (contaminated prompts excluded)")
    print("accuracy: our number grader against the gold answers, for every row")
    print("costs ESTIMATED: list price x MiniLM-counted tokens of prompt and recorded answer\n")
    print(f"| {'strategy':<44} | accuracy | USD/query | note")
    print(f"|{'-' * 46}|----------|-----------|-----")
    for name, acc, cost, note in evaluate(queries):
        print(f"| {name:<44} | {acc:8.3f} | {cost:9.6f} | {note}")
    agreement, total = grader_agreement(queries)
    print(
        f"\nour GSM8K grader agrees with RouteLLM's grading on {agreement:.1%} of {total} answers"
    )


if __name__ == "__main__":
    main()
