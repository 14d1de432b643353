"""The report summary: per configuration and split, sums over succeeded jobs' kept epochs.

The default report would otherwise find each job's kept epoch among every result and group a
million rows; ``report_summary`` (``schema.ReportSummary``) holds those sums already, a row per
model, dataset, kind, configuration and split. ``record_success`` adds a job to it in the
transaction that records the job's results (``add_job``), so it is never behind them; a job's
results and status do not change once it has succeeded (a re-run is a new job), so nothing
has to be taken out again. Rows written some other way (by hand, by a bulk load, by a version
from before the summary) are counted by ``rebuild``, one INSERT ... SELECT, which the Alembic
revision that creates the table runs too.

A job counts with its kept epoch's results on each split: the epoch it kept
(``jobs.selected_epoch``) where it measured the split then, else its last epoch. A job whose
spec names an adapter (``adapter_job``) counts under the adapter's configuration, train
seconds and trainable share, as the report compares it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ftqueue.core.states import JobStatus
from ftqueue.store.schema import Job, ReportSummary, Result

#: The spec field naming an evaluated adapter's job (``kinds.ADAPTER_FIELD``; the store
#: knows rows, not kinds).
ADAPTER_FIELD = "adapter_job"
#: An order above any epoch: the kept epoch's results win over every other epoch's.
KEPT_FIRST = 2**31 - 1
#: The group a summary row belongs to.
KEY = ("model", "dataset", "kind", "adapter", "config", "split")
#: Columns added together when a job joins its group; the rest keep their lowest or highest.
ADDED: tuple[str, ...] = ("n", "acc_sum", "acc_squares", "loss_sum", "loss_squares")
ADDED += ("seconds_sum", "seconds_n", "share_sum", "share_n")
LOWEST = ("acc_min", "loss_min", "first_job", "examples_min")
HIGHEST = ("acc_max", "loss_max")


def _adapter_of(job: Job) -> int | None:
    spec = job.spec if isinstance(job.spec, dict) else {}
    ref = spec.get(ADAPTER_FIELD)
    return None if ref is None else int(ref)


def contribution(session: Session, job: Job) -> list[dict[str, Any]]:
    """The summary rows one succeeded job makes on its own: one per split it measured."""
    if job.status != JobStatus.SUCCEEDED:
        return []
    ref = _adapter_of(job)
    adapter = session.get(Job, ref) if ref is not None else None

    def first(name: str) -> Any:
        # The adapter's value where it has one, as the report's COALESCE(adapter, job) reads.
        value = getattr(adapter, name) if adapter is not None else None
        return getattr(job, name) if value is None else value

    trainable, total = first("trainable_params"), first("total_params")
    share = None if trainable is None or not total else float(trainable) / float(total)
    seconds = first("train_seconds")
    kept: dict[str, tuple[int, Any]] = {}
    query = select(Result.split, Result.epoch, Result.accuracy, Result.loss, Result.n_examples)
    for row in session.execute(query.where(Result.job_id == job.id)):
        order = KEPT_FIRST if row.epoch == job.selected_epoch else row.epoch
        if row.split not in kept or order > kept[row.split][0]:
            kept[row.split] = (order, row)
    out = []
    for split, (_, row) in sorted(kept.items()):
        acc, loss = float(row.accuracy), float(row.loss)
        out.append(
            {
                "model": job.model,
                "dataset": job.dataset,
                "kind": job.kind,
                "adapter": ref is not None,
                "config": first("config_hash"),
                "split": split,
                "n": 1,
                "acc_sum": acc,
                "acc_squares": acc * acc,
                "acc_min": acc,
                "acc_max": acc,
                "loss_sum": loss,
                "loss_squares": loss * loss,
                "loss_min": loss,
                "loss_max": loss,
                "seconds_sum": seconds or 0.0,
                "seconds_n": int(seconds is not None),
                "share_sum": share or 0.0,
                "share_n": int(share is not None),
                "first_job": job.id,
                "examples_min": row.n_examples,
            }
        )
    return out


def add_job(session: Session, job: Job) -> None:
    """Count a job that has just succeeded, in the caller's transaction (after its results)."""
    session.flush()
    rows = contribution(session, job)
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = make(ReportSummary)
    table, new = ReportSummary.__table__.c, stmt.excluded
    updates: dict[str, Any] = {name: table[name] + new[name] for name in ADDED}
    for name in LOWEST:
        lower = new[name] < table[name]
        updates[name] = case((lower | table[name].is_(None), new[name]), else_=table[name])
    for name in HIGHEST:
        updates[name] = case((new[name] > table[name], new[name]), else_=table[name])
    for row in rows:  # one statement per split: a job measures two or three
        session.execute(stmt.values(**row).on_conflict_do_update(index_elements=KEY, set_=updates))


def rebuild(session: Session) -> int:
    """Recount the whole summary from jobs and results; returns the rows it now has."""
    session.flush()
    session.execute(delete(ReportSummary))
    session.execute(text(rebuild_sql(session.get_bind().dialect.name)))
    return int(session.scalar(select(func.count()).select_from(ReportSummary)) or 0)


def rebuild_sql(dialect: str) -> str:
    """INSERT ... SELECT of the whole summary, for SQLite or PostgreSQL."""
    if dialect == "postgresql":
        ref = f"CAST(j.spec ->> '{ADAPTER_FIELD}' AS INTEGER)"
    else:
        ref = f"json_extract(j.spec, '$.{ADAPTER_FIELD}')"

    def order(r: str) -> str:
        return f"CASE WHEN {r}.epoch = j.selected_epoch THEN {KEPT_FIRST} ELSE {r}.epoch END"

    return f"""
INSERT INTO report_summary ({", ".join(KEY)}, n, acc_sum, acc_squares, acc_min, acc_max,
    loss_sum, loss_squares, loss_min, loss_max, seconds_sum, seconds_n, share_sum, share_n,
    first_job, examples_min)
SELECT model, dataset, kind, adapter, config, split,
    COUNT(*), SUM(accuracy), SUM(accuracy * accuracy), MIN(accuracy), MAX(accuracy),
    SUM(loss), SUM(loss * loss), MIN(loss), MAX(loss),
    COALESCE(SUM(seconds), 0), COUNT(seconds), COALESCE(SUM(share), 0), COUNT(share),
    MIN(job_id), MIN(n_examples)
FROM (
    SELECT j.id AS job_id, j.model AS model, j.dataset AS dataset, j.kind AS kind,
        ({ref} IS NOT NULL) AS adapter,
        COALESCE(a.config_hash, j.config_hash) AS config,
        r.split AS split, r.accuracy AS accuracy, r.loss AS loss, r.n_examples AS n_examples,
        COALESCE(a.train_seconds, j.train_seconds) AS seconds,
        CAST(COALESCE(a.trainable_params, j.trainable_params) AS FLOAT)
            / CAST(NULLIF(COALESCE(a.total_params, j.total_params), 0) AS FLOAT) AS share
    FROM results r
    JOIN jobs j ON j.id = r.job_id
    LEFT JOIN jobs a ON a.id = {ref}
    WHERE j.status = '{JobStatus.SUCCEEDED.value}'
      AND NOT EXISTS (
        SELECT 1 FROM results l
        WHERE l.job_id = r.job_id AND l.split = r.split AND {order("l")} > {order("r")}
      )
) kept
GROUP BY model, dataset, kind, adapter, config, split
"""
