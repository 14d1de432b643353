"""The `runs` view (revision 0005b) on SQLite and PostgreSQL, and the documented queries on it.

Jobs are real synthetic jobs run through the Celery tasks in-process; what the view says is
checked against the ORM rows it is built from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, Result

SYNTH = "synthetic:seconds=0,steps=4"
SNIPPETS = DataSpec(dataset="movie-snippets")
PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "runs-view.md"


@pytest.fixture
def filled(any_db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Two base evaluations, a 2x2 LoRA grid of 2 epochs, an adapter evaluated elsewhere."""
    from ftqueue.submit.submission import submit
    from ftqueue.worker.tasks import run_eagerly

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    base = submit([EvaluateSpec(model=SYNTH, data=SNIPPETS, seed=s) for s in (0, 1)]).created
    run_eagerly(base)
    grid = [
        LoraSpec(model=SYNTH, data=SNIPPETS, r=r, lr=3e-4, epochs=2, seed=s)
        for r in (4, 8)
        for s in (0, 1)
    ]
    sweep = submit(grid, sweep="grid")
    run_eagerly(sweep.created)
    other = tmp_path / "other.csv"
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'},{i % 2}" for i in range(60)]
    other.write_text("text,label\n" + "\n".join(rows) + "\n")
    trained = sweep.created[2]  # r=8, seed 0
    evaluated = submit(
        [EvaluateSpec(model=SYNTH, data=DataSpec(dataset=str(other)), adapter_job=trained.id)]
    ).created
    run_eagerly(evaluated)
    monkeypatch.delenv("FTQUEUE_EAGER")
    reset_settings()
    return {
        "url": any_db_url,
        "base": [j.id for j in base],
        "runs": [j.id for j in sweep.created],
        "trained": trained.id,
        "evaluated": evaluated[0].id,
    }


def _rows(sql: str, **params: Any) -> list[dict[str, Any]]:
    with db.get_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def test_one_row_per_job_split_and_epoch(filled: dict[str, Any]) -> None:
    view = _rows("SELECT job_id, split, epoch, accuracy, loss, final_epoch, status FROM runs")
    with db.session_scope() as session:
        results = session.execute(
            select(Result.job_id, Result.split, Result.epoch, Result.accuracy, Result.loss)
        ).all()
        succeeded = set(session.scalars(select(Job.id).where(Job.status == "succeeded")))
    assert len(view) == len(results) == 2 * 1 + 4 * 3 + 1
    keys = ("job_id", "split", "epoch", "accuracy", "loss")
    assert sorted(tuple(r[k] for k in keys) for r in view) == sorted(tuple(r) for r in results)
    assert {r["job_id"] for r in view} == succeeded
    finals = {(r["job_id"], r["split"], r["epoch"]) for r in view if r["final_epoch"]}
    for jid in filled["runs"]:
        # Validation after epochs 1 and 2 (the last is final); test once, at the epoch the
        # job selected (its best validation epoch), which is then its final test row.
        assert (jid, "validation", 2) in finals and (jid, "validation", 1) not in finals
        tested = [r["epoch"] for r in view if r["job_id"] == jid and r["split"] == "test"]
        assert len(tested) == 1 and (jid, "test", tested[0]) in finals
    assert (filled["evaluated"], "test", 0) in finals


def test_roles_and_hyper_parameters_as_columns(filled: dict[str, Any]) -> None:
    view = {
        r["job_id"]: r
        for r in _rows(
            "SELECT job_id, role, kind, r, lr, epochs, seed, target_modules, pooling, "
            "adapter_job, dataset, sweep_id FROM runs WHERE final_epoch AND split = 'test'"
        )
    }
    assert {view[j]["role"] for j in filled["base"]} == {"base"}
    assert {view[j]["role"] for j in filled["runs"]} == {"run"}
    ev = view[filled["evaluated"]]
    assert ev["role"] == "adapter evaluation" and ev["adapter_job"] == filled["trained"]
    # An evaluated adapter carries the configuration that trained it.
    assert (ev["r"], ev["seed"], ev["epochs"]) == (8, 0, 2)
    assert ev["dataset"].endswith("other.csv")
    with db.session_scope() as session:
        for jid in filled["runs"]:
            job = session.get(Job, jid)
            assert job is not None
            row = view[jid]
            assert row["r"] == job.spec["r"] and row["seed"] == job.spec["seed"]
            assert row["lr"] == pytest.approx(3e-4) and row["epochs"] == 2
            assert row["target_modules"] == ",".join(job.spec["target_modules"])
            assert row["pooling"] == job.spec["pooling"] and row["sweep_id"] == "grid"
    assert all(view[j]["r"] is None and view[j]["adapter_job"] is None for j in filled["base"])


def _documented_queries() -> list[str]:
    section = PAGE.read_text(encoding="utf-8").split("\n## Queries\n")[1]
    section = section.split("\n## ")[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_documented_queries(filled: dict[str, Any]) -> None:
    best_per_r, curves, roles = _documented_queries()
    rows = _rows(best_per_r)
    assert sorted(r["r"] for r in rows) == [4, 8] and all(r["runs"] == 2 for r in rows)
    assert rows[0]["best_accuracy"] >= rows[1]["best_accuracy"]
    with db.session_scope() as session:
        test_acc = {
            (job.spec["r"], res.accuracy)
            for job, res in session.execute(
                select(Job, Result).join(Result).where(Job.kind == "lora", Result.split == "test")
            ).all()
        }
    for row in rows:
        mine = [a for r, a in test_acc if r == row["r"]]
        assert row["best_accuracy"] == max(mine)
        assert row["mean_accuracy"] == pytest.approx(sum(mine) / len(mine))

    curve = _rows(curves)
    assert [(r["job_id"], r["epoch"]) for r in curve] == [
        (jid, e) for jid in sorted(filled["runs"]) for e in (1, 2)
    ]

    by_role = {r["role"]: r for r in _rows(roles)}
    assert by_role["base"]["n"] == 2 and by_role["run"]["n"] == 4
    assert by_role["adapter evaluation"]["n"] == 1


def test_pandas_reads_the_view(filled: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.read_sql("SELECT * FROM runs WHERE split = 'test' AND final_epoch", db.get_engine())
    assert len(frame) == 2 + 4 + 1
    table = frame[frame.role == "run"].pivot_table(index="r", values="accuracy", aggfunc="count")
    assert table["accuracy"].to_dict() == {4: 2, 8: 2}


def test_spec_is_jsonb_on_postgresql(pg_url: str) -> None:
    types = _rows(
        "SELECT table_name, data_type FROM information_schema.columns "
        "WHERE column_name = 'spec' AND table_name IN ('jobs', 'runs') ORDER BY table_name"
    )
    assert types == [
        {"table_name": "jobs", "data_type": "jsonb"},
        {"table_name": "runs", "data_type": "jsonb"},
    ]
