"""The multi-model loaders (`mmlu-pro`, `zeroeval`) and RouterBench's `--on-missing`.

Fixtures under `fixtures/mmlu_pro`, `fixtures/zeroeval` are records cut from
`shared/data/multimodel` (replies shortened to their last 1,500 characters): one model lacks a
question, MMLU-Pro question 2394 has a different gold letter in gemini's file than in the others
(the benchmark was corrected between runs), one Mistral reply states no letter, one Llama-405B
reply is not JSON. `fixtures/mmlu_pro_bad` holds a record whose options are not a list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dataset import to_routing_data
from training.errors import DataError
from training.importing import import_dataset
from training.loaders import LOADERS, LoadOptions
from training.loaders.mmlu_pro import mmlu_pro_prompt

FIX = Path(__file__).parent / "fixtures"


def _row(frame: object, query_id: str, model: str) -> dict[str, object]:
    rows = frame[(frame["query_id"] == query_id) & (frame["model"] == model)]  # type: ignore[index]
    assert len(rows) == 1
    return dict(rows.iloc[0])


def test_mmlu_pro_common_questions_and_coe_grades() -> None:
    opts = LoadOptions()
    frame = LOADERS["mmlu-pro"]([FIX / "mmlu_pro"], opts)["all"]
    data = to_routing_data(frame)
    # 7 questions: one gemini lacks, one whose gold differs between files.
    assert len(data.query_ids) == 5 and len(data.models) == 3
    assert "mmlu_pro-2394" not in data.query_ids and "mmlu_pro-2693" not in data.query_ids
    assert any("1 dropped (gemini-1.5-pro-002 lacks 1)" in n for n in opts.notes)
    assert any("gold answer or text differs" in n for n in opts.notes)
    assert any("agreement with the benchmark's pred" in n for n in opts.notes)
    assert any("all-MiniLM-L6-v2 WordPiece" in n for n in opts.notes)
    first = _row(frame, "mmlu_pro-11285", "gemini-1.5-pro-002")
    assert first["response"] == "The answer is (C).\n" and first["answer"] == "C"
    assert first["score"] == 1.0 and first["task"] == "engineering"
    assert str(first["prompt"]).endswith("(I) 8\n(J) 4")
    # Mistral's reply to question 93 states no letter: scored 0, no answer.
    import pandas as pd

    silent = _row(frame, "mmlu_pro-93", "Mistral-7B-Instruct-v0.2")
    assert silent["score"] == 0.0 and pd.isna(silent["answer"])
    # the benchmark's gold, on every model's row (what `coe profile --from-training` grades by)
    assert (frame.groupby("query_id")["gold"].nunique() == 1).all()
    assert (
        first["gold"] == "C"
        and silent["gold"] == _row(frame, "mmlu_pro-93", "gemini-1.5-pro-002")["gold"]
    )
    assert frame["cost_estimated"].all() and (frame["cost_usd"] > 0).all()


def test_mmlu_pro_cost_is_tokens_times_price() -> None:
    frame = LOADERS["mmlu-pro"]([FIX / "mmlu_pro"], LoadOptions())["all"]
    from training.tokens import TokenCounter

    row = _row(frame, "mmlu_pro-11286", "gemini-1.5-pro-002")
    n_in, n_out = TokenCounter().count([str(row["prompt"]), str(row["response"])])
    assert row["cost_usd"] == pytest.approx((n_in * 1.25 + n_out * 5.0) / 1e6)
    assert (row["input_price"], row["output_price"]) == (1.25, 5.0)


def test_mmlu_pro_malformed_record_names_file_and_row() -> None:
    with pytest.raises(DataError, match="'options' must be a list") as info:
        LOADERS["mmlu-pro"]([FIX / "mmlu_pro_bad"], LoadOptions())
    assert info.value.row == 2 and "Meta-Llama-3_1-8B-Instruct.json.xz" in str(info.value)


def test_mmlu_pro_without_prices_says_what_to_pass(tmp_path: Path) -> None:
    folder = tmp_path / "mmlu"
    folder.mkdir()
    for src in (FIX / "mmlu_pro").glob("*.json.xz"):
        (folder / src.name).write_bytes(src.read_bytes())
    with pytest.raises(DataError, match="pass --prices"):
        LOADERS["mmlu-pro"]([folder], LoadOptions())
    with pytest.raises(DataError, match="no \\[input, output\\] price"):
        LOADERS["mmlu-pro"]([folder], LoadOptions(prices=FIX / "zeroeval" / "prices.json"))


def test_mmlu_pro_prompt_lists_options() -> None:
    assert mmlu_pro_prompt(" Q? ", ["x", "y"]) == "Q?\n\n(A) x\n(B) y"


def test_zeroeval_gsm_and_math_in_one_frame() -> None:
    opts = LoadOptions()
    sources = [FIX / "zeroeval" / "gsm", FIX / "zeroeval" / "math-l5"]
    frame = LOADERS["zeroeval"](sources, opts)["all"]
    data = to_routing_data(frame)
    assert len(data.query_ids) == 10 and len(data.models) == 3
    assert set(frame["task"]) == {"gsm", "math-l5"}
    assert sum("lacks 1" in n for n in opts.notes) == 2
    gsm = _row(frame, "zeroeval-gsm-gsm8k-main-test-#0", "gpt-4o-2024-08-06")
    assert gsm["answer"] == "18" and gsm["score"] == 1.0
    assert str(gsm["prompt"]).startswith("Janet")  # the question, not ZeroEval's template
    wrong = _row(frame, "zeroeval-gsm-gsm8k-main-test-#2", "gemma-2-2b-it")
    assert wrong["answer"] == "-10000" and wrong["score"] == 0.0
    # Not JSON: the last \boxed{} counts (85; the gold is 161).
    boxed = _row(frame, "zeroeval-math-l5-8", "Llama-3.1-405B-Inst@sambanova")
    assert boxed["answer"] == "85" and boxed["score"] == 0.0
    assert boxed["gold"] == "161"
    right = _row(frame, "zeroeval-math-l5-0", "gpt-4o-2024-08-06")
    assert right["answer"] == "-15" and right["score"] == 1.0
    assert frame["response"].map(lambda r: isinstance(r, str) and len(r) > 0).all()


def test_zeroeval_prompt_tokens_count_what_was_sent() -> None:
    frame = LOADERS["zeroeval"]([FIX / "zeroeval" / "gsm"], LoadOptions())["all"]
    from training.tokens import TokenCounter

    row = _row(frame, "zeroeval-gsm-gsm8k-main-test-#0", "gpt-4o-2024-08-06")
    counter = TokenCounter()
    n_out = counter.count([str(row["response"])])[0]
    n_in = round((row["cost_usd"] * 1e6 - n_out * 10.0) / 2.5)
    assert n_in > counter.count([str(row["prompt"])])[0] + 30  # the instruction was sent too


def test_import_writes_summary_with_accuracy_and_cost(tmp_path: Path) -> None:
    opts = LoadOptions()
    written = import_dataset(
        "zeroeval", [FIX / "zeroeval" / "math-l5"], tmp_path, opts, test_fraction=0.4, seed=0
    )
    assert [p.name for p, _, _ in written] == ["train.parquet", "test.parquet"]
    assert sum(q for _, _, q in written) == 5
    summary = (tmp_path / "import_summary.txt").read_text()
    assert "all (before the split): 5 queries" in summary
    assert "gpt-4o-2024-08-06" in summary and "accuracy 0.400" in summary


# --on-missing on RouterBench's wide CSV: rb-3 has no score for small-b.


def test_on_missing_error_says_to_drop() -> None:
    with pytest.raises(DataError, match="use --on-missing drop") as info:
        LOADERS["routerbench"]([FIX / "routerbench_nan_score.csv"], LoadOptions())
    assert info.value.row == 3 and "no score" in str(info.value)


def test_on_missing_drop_removes_incomplete_queries() -> None:
    opts = LoadOptions(on_missing="drop")
    frame = LOADERS["routerbench"]([FIX / "routerbench_nan_score.csv"], opts)["all"]
    assert sorted(set(frame["query_id"])) == ["rb-1", "rb-2", "rb-4"]
    assert len(frame) == 6 and any("dropped 1 of 4 queries" in n for n in opts.notes)
    assert _row(frame, "rb-4", "small-b")["response"] == "O2"


def test_on_missing_drop_also_covers_missing_costs() -> None:
    opts = LoadOptions(on_missing="drop")
    frame = LOADERS["routerbench"]([FIX / "routerbench_no_cost.csv"], opts)["all"]
    assert "rb-2" not in set(frame["query_id"])


def test_cli_import_prints_summary_and_plumbs_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    runner = CliRunner()
    args = ["data", "import", str(FIX / "mmlu_pro"), "--format", "mmlu-pro", "--out"]
    prices = ["--prices", str(FIX / "mmlu_pro" / "prices.json")]
    done = runner.invoke(app, [*args, str(tmp_path / "m"), *prices, "--test-fraction", "0.4"])
    assert done.exit_code == 0, done.output
    assert "5 questions kept" in done.output and "test: 2 queries" in done.output
    csv = str(FIX / "routerbench_nan_score.csv")
    refused = runner.invoke(
        app, ["data", "import", csv, "--format", "routerbench", "--out", str(tmp_path / "r")]
    )
    assert refused.exit_code == 2 and "--on-missing drop" in refused.output
    rb = ["data", "import", csv, "--format", "routerbench", "--out", str(tmp_path / "r")]
    dropped = runner.invoke(app, [*rb, "--on-missing", "drop"])
    assert dropped.exit_code == 0 and "dropped 1 of 4 queries" in dropped.output
    wrong = runner.invoke(app, [*args, str(tmp_path / "x"), "--on-missing", "skip"])
    assert wrong.exit_code != 0 and "--on-missing" in wrong.output


def test_import_drops_test_queries_duplicating_a_training_prompt(tmp_path: Path) -> None:
    # fixtures/mmlu_pro_dupes: 10 real questions of which 902/903, 974/975 and 984/985 are the
    # same question and options under two ids (61 such test queries on the real seed-0 split).
    opts = LoadOptions(prices=FIX / "mmlu_pro_dupes" / "prices.json")
    written = import_dataset("mmlu-pro", [FIX / "mmlu_pro_dupes"], tmp_path, opts, 0.4, seed=0)
    assert [q for _, _, q in written] == [6, 2]
    import pandas as pd

    train = pd.read_parquet(tmp_path / "train.parquet")
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert not test["prompt"].isin(set(train["prompt"])).any()
    # one pair trains under both ids; of the other two, one twin each trained, the other left
    assert train["prompt"].nunique() == 5
    note = "2 test queries dropped: the same prompt text is a training query's under another id"
    assert any(n.startswith(note) for n in opts.notes)
    assert note in (tmp_path / "import_summary.txt").read_text()


def test_import_keeps_a_duplicate_pair_that_falls_wholly_in_test(tmp_path: Path) -> None:
    opts = LoadOptions(prices=FIX / "mmlu_pro_dupes" / "prices.json")
    written = import_dataset("mmlu-pro", [FIX / "mmlu_pro_dupes"], tmp_path, opts, 0.4, seed=4)
    assert [q for _, _, q in written] == [6, 3]
    assert any(n.startswith("1 test query dropped") for n in opts.notes)
