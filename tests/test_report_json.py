"""`ftqueue report --json`: the same document as `--format json`, like every reading command."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ftqueue.cli import cli
from tests.test_report import Filled, insert_rows


def test_json_flag_is_format_json(sqlite_url: str) -> None:
    insert_rows(Filled(sqlite_url))
    runner = CliRunner()
    flag = runner.invoke(cli, ["report", "--split", "validation", "--split", "test", "--json"])
    fmt = runner.invoke(cli, ["report", "--split", "validation", "--split", "test",
                              "--format", "json"])  # fmt: skip
    assert flag.exit_code == 0 and fmt.exit_code == 0, flag.output + fmt.output
    rows = json.loads(flag.output)
    assert rows == json.loads(fmt.output) and len(rows) >= 2
    assert {"model", "dataset", "split"} <= set(rows[0])


def test_json_flag_with_another_format_is_one_line(sqlite_url: str) -> None:
    out = CliRunner().invoke(cli, ["report", "--json", "--format", "csv"])
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    assert "--json" in lines[0] and "--format csv" in lines[0]
