"""The workers table: each worker process's row, written by the process, read by everyone.

A row is live while its process refreshes it; one not refreshed for ``GONE_AFTER`` of its
own refresh intervals reads as gone, and after ``FORGET_AFTER`` intervals the live workers
delete it. Readers compare against each row's own interval, so workers and readers need not
share a setting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, select, update

from ftqueue.core.states import JobStatus
from ftqueue.store import db
from ftqueue.store.schema import Job, Worker, utcnow

#: Refresh intervals missed before a worker reads as gone: one missed write is not a death.
GONE_AFTER = 3
#: Refresh intervals after which a gone worker's row is deleted.
FORGET_AFTER = 24


def is_live(last_seen: dt.datetime, refresh_seconds: float, now: dt.datetime) -> bool:
    """Whether a row refreshed at ``last_seen`` every ``refresh_seconds`` is live at ``now``."""
    return (now - last_seen).total_seconds() <= GONE_AFTER * refresh_seconds


def register(**columns: Any) -> None:
    """Write this worker's row, replacing one an earlier process left under the same name."""
    now = utcnow()
    columns.setdefault("started_at", now)
    columns.setdefault("last_seen_at", now)
    with db.session_scope(write=True) as session:
        session.execute(delete(Worker).where(Worker.name == columns["name"]))
        session.add(Worker(**columns))


def _running_job(name: str) -> Any:
    return (
        select(Job.id)
        .where(Job.worker == name, Job.status == JobStatus.RUNNING)
        .order_by(Job.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def refresh(name: str, *, pid: int) -> bool:
    """Mark the worker seen now, with the job it runs; False when its row is gone (deleted
    while the worker could not reach the database), so the caller registers again."""
    with db.session_scope() as session:
        result = session.execute(
            update(Worker)
            .where(Worker.name == name, Worker.pid == pid)
            .values(last_seen_at=utcnow(), job_id=_running_job(name))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def remove(name: str, *, pid: int) -> None:
    """Delete this worker's row (a clean shutdown); a row since taken by another pid stays."""
    with db.session_scope() as session:
        session.execute(delete(Worker).where(Worker.name == name, Worker.pid == pid))


def forget_gone(now: dt.datetime | None = None) -> list[str]:
    """Delete the rows of workers gone for ``FORGET_AFTER`` refresh intervals; their names."""
    now = now or utcnow()
    with db.session_scope() as session:
        rows = session.execute(
            select(Worker.name, Worker.last_seen_at, Worker.refresh_seconds)
        ).all()
        names = [
            name
            for name, seen, every in rows
            if (now - seen).total_seconds() > FORGET_AFTER * every
        ]
        if names:
            session.execute(delete(Worker).where(Worker.name.in_(names)))
    return names


@dataclass(frozen=True)
class WorkerView:
    """A worker's row as read, whether it is live, and the job the jobs table says it runs."""

    row: dict[str, Any]
    live: bool
    #: The running job held under this worker's name: id, kind, progress, heartbeat.
    job: dict[str, Any] | None


_JOB_COLUMNS = (
    Job.id,
    Job.kind,
    Job.progress_phase,
    Job.progress_epoch,
    Job.progress_step,
    Job.progress_total,
    Job.started_at,
    Job.heartbeat_at,
    Job.lease_expires_at,
)


def list_workers(now: dt.datetime | None = None) -> list[WorkerView]:
    """Every worker row, live ones first, each group by name."""
    now = now or utcnow()
    columns = [c.key for c in Worker.__table__.columns]
    with db.session_scope() as session:
        rows = [dict(r._mapping) for r in session.execute(select(*Worker.__table__.columns))]
        names = [r["name"] for r in rows]
        jobs: dict[str, dict[str, Any]] = {}
        if names:
            found = session.execute(
                select(Job.worker, *_JOB_COLUMNS)
                .where(and_(Job.worker.in_(names), Job.status == JobStatus.RUNNING))
                .order_by(Job.id)
            )
            for worker, *values in found:
                jobs[str(worker)] = dict(zip([c.key for c in _JOB_COLUMNS], values, strict=True))
    views = [
        WorkerView(
            {c: r[c] for c in columns},
            is_live(r["last_seen_at"], r["refresh_seconds"], now),
            jobs.get(r["name"]),
        )
        for r in rows
    ]
    return sorted(views, key=lambda v: (not v.live, v.row["name"]))


def live_consumers(queues: Sequence[str] | None = None) -> dict[str, int]:
    """How many live workers consume each queue (each of ``queues`` given, 0 where none)."""
    now = utcnow()
    counts: dict[str, int] = dict.fromkeys(queues or (), 0)
    with db.session_scope() as session:
        rows = session.execute(
            select(Worker.queues, Worker.last_seen_at, Worker.refresh_seconds)
        ).all()
    for consumed, seen, every in rows:
        if is_live(seen, every, now):
            for queue in consumed or ():
                if queues is None or queue in counts:
                    counts[queue] = counts.get(queue, 0) + 1
    return counts
