"""Sweep files that are hostile or huge: each refused in one line, quickly, before anything is
written (the generated cases are in test_input_properties.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import func, select

from ftqueue.cli import cli
from ftqueue.errors import SweepFileError
from ftqueue.store import db
from ftqueue.store.schema import Job, Sweep
from ftqueue.sweeps import sweepfile

BASE: dict[str, Any] = {
    "model": "synthetic:seconds=0.05,steps=6",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 3},
    "space": {"lr": [1e-4, 3e-4]},
}
RANDOM: dict[str, Any] = {**BASE, "method": "random", "budget": {"max_jobs": 3}}
# Seven levels of nine: 9**7 (4.8 million) strings when expanded, 70 lines as text.
BOMB = "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9) if p else ', '.join('x' * 9)}]\n"
    for p, k in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg", strict=True)
)


def _file(tmp_path: Path, data: str | bytes | dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, dict):
        data = yaml.safe_dump(data)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def refused(path: Path, needle: str) -> str:
    start = time.perf_counter()
    with pytest.raises(SweepFileError) as info:
        sweepfile.load(path)
    message = str(info.value)
    # A bound, not a benchmark: unbounded, these took 50 s, ran out of memory, or never ended.
    assert time.perf_counter() - start < 5.0
    assert "\n" not in message and len(message) <= 300 + len(str(path)), message
    assert needle in message, message
    return message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"model: \xff\xfe\n", "not UTF-8"),
        (BOMB + "model: *g\n", "aliases"),
        (BOMB.replace("model", "kind") + "kind: *g\n", "aliases"),
        ("a: &a [*a]\nmodel: *a\n", "aliases"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("model: " + "9" * 5000 + "\n", "not valid YAML/TOML"),
        ({**BASE, "space": {"lr": [{"a": 1}]}}, "space.lr: each value must be"),
        ({**BASE, "space": {"lr": [[1e-4, [1e-3]]]}}, "space.lr: each value must be"),
        ({**BASE, 1: 2, "x": 3}, "keys must be text"),
        ({**BASE, "space": {"lr": [1e-4], 3: [1]}}, "space: keys must be text"),
        ({**BASE, "fixed": {None: 1}}, "fixed: keys must be text"),
        ({**RANDOM, "space": {"r": {"low": 1, "high": float("inf")}}}, "must be a finite number"),
        ({**RANDOM, "space": {"lr": {"low": float("nan"), "high": 1}}}, "must be a finite number"),
        ({**BASE, "tags": ["a/../b" * 30]}, "tags: tag "),
        ({**BASE, "tags": ["ok", "\x1b[31mred"]}, "tags: tag "),
        ({**BASE, "name": "x" * 100}, "name: "),
        ({**BASE, "kind": "k" * 100_000}, "characters)"),
        ({**BASE, "method": ["m" * 100_000]}, "characters)"),
        ({**BASE, "seed": "s" * 100_000}, "characters)"),
        ({**BASE, "space": {"s" * 100_000: [1]}}, "characters)"),
    ],
)
def test_a_hostile_sweep_file_is_refused_in_one_short_line(
    tmp_path: Path, data: Any, needle: str
) -> None:
    refused(_file(tmp_path, data), needle)


def test_a_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = _file(tmp_path, "# " + "x" * sweepfile.MAX_BYTES + "\n" + yaml.safe_dump(BASE))
    refused(path, "larger than 1 MiB")


def test_a_grid_past_the_cap_is_refused_at_once_with_or_without_max_parallel(
    tmp_path: Path,
) -> None:
    big = {"lr": [1e-5 * (i + 1) for i in range(200)], "r": list(range(1, 201))}
    refused(_file(tmp_path, {**BASE, "space": big, "budget": {"max_parallel": 2}}), "40,000")
    refused(_file(tmp_path, {**BASE, "space": big}), "FTQUEUE_MAX_GRID")
    huge = {**big, "seed": list(range(1000)), "alpha": [1, 2, 4, 8, 16, 32, 64]}
    refused(_file(tmp_path, {**BASE, "space": huge, "budget": {"max_parallel": 2}}), "grid")


def test_a_grid_under_the_cap_and_an_explicit_budget_still_plan(tmp_path: Path) -> None:
    big = {"lr": [1e-5 * (i + 1) for i in range(200)], "r": list(range(1, 201))}
    plan = sweepfile.load(_file(tmp_path, {**BASE, "space": big, "budget": {"max_jobs": 50}}))
    assert plan.max_jobs == 50
    assert sweepfile.load(_file(tmp_path, {**BASE, "tags": ["a", "b-1"]})).tags == ("a", "b-1")


def test_through_the_command_exit_2_one_line_nothing_written(
    sqlite_url: str, tmp_path: Path
) -> None:
    for data in (b"\xff", BOMB + "model: *g\n", {**BASE, "tags": ["t" * 100]}):
        path = _file(tmp_path, data)
        result = CliRunner().invoke(cli, ["sweep", str(path)], prog_name="ftqueue")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        with db.session_scope() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0
            assert session.scalar(select(func.count()).select_from(Sweep)) == 0


def test_a_list_of_more_values_than_the_grid_cap_is_refused_before_its_checks(
    tmp_path: Path,
) -> None:
    # Every listed value is checked against the kind's rules: 20,000 of them took seconds.
    seeds = {**RANDOM, "space": {"seed": list(range(20_000))}}
    text = yaml.safe_dump(seeds, default_flow_style=True, width=10**9)
    refused(_file(tmp_path, text), "space.seed: 20,000 values")


def test_as_a_process_exit_2_one_line_on_stderr_in_seconds(sqlite_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.procs import child_env

    big = {"lr": [1e-5 * (i + 1) for i in range(200)], "r": list(range(1, 201))}
    for data in (BOMB + "model: *g\n", {**BASE, "space": big, "budget": {"max_parallel": 2}}):
        path = _file(tmp_path, data)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ftqueue", "sweep", str(path)],
            env=child_env(FTQUEUE_DATABASE_URL=sqlite_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert time.perf_counter() - start < 30
        assert done.returncode == 2 and done.stdout == "", done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0
