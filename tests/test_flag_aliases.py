"""The HF Trainer's and peft's spellings of a setting get ftqueue's, on the command line and in
sweep files: one line, exit 2, nothing queued."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from ftqueue.cli import cli
from ftqueue.errors import SpecError, SweepFileError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.specs.aliases import ALIASES, own_flag
from tests.test_cli_errors import assert_one_line, invoke
from tests.test_submit_cli import job_count

SNIPPETS = ["--dataset", "movie-snippets"]


def _flags(command: str) -> set[str]:
    submit = cli.commands["submit"]
    assert isinstance(submit, click.Group)
    return {o for p in submit.commands[command].params for o in p.opts}


def _cases() -> list[tuple[str, str, str]]:
    """(command, another tool's flag, ftqueue's) for every alias, with dashes and with
    underscores, and the settings spelled only with underscores by those tools."""
    cases = []
    for theirs, ours in ALIASES.items():
        command = "lora" if ours in _flags("lora") else "evaluate"
        assert ours in _flags(command), f"{theirs} maps to {ours}, which no command has"
        cases.append((command, theirs, ours))
        cases.append((command, "--" + theirs[2:].replace("-", "_"), ours))
    for ours in ("--weight-decay", "--warmup-ratio", "--target-modules", "--eval-batch-size"):
        cases.append(("lora", "--" + ours[2:].replace("-", "_"), ours))
    return cases


@pytest.mark.parametrize(("command", "theirs", "ours"), _cases())
def test_another_tools_flag_gets_ftqueues_name(
    sqlite_url: str, command: str, theirs: str, ours: str
) -> None:
    code, out = invoke("submit", command, "--model", "minilm", *SNIPPETS, theirs, "1")
    line = assert_one_line(out)
    assert code == 2, out
    assert f"no such option {theirs}; ftqueue calls it {ours}" in line, line
    assert job_count() == 0


@pytest.mark.parametrize(
    ("theirs", "not_this"),
    [
        ("--lora-r", "--lr"),  # spelled like --lr, but peft's rank
        ("--per-device-train-batch-size", "--eval-batch-size"),
        ("--learning_rate", "--head-lr"),
    ],
)
def test_the_table_wins_over_a_guess_from_spelling(
    sqlite_url: str, theirs: str, not_this: str
) -> None:
    code, out = invoke("submit", "lora", "--model", "minilm", *SNIPPETS, theirs, "8")
    assert code == 2 and not_this not in assert_one_line(out), out


def test_a_flag_of_another_command_is_not_offered() -> None:
    # `submit evaluate` has no --r: peft's --lora-r there gets click's own message.
    assert own_flag("--lora_r", _flags("evaluate")) is None
    code, out = invoke("submit", "evaluate", "--model", "minilm", *SNIPPETS, "--lora_r", "8")
    assert code == 2 and "calls it" not in assert_one_line(out)


def test_sweep_files_and_spec_dicts_name_ftqueues_setting(tmp_path: Path) -> None:
    from ftqueue.sweeps import sweepfile

    base = {"kind": "lora", "model": "minilm", "dataset": "movie-snippets"}
    fixed = {**base, "fixed": {"learning_rate": 1e-3}, "space": {"r": [4, 8]}}
    with pytest.raises(SweepFileError) as info:
        sweepfile.parse(fixed)
    assert "fixed.learning_rate: not a lora setting; ftqueue calls it lr" in info.value.message
    space = {**base, "space": {"gradient_accumulation_steps": [1, 2]}}
    with pytest.raises(SweepFileError, match="ftqueue calls it grad_accum"):
        sweepfile.parse(space)
    wire = LoraSpec(model="minilm", data=DataSpec(dataset="movie-snippets")).to_dict()
    with pytest.raises(SpecError, match="ftqueue calls 'lora_alpha' alpha"):
        LoraSpec.from_dict({**wire, "lora_alpha": 16})
