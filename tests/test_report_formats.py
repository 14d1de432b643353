"""`ftqueue report` outputs (table, Markdown, CSV, JSON, PNG, HTML) and its one-line errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import db
from tests.test_report import TINY, Filled, _insert, insert_rows, report_rows

PNG = b"\x89PNG\r\n\x1a\n"
ODD_MODEL = "<b>bold</b>&co"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory for outputs (tmp_path also holds FTQUEUE_HOME)."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def inserted(sqlite_url: str) -> Filled:
    filled = Filled(sqlite_url)
    insert_rows(filled)
    data = DataSpec(dataset="rt")
    with db.session_scope(url=sqlite_url, write=True) as s:
        _insert(s, EvaluateSpec(model=ODD_MODEL, data=data), {("test", 1): 0.5})
        for seed in (0, 1):
            lora = LoraSpec(model=ODD_MODEL, data=data, epochs=3, seed=seed)
            epochs = {("validation", e): 0.6 + e / 20 + seed / 100 for e in (1, 2, 3)}
            _insert(s, lora, {**epochs, ("test", 3): 0.7 + seed / 50})
    return filled


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["report", *args])


def test_csv_and_json_carry_the_same_numbers(inserted: Filled) -> None:
    rows = report_rows("--split", "validation", "--split", "test")
    out = run("--split", "validation", "--split", "test", "--format", "csv")
    assert out.exit_code == 0, out.output
    parsed = list(csv.DictReader(io.StringIO(out.output)))
    assert len(parsed) == len(rows) == 4  # two models, two splits
    for from_csv, from_json in zip(parsed, rows, strict=True):
        assert list(from_csv) == list(from_json)
        for name, value in from_json.items():
            if value is None:
                assert from_csv[name] == ""
            elif isinstance(value, (int, float)):
                assert float(from_csv[name]) == value, name  # exactly: floats keep every digit
            else:
                assert from_csv[name] == value


def test_table_and_markdown_show_every_row(inserted: Filled) -> None:
    rows = report_rows()
    table = run()
    assert table.exit_code == 0, table.output
    for row in rows:
        assert row["model"] in table.output and f"{row['accuracy']:.4f}" in table.output
    markdown = run("--format", "markdown").output.splitlines()
    assert markdown[0].startswith("| model | dataset | split |")
    assert re.fullmatch(r"\|(-{3}:?\|)+", markdown[1].replace("---:", "---"))
    assert len(markdown) == 2 + len(rows)
    tiny = next(line for line in markdown if line.startswith(f"| {TINY} "))
    assert (
        "r=32" in tiny
        and f"{next(r for r in rows if r['model'] == TINY)['delta_points']:+.2f}" in tiny
    )


def test_plot_and_html_are_complete_files(inserted: Filled, out_dir: Path) -> None:
    from matplotlib.image import imread

    plot, page = out_dir / "report.png", out_dir / "report.html"
    out = run("--plot", str(plot), "--html", str(page))
    assert out.exit_code == 0, out.output
    data = plot.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    assert imread(str(plot)).shape[0] > 300  # it decodes, and has the height of two panels
    html = page.read_text()
    rows = report_rows()
    assert html.count("<tr>") == len(rows) + 1 and "<table>" in html
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert embedded and base64.b64decode(embedded.group(1)) == data
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;co" in html and ODD_MODEL not in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.html", "report.png"]


def test_plot_of_an_empty_selection_still_draws(inserted: Filled, out_dir: Path) -> None:
    out = run("--model", "nothing-like-it", "--plot", str(out_dir / "p.png"))
    assert out.exit_code == 0 and "No results match" in out.output
    assert (out_dir / "p.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--where", "colour=red"], ["colour", "r, alpha, dropout", "accuracy"]),
        (["--where", "r ~ 8"], ["= != < <= > >="]),
        (["--where", "r LIKE 8"], ["= != < <= > >="]),
        (["--where", "r>=eight"], ["r is a number"]),
        (["--where", "pooling<mean"], ["= or !="]),
        (["--where", "lr="], ["COLUMN OP VALUE"]),
        (["--sort", "fastest"], ["fastest", "accuracy", "delta", "train_time"]),
        (["--sort", "lr", "--group-by", "r"], ["'lr'", "r"]),
        (["--group-by", "r,colour"], ["colour", "r, alpha"]),
        (["--since", "yesterday"], ["--since", "2025-05-01", "30m, 12h, 2d, 1w"]),
        (["--until", "2025-13-45"], ["--until", "ISO date"]),
        (["--since", "1d", "--until", "2d"], ["--since", "swap them"]),
    ],
)
def test_bad_requests_get_one_line_and_exit_2(
    inserted: Filled, out_dir: Path, args: list[str], words: list[str]
) -> None:
    plot = out_dir / "p.png"
    out = run(*args, "--plot", str(plot))
    assert out.exit_code == 2, out.output
    assert out.output.count("\n") == 1 and out.output.startswith("Error: ")
    for word in words:
        assert word in out.output
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("flag", ["--plot", "--html"])
def test_unwritable_outputs_are_refused_before_any_work(out_dir: Path, flag: str) -> None:
    # Checked before the database: this one is not even migrated.
    missing = run(flag, str(out_dir / "nowhere" / "out.png"))
    assert missing.exit_code == 2 and "not an existing directory" in missing.output
    directory = run(flag, str(out_dir))
    assert directory.exit_code == 2 and "is a directory" in directory.output
    assert missing.output.count("\n") == directory.output.count("\n") == 1


def test_where_values_are_data_not_sql(inserted: Filled) -> None:
    hostile = run("--where", "pooling=mean' OR '1'='1", "--format", "json")
    assert hostile.exit_code == 0 and json.loads(hostile.output) == []
    assert report_rows() != []  # the tables are still there


def test_failed_writes_leave_no_partial_file(out_dir: Path) -> None:
    from ftqueue.core.files import atomic_write, write_bytes_atomic

    target = out_dir / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half of a new")
        raise RuntimeError("rendering failed")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in out_dir.iterdir()] == ["out.png"]
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in out_dir.iterdir()] == ["out.png"]
