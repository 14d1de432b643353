"""Inputs a worker cannot hold are refused at submit: one line naming the file, the row and
the limit, exit 2, nothing queued; the limits are settings (FTQUEUE_MAX_ROW_CHARS,
FTQUEUE_MAX_INPUT_BYTES)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.settings import load_settings, reset_settings
from tests.conftest import TrainedAdapter
from tests.procs import count_jobs
from tests.test_predict import register_adapter


def submit_predict(adapter_job: int, source: Path) -> tuple[int, str]:
    args = ["submit", "predict", "--adapter-job", str(adapter_job), "--input", str(source)]
    result = CliRunner().invoke(cli, args, terminal_width=400)
    return result.exit_code, result.output


@pytest.fixture
def adapter_job(eager: str, default_adapter: TrainedAdapter) -> int:
    return register_adapter(default_adapter)


@pytest.mark.slow  # the session's adapter, trained once
def test_a_predict_row_longer_than_the_limit_is_refused_at_submit(
    adapter_job: int, tmp_path: Path
) -> None:
    source = tmp_path / "texts.csv"
    texts = ["fine", "x" * 100_001, "also fine"]
    pd.DataFrame({"id": range(3), "text": texts}).to_csv(source, index=False)
    before = count_jobs()
    code, out = submit_predict(adapter_job, source)
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert str(source) in lines[0] and "row 2" in lines[0], out
    assert "100,001 characters" in lines[0] and "100,000" in lines[0], out
    assert "FTQUEUE_MAX_ROW_CHARS" in lines[0], out
    assert count_jobs() == before


@pytest.mark.slow
def test_the_row_and_file_limits_are_settings(
    adapter_job: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "texts.csv"
    pd.DataFrame({"id": [1, 2], "text": ["short", "y" * 60]}).to_csv(source, index=False)
    before = count_jobs()
    monkeypatch.setenv("FTQUEUE_MAX_ROW_CHARS", "50")
    reset_settings()
    code, out = submit_predict(adapter_job, source)
    assert code == 2 and "row 2: 60 characters of text, over the 50 a row may hold" in out, out
    monkeypatch.setenv("FTQUEUE_MAX_ROW_CHARS", "60")
    monkeypatch.setenv("FTQUEUE_MAX_INPUT_BYTES", "20")
    reset_settings()
    code, out = submit_predict(adapter_job, source)
    assert code == 2 and str(source) in out and "over the 20 bytes limit" in out, out
    assert "FTQUEUE_MAX_INPUT_BYTES" in out and len(out.strip().splitlines()) == 1, out
    assert count_jobs() == before
    # Within both limits, the same file is queued (and, eager, run).
    monkeypatch.setenv("FTQUEUE_MAX_INPUT_BYTES", "1000")
    reset_settings()
    code, out = submit_predict(adapter_job, source)
    assert code == 0, out
    assert count_jobs() == before + 1


def test_a_training_row_longer_than_the_limit_is_refused_at_submit(
    eager: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "train.csv"
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(40)]
    rows[6]["text"] = "z" * 301
    pd.DataFrame(rows).to_csv(source, index=False)
    monkeypatch.setenv("FTQUEUE_MAX_ROW_CHARS", "300")
    reset_settings()
    args = ["submit", "lora", "--model", "synthetic:seconds=0", "--dataset", str(source)]
    result = CliRunner().invoke(cli, args, terminal_width=400)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert str(source) in line and "row 7: 301 characters of text, over the 300" in line, line
    assert count_jobs() == 0


def test_limit_settings_have_defaults_and_refuse_nonsense() -> None:
    settings = load_settings({})
    assert (settings.max_row_chars, settings.max_input_bytes) == (100_000, 2 * 1024**3)
    assert load_settings({"FTQUEUE_MAX_ROW_CHARS": "500"}).max_row_chars == 500
    from ftqueue.errors import FtqueueError

    with pytest.raises(FtqueueError, match="FTQUEUE_MAX_ROW_CHARS=0 is too small"):
        load_settings({"FTQUEUE_MAX_ROW_CHARS": "0"})
