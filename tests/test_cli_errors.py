"""Every error is one line: no traceback, no usage block, never more than 200 characters of
what the user gave."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ftqueue.cli import cli
from ftqueue.settings import reset_settings
from tests.conftest import run as invoke
from tests.procs import child_env


def assert_one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output[:3000]
    assert "Traceback" not in output and "Usage:" not in output
    return lines[0]


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("path", list(commands()), ids=" ".join)
def test_every_command_reports_a_bad_flag_in_one_line(path: tuple[str, ...]) -> None:
    code, out = invoke(*path, "--no-such-flag")
    line = assert_one_line(out)
    assert code == 2 and "--no-such-flag" in line and f"ftqueue {' '.join(path)} -h" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--r", "8.5"], "'8.5' is not valid: give whole numbers"),
        (["--seed", "0..1..2"], "a range is LOW..HIGH"),
        (["--seed", "0-2"], "written with two dots: 0..2"),
        (["--seed", "5..1"], "a range goes up"),
        (["--lr", "abc"], "'abc' is not valid: give numbers"),
        (["--pooling", "max"], "'max' is not one of"),
    ],
)
def test_malformed_flag_values_are_one_line(args: list[str], needle: str) -> None:
    code, out = invoke("submit", "lora", "--model", "minilm", "--dataset", "movie-snippets", *args)
    assert code == 2 and needle in assert_one_line(out)


def test_status_with_a_word_for_a_job_id() -> None:
    code, out = invoke("status", "twelve")
    assert code == 2 and "'twelve' is not a valid integer" in assert_one_line(out)


@pytest.mark.parametrize(
    "args",
    [
        ["status", "99999999999999999999999"],
        ["show", "0"],
        ["cancel", "1", "99999999999999999999999"],
        ["list", "--limit", "99999999999999999999"],
        ["submit", "evaluate", "--adapter-job", "99999999999999999999", "--dataset", "x.csv"],
    ],
)
def test_numbers_past_a_database_integer_are_refused_as_input(
    sqlite_url: str, args: list[str]
) -> None:
    code, out = invoke(*args)
    assert code == 2 and "9223372036854775807" in assert_one_line(out)


def test_a_twenty_digit_seed_is_quoted_exactly() -> None:
    code, out = invoke("submit", "lora", "--model", "minilm", "--dataset", "movie-snippets",
                       "--seed", "99999999999999999999")  # fmt: skip
    assert code == 2 and "got 99999999999999999999" in assert_one_line(out)


def test_a_database_url_that_is_no_url(tmp_path: Path) -> None:
    for url in ("notaurl", "postgresql+psycopg://me:s3cret@db:notaport/x"):
        env = child_env(FTQUEUE_DATABASE_URL=url)
        done = subprocess.run(
            [sys.executable, "-m", "ftqueue", "list"], env=env, capture_output=True, text=True
        )
        line = assert_one_line(done.stdout + done.stderr)
        assert done.returncode == 1 and "is not a SQLAlchemy URL" in line
        assert "s3cret" not in line


def test_report_since_far_in_the_past(sqlite_url: str) -> None:
    code, out = invoke("report", "--since", "1000000w")
    assert code == 2 and "reaches before the year 1" in assert_one_line(out)


def test_a_huge_single_line_data_file_is_not_echoed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    path = tmp_path / "one-line.csv"
    path.write_text("y" * 10_000_000)
    code, out = invoke("submit", "lora", "--model", "minilm", "--dataset", str(path))
    line = assert_one_line(out)
    assert code == 2 and len(line) < 1000 and "10,000,000 characters" in line


def test_long_values_are_quoted_short(sqlite_url: str) -> None:
    for args in (
        ["--name", "n" * 1_000_000],
        ["--tag", "t/" * 100_000],
        ["--dataset", "d" * 1_000_000],
        ["--model", "m?" * 100_000],
        ["--model", "./dir\x00name"],
        ["--dataset", "data\x00.csv"],
    ):
        base = {"--dataset": "movie-snippets", "--model": "minilm"}
        base.pop(args[0], None)
        flags = [item for pair in base.items() for item in pair]
        code, out = invoke("submit", "lora", *flags, *args)
        line = assert_one_line(out)
        assert code == 2 and len(line) < 1000, (args[0], line[:300])


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("0..100000000000000000000000", "over the limit"),
        ("7" * 5000, "5,000 digits"),
        ("1.." + "7" * 5000, "5,000 digits"),
    ],
)
def test_a_range_or_number_past_any_size_is_one_line(
    sqlite_url: str, value: str, needle: str
) -> None:
    code, out = invoke(
        "submit", "lora", "--model", "synthetic", "--dataset", "movie-snippets", "--seed", value
    )
    assert code == 2 and needle in assert_one_line(out), out[:500]
