"""Values left to the device: jobs record what they trained with, and every reader uses it.

A LoRA spec may leave lr, head_lr, epochs and batch_size open (None, "the device decides");
the spec keeps None, so identical specs still de-duplicate, and ``jobs.trained_with`` holds
the values used. Synthetic jobs stand in for a CPU worker (they record the CPU's values).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text, update

from ftqueue.cli import cli
from ftqueue.kinds.lora import DEVICE_DEFAULTS, LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job

SYNTH = "synthetic:seconds=0,steps=2"
SNIPPETS = DataSpec(dataset="movie-snippets")
CPU_LR = DEVICE_DEFAULTS["cpu"]["lr"]


def run_jobs(monkeypatch: pytest.MonkeyPatch, specs: list[LoraSpec]) -> list[int]:
    from ftqueue.submit.submission import submit
    from ftqueue.worker.tasks import run_eagerly

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    created = submit(specs).created
    run_eagerly(created)
    monkeypatch.delenv("FTQUEUE_EAGER")
    reset_settings()
    return [job.id for job in created]


@pytest.fixture
def device_and_given(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Three runs: lr left to the device (a CPU's 1e-3), lr=1e-3 given, lr=3e-4 given."""
    device, given, low = run_jobs(
        monkeypatch,
        [
            LoraSpec(model=SYNTH, data=SNIPPETS, epochs=1),
            LoraSpec(model=SYNTH, data=SNIPPETS, epochs=1, lr=CPU_LR),
            LoraSpec(model=SYNTH, data=SNIPPETS, epochs=1, lr=3e-4),
        ],
    )
    return {"device": device, "given": given, "low": low}


def report_json(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["report", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def test_the_spec_keeps_none_and_the_job_records_the_value_used(
    device_and_given: dict[str, int],
) -> None:
    with db.session_scope() as session:
        job = session.get(Job, device_and_given["device"])
        assert job is not None
        assert job.spec["lr"] is None and job.spec["batch_size"] is None
        assert job.trained_with is not None
        assert job.trained_with["lr"] == CPU_LR
        assert job.trained_with["batch_size"] == DEVICE_DEFAULTS["cpu"]["batch_size"]
        assert job.trained_with["head_lr"] == DEVICE_DEFAULTS["cpu"]["head_lr"]
        assert job.trained_with["grad_accum"] == 1 and "grad_accum" not in job.spec


def test_the_runs_view_has_the_lr_a_device_chose(device_and_given: dict[str, int]) -> None:
    with db.get_engine().connect() as conn:
        rows = conn.execute(
            text("SELECT DISTINCT job_id, lr, batch_size, grad_accum FROM runs WHERE lr >= :lr"),
            {"lr": CPU_LR},
        ).all()
    assert {r.job_id for r in rows} == {device_and_given["device"], device_and_given["given"]}
    assert {(r.batch_size, r.grad_accum) for r in rows} == {(32, 1)}


def test_where_on_lr_includes_a_run_whose_spec_left_it_to_the_device(
    device_and_given: dict[str, int],
) -> None:
    rows = report_json("--where", f"lr>={CPU_LR}", "--group-by", "lr", "--split", "test")
    assert [(r["lr"], r["n"]) for r in rows] == [(CPU_LR, 2)]
    rows = report_json("--where", "lr<0.001", "--group-by", "lr", "--split", "test")
    assert [(r["lr"], r["n"]) for r in rows] == [(3e-4, 1)]


def test_group_by_lr_has_no_blank_group_and_no_none_in_plot_labels(
    device_and_given: dict[str, int],
) -> None:
    from ftqueue import api
    from ftqueue.report.plot import _labels

    rows = report_json("--group-by", "lr", "--split", "test")
    assert sorted((r["lr"], r["n"]) for r in rows) == [(3e-4, 1), (CPU_LR, 2)]
    report = api.report(group_by=["lr"]).table
    assert report is not None
    labels = [label for where in report.ranked for label in _labels(report, report.ranked[where])]
    assert sorted(labels) == ["lr=0.0003", "lr=0.001"]
    # The default table (a row per model and dataset) shows the chosen configuration's values.
    (row,) = report_json("--split", "test")
    assert row["lr"] is not None and row["batch_size"] == 32 and row["grad_accum"] == 1


def test_show_prints_the_values_used(device_and_given: dict[str, int]) -> None:
    result = CliRunner().invoke(cli, ["show", str(device_and_given["device"])], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = {" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()}
    assert f"lr {CPU_LR:g} (chosen for the device)" in lines, result.output
    assert "batch_size 32 (chosen for the device)" in lines
    assert "grad_accum 1" in lines
    payload = json.loads(
        CliRunner().invoke(cli, ["show", str(device_and_given["device"]), "--json"]).output
    )
    assert payload["spec"]["lr"] is None and payload["trained_with"]["lr"] == CPU_LR


def test_rows_without_recorded_values_fall_back_to_the_spec(
    device_and_given: dict[str, int],
) -> None:
    with db.session_scope(write=True) as session:
        session.execute(update(Job).values(trained_with=None))
    rows = report_json("--group-by", "lr", "--split", "test")
    # The run that left lr open recorded nothing: its group is blank, the others keep theirs.
    assert sorted((r["lr"] or 0, r["n"]) for r in rows) == [(0, 1), (3e-4, 1), (CPU_LR, 1)]
    assert {r["grad_accum"] for r in report_json("--group-by", "grad_accum")} == {1}
    result = CliRunner().invoke(cli, ["show", str(device_and_given["given"])])
    assert result.exit_code == 0 and "chosen for the device" not in result.output


def test_upgrade_copies_the_recipe_old_jobs_recorded(any_db_url: str) -> None:
    """A job recorded before revision 0010 kept its device's values in stats.recipe only."""
    engine = db.get_engine(any_db_url)
    db.downgrade(any_db_url, "0009")
    with engine.connect() as conn:  # the view of revision 0005b is back
        columns = list(conn.execute(text("SELECT * FROM runs")).keys())
    assert "grad_accum" not in columns and "lr" in columns
    spec = LoraSpec(model=SYNTH, data=SNIPPETS, epochs=1).to_dict()
    recipe = {"batch_size": 32, "lr": CPU_LR, "head_lr": 0.01, "epochs": 1}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, status, spec, spec_hash, config_hash, model, "
                "dataset, stats, attempts, max_attempts, cancel_requested, created_at) VALUES "
                "(1, 'lora', 'succeeded', :spec, 'h', 'c', 'm', 'd', :stats, 1, 3, false, "
                "CURRENT_TIMESTAMP)"
            ),
            {"spec": json.dumps(spec), "stats": json.dumps({"recipe": recipe})},
        )
        conn.execute(
            text(
                "INSERT INTO results (job_id, attempt, split, epoch, accuracy, loss, macro_f1, "
                "n_examples, recorded_at) VALUES (1, 1, 'test', 1, 0.8, 0.4, 0.8, 10, "
                "CURRENT_TIMESTAMP)"
            )
        )
    db.upgrade(any_db_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT lr, batch_size, r, grad_accum FROM runs")).one()
    assert (row.lr, row.batch_size, row.r, row.grad_accum) == (CPU_LR, 32, 16, 1)
    with db.session_scope(url=any_db_url) as session:
        job = session.get(Job, 1)
        assert job is not None and job.trained_with == recipe
