"""The `coe` command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from api.cli import app


def test_serve_refuses_a_bad_pool_before_binding_naming_file_and_field(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("experts:\n  - {name: gemma, engine: openai, base_url: 'http://a/v1', "
                    "input_price: -1}\n")  # fmt: skip
    result = CliRunner().invoke(app, ["serve", "--pool", str(pool), "--port", "1"])
    assert result.exit_code == 2
    assert str(pool) in result.output
    assert "experts[0].input_price (expert 'gemma')" in result.output


def test_help_lists_serving_and_training_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "train", "eval", "calibrate", "data"):
        assert f" {command} " in result.output
