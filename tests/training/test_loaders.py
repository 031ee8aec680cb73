"""Every loader on a fixture of its format, and every malformed file rejected by file and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dataset import read_dataset, to_routing_data, validate
from training.errors import DataError
from training.loaders import LOADERS, LoadOptions
from training.loaders.routerbench import parse_prompt

FIX = Path(__file__).parent / "fixtures"
OPTS = LoadOptions()


def test_routerbench_wide_csv() -> None:
    frame = LOADERS["routerbench"]([FIX / "routerbench.csv"], OPTS)["all"]
    assert len(frame) == 8 and set(frame["model"]) == {"gpt-a", "small-b"}
    assert not frame["cost_estimated"].any()
    row = frame[(frame["query_id"] == "rb-2") & (frame["model"] == "small-b")].iloc[0]
    assert row["prompt"] == "You are helpful.\n\nName the capital of France."
    assert row["cost_usd"] == pytest.approx(8e-05) and row["response"] == "Paris"
    data = to_routing_data(frame)
    assert data.scores.shape == (4, 2) and list(data.tasks) == ["gsm8k", "mmlu", "gsm8k", "mmlu"]


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("routerbench_nan_score.csv", 3, "no score"),
        ("routerbench_no_cost.csv", 2, "no cost"),
        ("routerbench_bad_prompt.csv", 4, "not a Python list"),
    ],
)
def test_routerbench_malformed(name: str, row: int, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        LOADERS["routerbench"]([FIX / name], OPTS)
    assert info.value.row == row and name in str(info.value)


def test_parse_prompt_keeps_plain_strings() -> None:
    assert parse_prompt("plain text") == "plain text"
    assert parse_prompt("['a', 'b']") == "a\n\nb"


@pytest.mark.parametrize("name", ["long.jsonl", "long.csv"])
def test_long_format(name: str, tmp_path: Path) -> None:
    frame = LOADERS["long"]([FIX / name], OPTS)["all"]
    assert len(frame) == 4
    parquet = tmp_path / "x.parquet"
    frame.to_parquet(parquet)
    again = read_dataset(parquet)
    data = to_routing_data(again)
    assert list(data.models) == ["m1", "m2"] and data.scores[1, 1] == 0.75


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("long_duplicate.jsonl", 5, "duplicate"),
        ("long_missing_column.csv", None, "missing column"),
        ("long_nan_score.csv", 3, "NaN"),
        ("long_no_cost.jsonl", 4, "'m2' has no cost"),
    ],
)
def test_long_malformed(name: str, row: int | None, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        read_dataset(FIX / name)
    assert info.value.row == row and name in str(info.value)


def test_incomplete_matrix_names_the_hole() -> None:
    frame = read_dataset(FIX / "long_incomplete.jsonl")
    with pytest.raises(DataError, match="query 'b' has no row for model 'm2'"):
        to_routing_data(frame, "long_incomplete.jsonl")


def test_out_of_range_score() -> None:
    import pandas as pd

    frame = pd.read_json(FIX / "long.jsonl", lines=True)
    frame.loc[1, "score"] = 7
    with pytest.raises(DataError, match=r"row 2: score outside \[0, 1\]"):
        validate(frame, "mem")


def test_unknown_extension(tmp_path: Path) -> None:
    bad = tmp_path / "x.txt"
    bad.write_text("")
    with pytest.raises(DataError, match="unknown extension"):
        read_dataset(bad)


def test_llmrouter_folder_drops_test_overlap_and_estimates_cost() -> None:
    splits = LOADERS["llmrouter"]([FIX / "llmrouter"], LoadOptions(output_tokens=100))
    train, test = splits["train"], splits["test"]
    assert train["query_id"].nunique() == 3
    assert test["prompt"].unique().tolist() == ["What is 9*9?"]  # the shared question is gone
    assert train["cost_estimated"].all()
    row = train[(train["task"] == "gsm8k") & (train["model"] == "big")].iloc[0]
    # price 0.9 USD/1M × (prompt tokens + 100 assumed output tokens)
    tokens = row["cost_usd"] * 1e6 / 0.9 - 100
    assert 3 <= tokens <= 12


def test_llmrouter_model_without_price() -> None:
    with pytest.raises(DataError, match="'small' has no price") as info:
        LOADERS["llmrouter"]([FIX / "llmrouter_unpriced"], OPTS)
    assert info.value.row == 1


def test_routellm_drops_contaminated_prompts() -> None:
    clean = LOADERS["routellm"]([FIX / "routellm" / "mmlu"], OPTS)["all"]
    assert clean["query_id"].nunique() == 2 and set(clean["task"]) == {"anatomy"}
    dirty = LOADERS["routellm"]([FIX / "routellm" / "mmlu"], LoadOptions(include_contaminated=True))
    assert dirty["all"]["query_id"].nunique() == 3
    gpt = clean[clean["model"] == "gpt-4-1106-preview"]["cost_usd"].mean()
    mix = clean[clean["model"] != "gpt-4-1106-preview"]["cost_usd"].mean()
    assert gpt > 20 * mix


def test_routellm_bad_value() -> None:
    with pytest.raises(DataError, match="expected True/False") as info:
        LOADERS["routellm"]([FIX / "routellm_bad.csv"], OPTS)
    assert info.value.row == 2


def test_routellm_gsm8k_counts_response_tokens() -> None:
    frame = LOADERS["routellm"]([FIX / "routellm"], LoadOptions(output_tokens=1000))["all"]
    gsm = frame[frame["task"] == "gsm8k"]
    assert gsm["query_id"].nunique() == 2  # the contaminated first row is gone
    row = gsm[(gsm["prompt"] == "Half of 9?") & (gsm["model"] == "gpt-4-1106-preview")].iloc[0]
    assert row["response"].endswith("#### 4.5")
    assert row["cost_usd"] < 200 * 30 / 1e6  # counted, not the assumed 1000 output tokens
