"""Every table the command line prints, at 60, 80, 100 and 120 columns: no line wider than the
terminal, no value cut or split inside a number or a word, hidden columns named.

``TABLES`` maps each function that builds a table to a maker of that table from realistic,
long values; ``test_every_table_builder_is_registered`` reads the package's source, so that
a table added later without an entry here fails.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console, Group

import ftqueue
from ftqueue.cli import cli
from ftqueue.core.tables import FitTable, pieces
from ftqueue.settings import reset_settings

WIDTHS = (60, 80, 100, 120)
NOW = dt.datetime(2026, 12, 4, 21, 30, tzinfo=dt.UTC).isoformat()
LONG_DATASET = "movie-reviews-sentiment-extended-2026"
LONG_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
SPEC_STRING = "synthetic:seconds=1,steps=2"
MODULES = ["query", "key", "value", "dense"]

# --- realistic rows, in the JSON forms the API gives -------------------------------------------


def job(job_id: int, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": job_id,
        "kind": "lora",
        "status": "running",
        "model": LONG_MODEL,
        "dataset": LONG_DATASET,
        "spec": {"model": LONG_MODEL, "data": {"dataset": LONG_DATASET}, "lr": 0.0003},
        "name": None,
        "sweep_id": "lr-and-modules-grid-2026-12",
        "trial": 3,
        "tags": ["nightly-grid", "a-long-tag-name"],
        "attempts": 1,
        "max_attempts": 3,
        "worker": "gpu0@node-a.cluster.example.org",
        "progress": {"phase": "train", "epoch": 2, "step": 230, "total": 1000, "loss": 0.4123},
        "queue": None,
        "lost": False,
        "heartbeat_age": 1.5,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "selected_epoch": None,
        "stats": None,
        "cancel_requested": False,
        "samples_per_second": 1234.5,
        "error_type": None,
        "error_message": None,
        "output_files": [],
    }
    row.update(extra)
    return row


def detailed_job() -> dict[str, Any]:
    return job(
        12,
        status="failed",
        finished_at=NOW,
        error_type="RuntimeError",
        error_message="CUDA out of memory. Tried to allocate 2.00 GiB on device cuda:0",
        output_files=[f"/srv/ftqueue/artifacts/{LONG_DATASET}/job-12/adapter"],
        spec={
            "model": SPEC_STRING,
            "data": {"dataset": LONG_DATASET, "text_column": "sentence"},
            "target_modules": MODULES,
            "lr": 0.0003,
            "batch_size": "device",
        },
        events=[
            {
                "at": NOW,
                "status": "running",
                "attempt": 1,
                "worker": "gpu0@node-a.cluster",
                "detail": "claimed by gpu0@node-a.cluster after 2.1s in the queue",
            },
        ],
        results=[
            {
                "split": "validation",
                "epoch": 1,
                "accuracy": 0.61234,
                "macro_f1": 0.60123,
                "loss": 0.65432,
                "n_examples": 1066,
                "attempt": 1,
            },
        ],
        queued_at=NOW,
        train_seconds=245.0,
        trainable_params=1_234_567,
        total_params=110_000_000,
    )


def worker(name: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "state": "live",
        "pid": 41234,
        "supervisor_pid": 41200,
        "gpu": "0",
        "gpu_name": "NVIDIA H200",
        "gpu_memory_mb": 143771,
        "queues": ["evaluate", "lora", "predict"],
        "versions": {"ftqueue": "0.1.0", "torch": "2.6.0+cu124", "transformers": "5.2.0"},
        "job": {"id": 1234, "kind": "lora", "lost": False, "heartbeat_age": 0.8,
                "progress": {"phase": "train", "epoch": 2, "step": 23, "total": 100}},
        "started_at": NOW,
        "seen_ago": 1.2,
    }  # fmt: skip
    row.update(extra)
    return row


def make_report(group_by: tuple[str, ...] = ()) -> Any:
    from ftqueue.report import ReportOptions
    from ftqueue.report.build import Report, ReportRow
    from ftqueue.report.query import Group as Stats
    from ftqueue.report.query import Stat

    def stats(source: str, mean: float) -> Any:
        return Stats(LONG_MODEL, LONG_DATASET, "validation", source, (), 3,
                     Stat(mean, 0.0123, mean - 0.01, mean + 0.01),
                     Stat(0.6543, 0.01, 0.64, 0.66), 245.0, 0.00977, 1)  # fmt: skip

    config = {"r": 32, "alpha": 4, "dropout": 0.01, "target_modules": MODULES, "lr": 0.0003,
              "head_lr": 0.003, "epochs": 3, "batch_size": None}  # fmt: skip
    opts = ReportOptions.from_text(group_by=group_by)
    base, lora = stats("base", 0.6123), stats("training", 0.8255)
    if group_by:
        config = {k: config[k] for k in group_by}
    row = ReportRow(LONG_MODEL, LONG_DATASET, "validation", base, lora, config,
                    selected_by=None if group_by else "validation")  # fmt: skip
    return Report(options=opts, rows=[row], ranked={})


def make_sweep_report() -> Any:
    from ftqueue.sweeps.summary import SweepReport, Trial

    trials = [
        Trial(40 + i, i, "succeeded" if i % 2 else "pruned",
              {"lr": lr, "target_modules": mods, "model": SPEC_STRING},
              {1: 0.6123, 2: 0.7456, 3: 0.8012}, 3, 0.6178 + i / 1000, 245.0, 3,
              pruned_at=None if i % 2 else 1)
        for i, (lr, mods) in enumerate([(0.0003, MODULES), (0.001, ["query", "value"])])
    ]  # fmt: skip
    return SweepReport("lr-and-modules-grid-2026-12", "grid", "finished", 9, 3, [1],
                       ["lr", "target_modules", "model"], trials)  # fmt: skip


def make_endings() -> list[Any]:
    from ftqueue.api import Ending

    result = {"split": "validation", "accuracy": 0.61234, "macro_f1": 0.6012, "loss": 0.6543}
    return [
        Ending(41, "lora", "succeeded", None, result, None),
        Ending(42, "lora", "failed", "RuntimeError: CUDA out of memory on cuda:0", None, None),
        Ending(43, "predict", "succeeded", None, None,
               ("predictions", [f"/srv/ftqueue/artifacts/{LONG_DATASET}/predictions.jsonl"])),
    ]  # fmt: skip


def make_submission() -> Any:
    from ftqueue.cli.submitting import submission_table

    specs = [
        (50 + i, {"model": SPEC_STRING, "lr": lr, "target_modules": mods}, "queued")
        for i, (lr, mods) in enumerate([(0.0003, MODULES), (0.001, ["query", "value"])])
    ]
    specs.append((7, specs[0][1], "identical to job 7 (succeeded), not re-run"))
    return submission_table(specs, ["lr", "target_modules", "model"], title="sweep demo-grid")


def make_snapshot() -> dict[str, Any]:
    return {
        "at": NOW,
        "workers": [worker("gpu0@node-a.cluster"), worker("gpu1@node-a.cluster", job=None)],
        "running": [job(1234), job(1235, lost=True, heartbeat_age=130.0)],
        "queues": [{"name": "lora-long-running-queue", "queued": 12, "live_workers": 0}],
        "failures": [job(99, status="failed", finished_at=NOW, error_type="RuntimeError",
                         error_message="CUDA out of memory. Tried to allocate 2.00 GiB " * 4)],
    }  # fmt: skip


def _show_tables() -> list[Any]:
    from ftqueue.cli.report_cmd import _show_tables as tables

    return tables(detailed_job())


def _cli(name: str) -> Any:
    import importlib

    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


#: Each function that builds a table (module:function) and a maker of it from sample data.
TABLES: dict[str, Callable[[], Any]] = {
    "ftqueue.cli.render:jobs_table": lambda: _cli("ftqueue.cli.render.jobs_table")(
        [
            job(1234),
            job(
                1235,
                status="queued",
                started_at=None,
                queue={"name": "lora", "position": 2, "depth": 14, "live_workers": 0},
            ),
        ]
    ),
    "ftqueue.cli.render:key_values": lambda: _cli("ftqueue.cli.render.job_details")(detailed_job()),
    "ftqueue.cli.report_cmd:_show_tables": lambda: Group(*_show_tables()),
    "ftqueue.cli.workers_cmd:workers_table": lambda: _cli("ftqueue.cli.workers_cmd.workers_table")(
        [worker("gpu0@node-a.cluster"), worker("cpu0@node-b", state="gone", gpu=None, job=None)]
    ),
    "ftqueue.cli.top_cmd:_table": lambda: _cli("ftqueue.cli.top_cmd.frame")(
        make_snapshot(), width=None
    ),
    "ftqueue.cli.follow:endings_table": lambda: _cli("ftqueue.cli.follow.endings_table")(
        make_endings()
    ),
    "ftqueue.cli.submitting:submission_table": make_submission,
    "ftqueue.cli.predict_cmd:predictions_table": lambda: _cli(
        "ftqueue.cli.predict_cmd.predictions_table"
    )(
        [
            {
                "text": "a gripping, beautifully acted film about " + LONG_DATASET,
                "label": "positive",
                "probabilities": {"negative": 0.1234, "positive": 0.8766},
            }
        ],
        ["negative", "positive"],
    ),
    "ftqueue.report.render:rich_table": lambda: Group(
        _cli("ftqueue.report.render.rich_table")(make_report()),
        _cli("ftqueue.report.render.rich_table")(make_report(("r", "target_modules", "lr"))),
    ),
    "ftqueue.report.sweep:rich_table": lambda: _cli("ftqueue.report.sweep.rich_table")(
        make_sweep_report()
    ),
}

#: Values each table must show whole on one line at every width (unless hidden and named).
MUST_SHOW = ["0.0003", "0.8255", "0.6123", "0.6178", "0.001", "NVIDIA", "RuntimeError"]


# --- checking a rendering ----------------------------------------------------------------------


def fit_tables(renderable: Any) -> Iterator[FitTable]:
    if isinstance(renderable, FitTable):
        yield renderable
    for part in getattr(renderable, "renderables", ()):
        yield from fit_tables(part)


def render(renderable: Any, width: int) -> str:
    console = Console(
        file=io.StringIO(), width=width, record=True, color_system=None, legacy_windows=False
    )
    console.print(renderable)
    return console.export_text()


def check(renderable: Any, width: int, text: str) -> None:
    """Every line fits; every value's unbreakable pieces appear whole on a line, or its column
    is named in a note under the table."""
    lines = text.splitlines()
    too_wide = [line for line in lines if cell_len(line.rstrip()) > width]
    assert not too_wide, f"wider than {width}:\n" + "\n".join(too_wide)
    words = " ".join(text.split())
    tables = list(fit_tables(renderable))
    assert tables, "no FitTable in the rendering"
    for table in tables:
        plan = table.plan(width)
        if plan.hidden:
            hidden = plan.hidden
            names = ", ".join(
                " ".join(_plain(plan.layout.columns[i].header).split()) for i in sorted(plan.hidden)
            )
            count = f"{len(hidden)} column{'s' if len(hidden) > 1 else ''}"
            assert f"{count} hidden at {width} columns: {names};" in words, text
        for i in plan.shown:
            column = plan.layout.columns[i]
            for row in plan.layout.lines:
                for line in row[i]:
                    plain = line.plain
                    for piece in pieces(plain) if column.max_lines is None else pieces(plain)[:1]:
                        piece = piece.strip()
                        assert any(piece in out for out in lines), (piece, plain, text)
    if "…" in text:  # only where a column says its cells may end early
        assert any(c.max_lines for t in tables for c in t.layouts[0].columns), text


def hidden_text(table: FitTable, width: int) -> list[str]:
    """The lines of the cells of the columns ``table`` hides at ``width``."""
    plan = table.plan(width)
    return [line.plain for i in plan.hidden for row in plan.layout.lines for line in row[i]]


def _plain(header: Any) -> str:
    return header.plain if hasattr(header, "plain") else str(header)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_fits_and_keeps_values_whole(name: str, width: int) -> None:
    renderable = TABLES[name]()
    text = render(renderable, width)
    check(renderable, width, text)
    hidden_cells = [cell for t in fit_tables(renderable) for cell in hidden_text(t, width)]
    for value in MUST_SHOW:
        if value in render(renderable, 10_000):
            shown = any(value in line for line in text.splitlines())
            assert shown or any(value in cell for cell in hidden_cells), (value, text)


def test_narrow_terminals_keep_the_values_of_the_issue_whole() -> None:
    # At 80 columns these printed as 0.0…, que… and 0.61…, and names split mid-word.
    sweep = render(TABLES["ftqueue.report.sweep:rich_table"](), 80)
    assert "0.0003" in sweep and "0.6178" in sweep and "query,key," in sweep
    assert "…" not in sweep
    report = render(TABLES["ftqueue.report.render:rich_table"](), 80)
    assert LONG_DATASET in report and "0.8255" in report and "0.0003" in report
    listed = render(TABLES["ftqueue.cli.render:jobs_table"](), 60)
    assert LONG_DATASET in listed
    for width in WIDTHS:
        shown = render(Group(*_show_tables()), width)
        assert "synthetic:seconds=1," in shown and "batch_size" in shown and "device" in shown


def test_a_table_too_wide_for_any_layout_prints_one_block_per_row() -> None:
    renderable = TABLES["ftqueue.cli.submitting:submission_table"]()
    [table] = fit_tables(renderable)
    assert not table.plan(120).stacked
    text = render(renderable, 40)
    assert table.plan(40).stacked
    assert all(cell_len(line) <= 40 for line in text.splitlines()), text
    assert "lr" in text and "0.0003" in text and "0.001" in text and "query,key," in text


# --- every table goes through the registry -----------------------------------------------------


def _builders() -> set[str]:
    """module:function of each function in the package that makes a FitTable."""
    root = Path(ftqueue.__file__).parent
    found = set()
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FitTable":
                    found.add(f"{module}:{func.name}")
    return found


def test_every_table_builder_is_registered() -> None:
    assert _builders() == set(TABLES), "add the new table to TABLES with realistic values"


def test_no_table_is_made_around_the_shared_mechanism() -> None:
    root = Path(ftqueue.__file__).parent
    raw = re.compile(r"(?<![A-Za-z_])Table(\.grid)?\(")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "tables.py" and raw.search(path.read_text())
    ]
    assert not offenders, f"rich Table made outside ftqueue/core/tables.py: {offenders}"


# --- the commands themselves, on a real database -----------------------------------------------


def test_report_sweep_list_and_show_fit_every_width(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    rows = "".join(f"sentence {i} is {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = tmp_path / f"{LONG_DATASET}_{split}.csv"
        files[split].write_text("text,label\n" + rows)
    dataset = ",".join(f"{k}={v}" for k, v in files.items())
    sweep = {
        "name": "lr-and-modules-grid",
        "model": "synthetic:seconds=0.01,steps=2",
        "dataset": dataset,
        "fixed": {"epochs": 2},
        "space": {"lr": [0.0003, 0.001], "target_modules": [MODULES, ["query", "value"]]},
        "method": "grid",
        "budget": {"max_parallel": 2},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    runner = CliRunner()
    out = runner.invoke(cli, ["sweep", str(tmp_path / "sweep.yaml")])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["report", "--sweep", "lr-and-modules-grid", "--json"])
    trials = json.loads(out.output)["trials"]
    accuracies = [f"{t['test_accuracy']:.4f}" for t in trials if t["test_accuracy"] is not None]
    assert accuracies
    commands = {
        "report": ["report"],
        "sweep": ["report", "--sweep", "lr-and-modules-grid"],
        "list": ["list"],
        "show": ["show", str(trials[0]["job_id"])],
    }
    for width in WIDTHS:
        for name, args in commands.items():
            out = runner.invoke(cli, args, env={"COLUMNS": str(width)})
            assert out.exit_code == 0, out.output
            lines = out.output.splitlines()
            assert all(cell_len(line.rstrip()) <= width for line in lines), (name, out.output)
            assert "…" not in out.output, (name, out.output)
            words = " ".join(out.output.split())
            if name != "sweep":  # the dataset name whole on one line, in every table showing it
                assert any(LONG_DATASET in line for line in lines), (name, width, out.output)
            if name == "sweep":
                note = words.partition(" hidden at ")[2]
                for value in ("0.0003", "0.001", *accuracies):
                    column = "test" if value in accuracies else "lr"
                    shown = any(value in line for line in lines)
                    assert shown or column in note.split(";")[0], (value, out.output)
                for module in MODULES:
                    assert any(module in line for line in lines), (module, out.output)
            if name == "show":
                assert "synthetic:seconds=0.01," in out.output and "steps=2" in out.output
                assert "0.0003" in out.output or "0.001" in out.output


# --- where a line may break --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "width", "lines"),
    [
        (SPEC_STRING, 20, ["synthetic:seconds=1,", "steps=2"]),
        (SPEC_STRING, 12, ["synthetic:", "seconds=1,", "steps=2"]),
        ("query,key,value,dense", 12, ["query,key,", "value,dense"]),
        ("movie-snippets/train.csv", 16, ["movie-snippets/", "train.csv"]),
        ("0.8255 ±0.023 loss 0.4123", 14, ["0.8255 ±0.023", "loss 0.4123"]),
        ("r=32 alpha=4 modules=query,key", 14, ["r=32 alpha=4", "modules=query,", "key"]),
    ],
)
def test_lines_break_only_after_separators(value: str, width: int, lines: list[str]) -> None:
    from rich.text import Text

    from ftqueue.core.tables import least_width, wrap

    assert [line.plain for line in wrap(Text(value), width)] == lines
    assert least_width(value) <= width
    assert least_width("0.0003") == 6 and least_width("movie-snippets") == 14
