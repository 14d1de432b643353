"""Properties of the parsers of user input, on generated input (Hypothesis).

The property: the input is accepted, or refused with one of ftqueue's errors whose message
is one line of at most ~300 characters, quickly; never another exception. Through the
command: exit 2, one line on stderr, nothing written. Examples are derandomized so that CI
runs the same ones every time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ftqueue.cli import cli
from ftqueue.errors import FtqueueError
from ftqueue.store import db
from ftqueue.store.schema import Job, Sweep
from ftqueue.sweeps import sweepfile
from ftqueue.sweeps.plan import SweepPlan

#: Each example's time bound, in seconds: generous for a loaded CI machine.
EXAMPLE_SECONDS = 5.0
#: How long an error's text may be, past the file name it starts with.
MESSAGE_CHARS = 300

CI = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BASE: dict[str, Any] = {
    "model": "synthetic:seconds=0.05,steps=6",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 3},
    "space": {"lr": [1e-4, 3e-4], "r": [4, 8]},
    "method": "grid",
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    # Long enough to need clipping in a message.
    st.text(min_size=300, max_size=400),
    st.sampled_from(["lr", "r", "grid", "random", "asha", "low", "high", "log", "int"]),
)
keys = st.one_of(
    st.sampled_from([*sweepfile.TOP_KEYS, "lr", "r", "alpha", "seed", "low", "high", "log"]),
    st.text(max_size=20),
    st.text(min_size=300, max_size=400),
    st.integers(),
    st.none(),
    st.booleans(),
)
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def check(path: Path) -> SweepPlan | None:
    """Load ``path``: a plan, or None after checking the error against the property."""
    start = time.perf_counter()
    try:
        return sweepfile.load(path)
    except FtqueueError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert len(message) <= MESSAGE_CHARS + len(str(path)), message
        return None
    finally:
        assert time.perf_counter() - start < EXAMPLE_SECONDS


def _write(tmp_path: Path, data: bytes, suffix: str) -> Path:
    path = tmp_path / f"sweep{suffix}"
    path.write_bytes(data)
    return path


@CI
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".yaml", ".toml"]))
def test_any_bytes_are_a_plan_or_one_line(tmp_path: Path, data: bytes, suffix: str) -> None:
    check(_write(tmp_path, data, suffix))


@CI
@given(text=st.text(max_size=400), suffix=st.sampled_from([".yaml", ".toml"]))
def test_any_text_is_a_plan_or_one_line(tmp_path: Path, text: str, suffix: str) -> None:
    check(_write(tmp_path, text.encode("utf-8", "surrogatepass"), suffix))


@CI
@given(value=nested)
def test_any_structure_dumped_to_yaml_is_a_plan_or_one_line(tmp_path: Path, value: Any) -> None:
    check(_write(tmp_path, yaml.safe_dump(value).encode(), ".yaml"))


@CI
@given(
    path=st.lists(
        st.sampled_from(sorted({*sweepfile.TOP_KEYS, *BASE["space"], "max_jobs", "low", "eta"})),
        max_size=2,
    ),
    value=nested,
    extra=st.dictionaries(keys, nested, max_size=2),
)
def test_a_valid_file_with_any_part_replaced_is_a_plan_or_one_line(
    tmp_path: Path, path: list[str], value: Any, extra: dict[Any, Any]
) -> None:
    check(_write(tmp_path, _replaced(path, value, extra), ".yaml"))


def _replaced(path: list[str], value: Any, extra: dict[Any, Any]) -> bytes:
    """The base file with the value at ``path`` replaced (or ``extra`` added to its space)."""
    raw: Any = yaml.safe_load(yaml.safe_dump(BASE))
    if path:
        target = raw
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value
    else:
        raw["space"] = {**raw["space"], **extra}
    return yaml.safe_dump(raw).encode()


@settings(CI, max_examples=20)
@given(
    data=st.binary(min_size=1, max_size=200)
    | nested.map(lambda v: yaml.safe_dump(v).encode())
    | st.builds(
        _replaced,
        st.lists(st.sampled_from(["space", "lr", "tags", "name"]), max_size=2),
        nested,
        st.just({}),
    )
)
def test_through_the_command_exit_2_one_line_nothing_written(
    sqlite_url: str, tmp_path: Path, data: bytes
) -> None:
    path = _write(tmp_path, data, ".yaml")
    assume(check(path) is None)
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["sweep", str(path)], prog_name="ftqueue")
    assert time.perf_counter() - start < EXAMPLE_SECONDS
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, (result.exception, result.output)
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0


def test_the_base_file_is_a_plan(tmp_path: Path) -> None:
    assert check(_write(tmp_path, yaml.safe_dump(BASE).encode(), ".yaml")) is not None


# Dataset and predict input files: the same property, through the readers submit calls.

cells = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(keys, scalars, max_size=2)
)
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "x"]), cells), max_size=8)


def _rows_file(tmp_path: Path, records: list[dict[str, Any]], suffix: str) -> Path:
    import json

    if suffix == ".jsonl":
        data = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
    elif suffix == ".json":
        data = json.dumps(records, default=str).encode()
    else:
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["text", "label", "x"])
        writer.writeheader()
        writer.writerows(records)
        data = out.getvalue().encode("utf-8", "surrogatepass")
    return _write(tmp_path, data, suffix)


def check_input(read: Any, path: Path) -> None:
    """``read(path)`` returns, or raises one of ftqueue's errors in one short line, quickly."""
    start = time.perf_counter()
    try:
        read(path)
    except FtqueueError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert len(message) <= MESSAGE_CHARS + len(str(path)), message
    finally:
        assert time.perf_counter() - start < EXAMPLE_SECONDS


def _predict_input(path: Path) -> None:
    from ftqueue.inputs.unlabelled import read_texts

    read_texts(str(path), "text")


def _dataset(path: Path) -> None:
    from ftqueue.inputs.labelled import check_dataset
    from ftqueue.specs import DataSpec

    check_dataset(DataSpec(dataset=str(path)))


readers = st.sampled_from([_predict_input, _dataset])


@CI
@given(read=readers, data=st.binary(max_size=400),
       suffix=st.sampled_from([".csv", ".jsonl", ".json", ".parquet"]))  # fmt: skip
def test_any_bytes_as_an_input_file_are_read_or_one_line(
    tmp_path: Path, read: Any, data: bytes, suffix: str
) -> None:
    check_input(read, _write(tmp_path, data, suffix))


@CI
@given(read=readers, records=rows, suffix=st.sampled_from([".csv", ".jsonl", ".json"]))
def test_any_rows_in_an_input_file_are_read_or_one_line(
    tmp_path: Path, read: Any, records: list[dict[str, Any]], suffix: str
) -> None:
    check_input(read, _rows_file(tmp_path, records, suffix))


# Values of the command line's flags: grids and ranges, job ids.

numbers = st.one_of(
    st.integers().map(str),
    # Past a database integer, past a C ssize_t, past Python's 4,300 digits of int().
    st.integers(min_value=2**62, max_value=10**40).map(str),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "7" * n),
)
flag_values = st.one_of(
    st.text(max_size=60),
    st.builds(lambda a, b: f"{a}..{b}", numbers, numbers),
    st.lists(numbers | st.text(max_size=8), min_size=1, max_size=4).map(",".join),
)


@CI
@given(value=flag_values, kind=st.sampled_from(["ints", "floats", "jobs"]))
def test_any_grid_value_is_a_checked_grid_or_one_line(value: str, kind: str) -> None:
    import click

    from ftqueue.cli.options import FLOATS, INTS, JOBS, expand

    grid = {"ints": INTS, "floats": FLOATS, "jobs": JOBS}[kind]
    start = time.perf_counter()
    try:
        axis = grid.convert(value, None, None)
        next(iter(expand({}, {"seed": axis})), None)
    except click.BadParameter as exc:
        message = exc.format_message()
        assert "\n" not in message and len(message) <= MESSAGE_CHARS, message
    except FtqueueError as exc:
        assert "\n" not in exc.message and len(exc.message) <= MESSAGE_CHARS, exc.message
    finally:
        assert time.perf_counter() - start < EXAMPLE_SECONDS


@settings(CI, max_examples=20)
@given(value=st.builds(lambda a, b: f"{a}..{b}", numbers, numbers) | numbers | st.text(max_size=40))
def test_a_grid_flag_through_submit_is_exit_2_one_line_or_nothing_new(
    sqlite_url: str, value: str
) -> None:
    args = ["submit", "lora", "--model", "synthetic", "--dataset", "movie-snippets"]
    result = CliRunner().invoke(cli, [*args, "--seed", value, "--r", "0"], prog_name="ftqueue")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, (result.exception, result.output[:500])
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


@settings(CI, max_examples=25)
@given(tag=st.text(max_size=80) | st.text(min_size=300, max_size=400), job=flag_values)
def test_a_tag_or_job_id_through_the_commands_is_exit_2_one_line(
    sqlite_url: str, tag: str, job: str
) -> None:
    args = ["submit", "lora", "--model", "synthetic", "--dataset", "movie-snippets", "--r", "0"]
    for argv in ([*args, "--tag", tag], ["show", job], ["logs", job]):
        start = time.perf_counter()
        result = CliRunner().invoke(cli, argv, prog_name="ftqueue")
        assert time.perf_counter() - start < EXAMPLE_SECONDS
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (argv[:2], result.output[:500])
        assert len(lines[0]) <= MESSAGE_CHARS + 40, lines[0]
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
