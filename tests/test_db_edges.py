"""Database edges: ids past the integer column, a sweep cancelled before its first trial."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.store import db
from ftqueue.store.schema import Sweep

#: Past PostgreSQL's 32-bit INTEGER (the type of jobs.id), within a 64-bit one.
PAST = "99999999999"


@pytest.mark.parametrize(
    "args",
    [
        ["show", PAST],
        ["status", PAST],
        ["cancel", "1", PAST],
        ["logs", PAST],
        ["logs", "1", "--attempt", PAST],
        ["predict", PAST, "some text"],
        ["export", PAST, "out"],
        ["list", "--before", PAST],
        [
            "submit",
            "evaluate",
            "--adapter-job",
            PAST,
            "--model",
            "synthetic:seconds=0",
            "--dataset",
            "movie-snippets",
        ],
    ],
)
def test_an_id_past_the_integer_column_is_one_line(any_db_url: str, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, prog_name="ftqueue")
    assert not result.exception or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output[:3000]
    assert PAST in lines[0] and "Traceback" not in result.output


def test_cancelling_a_sweep_with_no_trials_is_one_coherent_message(any_db_url: str) -> None:
    with db.session_scope(write=True) as s:
        s.add(Sweep(id="empty", kind="lora", method="grid", definition={}, max_jobs=4,
                    max_parallel=2))  # fmt: skip
    result = CliRunner().invoke(cli, ["cancel", "--sweep", "empty"], prog_name="ftqueue")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "sweep empty: stopped; it makes no more trials",
        "sweep empty: it had no trials to cancel",
    ]
    with db.session_scope() as s:
        sweep = s.get(Sweep, "empty")
        assert sweep is not None and sweep.status == "cancelled"
    # An unknown sweep is still an error.
    result = CliRunner().invoke(cli, ["cancel", "--sweep", "nope"], prog_name="ftqueue")
    assert result.exit_code != 0 and "no jobs in sweep 'nope'" in result.output
