"""A job's life in SQL: queued -> running -> succeeded | failed | cancelled; every write to
a job row goes through here (reads are in store.py).

Every transition is one conditional UPDATE (or one transaction holding the row), so two
workers, a redelivered message, the reaper and `ftqueue cancel` can race without a job being
run by two attempts at once or recorded twice. The attempt number is the fencing token: a
worker may write to a job only while ``jobs.attempts`` still equals the attempt it claimed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, text, update
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from ftqueue.core.outcome import Measurement, Progress
from ftqueue.core.states import JobStatus, Phase
from ftqueue.kinds import registry as kinds
from ftqueue.specs import config_hash
from ftqueue.store.db import session_scope
from ftqueue.store.schema import Job, JobEvent, JobTag, Result, UTCDateTime, utcnow

log = logging.getLogger(__name__)

STOPPED = "stopped at a step boundary"


@dataclass(frozen=True)
class NewJob:
    """What `submit` asks for: one row to insert."""

    kind: str
    spec: dict[str, Any]
    spec_hash: str
    model: str
    dataset: str
    tags: Sequence[str] = ()
    name: str | None = None
    sweep_id: str | None = None
    output_dir: str | None = None
    trial: int | None = None


@dataclass(frozen=True)
class Claim:
    """The right of one attempt to run a job and record its result."""

    job_id: int
    attempt: int
    worker: str
    kind: str
    spec: dict[str, Any]
    output_dir: str | None = None


def _event(
    session: Session,
    job_id: int,
    status: str,
    attempt: int,
    worker: str | None,
    detail: str | None = None,
) -> None:
    session.add(
        JobEvent(
            job_id=job_id, status=status, attempt=attempt, worker=worker, detail=detail, at=utcnow()
        )
    )


def new_task_id() -> str:
    return str(uuid.uuid4())


def create_jobs(
    session: Session,
    jobs: Iterable[NewJob],
    *,
    max_attempts: int,
    held_by: str | None = None,
    lease_seconds: int | None = None,
) -> list[Job]:
    """Insert queued rows (each with the Celery task id it will be published under).

    ``held_by`` (an eager process, which runs the jobs itself) holds them under a lease from
    the start, so that they are ended, not left queued, if it dies before running them.
    The rows go in as multi-row INSERTs in the caller's transaction (a 10,000-job grid took
    seconds through the unit of work).
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds or 0) if held_by else None
    wanted = list(jobs)
    rows: list[dict[str, Any]] = []
    for new in wanted:
        kinds.lookup(new.kind)  # the schema does not check kinds: the registry does
        rows.append(
            {
                "kind": new.kind,
                "status": JobStatus.QUEUED.value,
                "spec": new.spec,
                "spec_hash": new.spec_hash,
                "config_hash": config_hash(new.spec),
                "model": new.model,
                "dataset": new.dataset,
                "sweep_id": new.sweep_id,
                "trial": new.trial,
                "name": new.name,
                "output_dir": new.output_dir,
                "attempts": 0,
                "max_attempts": max_attempts,
                "cancel_requested": False,
                "task_id": new_task_id(),
                "created_at": now,
                "queued_at": now,
                "worker": held_by,
                "lease_expires_at": lease,
            }
        )
    if not rows:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    id_of = _insert_unnest(session, rows) if postgres else _insert_many(session, rows)
    configure_mappers()  # what the constructor would have done on the first Job of a process
    created = [_detached_job(id_of[row["task_id"]], row) for row in rows]
    ids = [job.id for job in created]
    tag_rows = []
    for job, new in zip(created, wanted, strict=True):
        names = list(dict.fromkeys(new.tags))
        tag_rows += [{"job_id": job.id, "tag": t} for t in names]
        # Set as loaded: a constructor would fire events per tag that cost more than the INSERT.
        set_committed_value(job, "tags", [JobTag(job_id=job.id, tag=t) for t in names])
    events = {"status": JobStatus.QUEUED.value, "detail": "submitted", "at": now}
    if postgres:
        session.execute(
            text(
                "INSERT INTO job_events (job_id, status, attempt, detail, at) "
                "SELECT unnest(CAST(:ids AS integer[])), :status, 0, :detail, :at"
            ),
            {"ids": ids, **events},
        )
        if tag_rows:
            session.execute(
                text(
                    "INSERT INTO job_tags (job_id, tag) SELECT * FROM "
                    "unnest(CAST(:ids AS integer[]), CAST(:tags AS varchar[]))"
                ),
                {"ids": [t["job_id"] for t in tag_rows], "tags": [t["tag"] for t in tag_rows]},
            )
    else:
        events_table, tags_table = (cast(Table, m.__table__) for m in (JobEvent, JobTag))
        session.execute(insert(events_table), [{"job_id": i, "attempt": 0, **events} for i in ids])
        if tag_rows:
            session.execute(insert(tags_table), tag_rows)
    return created


def _insert_many(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert job rows as multi-row INSERTs; returns each row's id by its task id.

    SQLAlchemy pages them within the backend's parameter limits; rows come back in no
    promised order (asking for one costs SQLite a statement per row), so each id is matched
    to its row by the row's unique task id.
    """
    table = cast(Table, Job.__table__)
    returning = insert(table).returning(table.c.task_id, table.c.id)
    return {task_id: job_id for task_id, job_id in session.execute(returning, rows)}


#: The columns of new job rows that differ from row to row, sent as one array each ...
_VARYING = ("kind", "spec", "spec_hash", "config_hash", "model", "dataset", "sweep_id", "trial",
            "name", "output_dir", "task_id")  # fmt: skip
#: The array type of each varying column that is not text.
_ARRAY_TYPES = {"spec": "json", "trial": "integer"}
#: ... and those every row of one submit shares, sent once.
_SAME = ("status", "attempts", "max_attempts", "cancel_requested", "created_at", "queued_at",
         "worker", "lease_expires_at")  # fmt: skip


def _insert_unnest(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """The same on PostgreSQL, as one INSERT ... SELECT FROM unnest(arrays): a short statement.

    A multi-row VALUES list of 10,000 rows has 180,000 placeholders, which psycopg parses in
    Python page by page (3 s of a 10,000-job submit); ten arrays are ten parameters.
    """
    first = rows[0]
    for c in _SAME:
        assert all(row[c] == first[c] for row in rows), c
    params: dict[str, Any] = {c: first[c] for c in _SAME}
    params.update({c: [row[c] for row in rows] for c in _VARYING})
    params["spec"] = [json.dumps(spec) for spec in params["spec"]]
    arrays = ", ".join(f"CAST(:{c} AS {_ARRAY_TYPES.get(c, 'varchar')}[])" for c in _VARYING)
    constants = ", ".join(f":{c}" for c in _SAME)
    statement = text(
        f"INSERT INTO jobs ({', '.join(_VARYING + _SAME)}) "
        f"SELECT u.*, {constants} FROM unnest({arrays}) AS u RETURNING task_id, id"
    ).bindparams(
        # As the ORM would bind them: timezone-aware UTC timestamps.
        bindparam("created_at", type_=UTCDateTime()),
        bindparam("queued_at", type_=UTCDateTime()),
        bindparam("lease_expires_at", type_=UTCDateTime()),
    )
    return {task_id: job_id for task_id, job_id in session.execute(statement, params)}


def _detached_job(job_id: int, row: dict[str, Any]) -> Job:
    """A Job holding what was just inserted, outside any session.

    Built without the ORM's attribute events: through the constructor they cost more than
    the INSERT itself for a 10,000-job grid.
    """
    job: Job = manager_of_class(Job).new_instance()
    job.__dict__.update(row, id=job_id)
    return job


def claim(
    job_id: int, *, worker: str, lease_seconds: int, task_id: str | None = None
) -> Claim | None:
    """Take a job for a new attempt, or return None when this delivery has nothing to do.

    A queued job is taken. A running job is taken over only when its lease has expired: a
    live, heart-beating attempt is never superseded, whatever the claiming worker's name.
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds)
    takeover = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    with session_scope(write=True) as session:
        # RETURNING hands back what the attempt needs in the same statement: a claim is one
        # round trip for the UPDATE and one for its event, however many workers claim at once.
        taken = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                or_(Job.status == JobStatus.QUEUED, takeover),
                Job.attempts < Job.max_attempts,
                Job.cancel_requested.is_(False),
            )
            .values(
                status=JobStatus.RUNNING,
                attempts=Job.attempts + 1,
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=lease,
                progress_phase=Phase.STARTING,
                progress_epoch=None,
                progress_step=None,
                progress_total=None,
                progress_loss=None,
                progress_val_accuracy=None,
                progress_val_epoch=None,
                error_type=None,
                error_message=None,
            )
            .returning(Job.attempts, Job.kind, Job.spec, Job.output_dir)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if taken is not None:
            attempts, kind, spec, output_dir = taken
            detail = f"task {task_id}" if task_id else None
            _event(session, job_id, JobStatus.RUNNING, attempts, worker, detail)
            return Claim(job_id, attempts, worker, kind, dict(spec), output_dir)
        job = session.get(Job, job_id)
        if job is None:
            log.warning("job %s: no such row; dropping its message", job_id)
            return None
        _explain_no_claim(session, job, worker, now)
        return None


def _explain_no_claim(session: Session, job: Job, worker: str, now: dt.datetime) -> None:
    """Settle the cases a claim refused that must not stay as they are."""
    if job.status == JobStatus.QUEUED and job.cancel_requested:
        _finish_cancelled(session, job, worker, "cancelled before it started")
    elif JobStatus(job.status).pending and job.attempts >= job.max_attempts:
        expired = job.status == JobStatus.QUEUED or (
            job.lease_expires_at is not None and job.lease_expires_at < now
        )
        if expired:
            _fail_row(
                session,
                job,
                "WorkerLost",
                f"gave up after {job.attempts} attempts: the worker running it died each time",
                worker,
            )
    else:
        log.info(
            "job %s is %s (attempt %s on %s); nothing to do for this delivery",
            job.id,
            job.status,
            job.attempts,
            job.worker,
        )


def _end(
    session: Session, job: Job, status: JobStatus, worker: str | None, detail: str | None
) -> None:
    """Move a job to a terminal status (the one place that does)."""
    job.status = status
    job.finished_at = utcnow()
    job.lease_expires_at = None
    _event(session, job.id, status, job.attempts, worker, detail)


def _fail_row(
    session: Session, job: Job, error_type: str, message: str, worker: str | None
) -> None:
    job.error_type = error_type
    job.error_message = message
    _end(session, job, JobStatus.FAILED, worker, f"{error_type}: {message}")


def _finish_cancelled(session: Session, job: Job, worker: str | None, detail: str) -> None:
    job.cancel_requested = True
    job.output_path = None
    _end(session, job, JobStatus.CANCELLED, worker, detail)


def _owned(session: Session, claim: Claim) -> Job | None:
    """The job row, locked, if this attempt still holds it."""
    return session.scalars(
        select(Job)
        .where(
            Job.id == claim.job_id,
            Job.attempts == claim.attempt,
            Job.status == JobStatus.RUNNING,
        )
        .with_for_update()
    ).one_or_none()


def holding(session: Session, claim: Claim) -> Job | None:
    """The job row, locked, if this attempt still holds it (for decisions taken elsewhere)."""
    return _owned(session, claim)


def add_event(session: Session, claim: Claim, status: str, detail: str) -> None:
    """Note something that happened to a claimed attempt in the job's history."""
    _event(session, claim.job_id, status, claim.attempt, claim.worker, detail)


def heartbeat(claim: Claim, progress: Progress | None, *, lease_seconds: int) -> tuple[bool, bool]:
    """Renew the lease and store progress (None: unchanged); returns (owned, cancel requested)."""
    now = utcnow()
    values: dict[str, Any] = {
        "heartbeat_at": now,
        "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
    }
    if progress is not None:
        values.update(
            progress_phase=progress.phase,
            progress_epoch=progress.epoch,
            progress_step=progress.step,
            progress_total=progress.total,
            progress_loss=progress.loss,
            progress_val_accuracy=progress.val_accuracy,
            progress_val_epoch=progress.val_epoch,
        )
    with session_scope(write=True) as session:
        cancel = session.execute(
            update(Job)
            .where(
                Job.id == claim.job_id,
                Job.attempts == claim.attempt,
                Job.status == JobStatus.RUNNING,
            )
            .values(**values)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
    if cancel is None:
        return False, False
    return True, bool(cancel)


def record_success(
    claim: Claim,
    measurements: Sequence[Measurement],
    *,
    stats: dict[str, Any],
    publish: Callable[[], str | None] | None = None,
    status: JobStatus = JobStatus.SUCCEEDED,
) -> bool:
    """Record results and mark the job succeeded (or pruned), if this attempt still holds it.

    ``publish`` moves the job's directory into place and returns its path; it runs inside the
    transaction, after the ownership check, so a superseded attempt never touches it.
    Returns False (and writes nothing) when another attempt or a cancel got there first.
    """
    with session_scope(write=True) as session:
        job = _owned(session, claim)
        if job is None:
            return False
        if job.cancel_requested:
            _finish_cancelled(session, job, claim.worker, STOPPED)
            return False
        for m in measurements:
            session.add(
                Result(
                    job_id=job.id,
                    attempt=claim.attempt,
                    split=m.split,
                    epoch=m.epoch,
                    accuracy=m.accuracy,
                    loss=m.loss,
                    macro_f1=m.macro_f1,
                    n_examples=m.n_examples,
                    recorded_at=utcnow(),
                )
            )
        session.flush()  # a duplicate measurement fails here, before the adapter moves
        if publish is not None:
            job.output_path = publish()
        job.progress_phase = Phase.DONE
        # The last epoch's validation, which the heartbeat may not have written before the end.
        validation = [m for m in measurements if m.split == "validation"]
        if validation:
            last = max(validation, key=lambda m: m.epoch)
            job.progress_val_accuracy, job.progress_val_epoch = last.accuracy, last.epoch
        job.stats = stats
        job.train_seconds = stats.get("train_seconds")
        job.samples_per_second = stats.get("samples_per_second")
        job.peak_memory_mb = stats.get("peak_cuda_mb") or stats.get("peak_rss_mb")
        job.trainable_params = stats.get("trainable_params")
        job.total_params = stats.get("total_params")
        job.selected_epoch = stats.get("selected_epoch")
        pruned_at = stats.get("pruned_at")
        detail = f"stopped at rung {pruned_at}" if status == JobStatus.PRUNED else None
        _end(session, job, status, claim.worker, detail)
        return True


def record_failure(claim: Claim, error_type: str, message: str) -> bool:
    """Mark the job failed with its error, if this attempt still holds it."""
    with session_scope(write=True) as session:
        job = _owned(session, claim)
        if job is None:
            return False
        _fail_row(session, job, error_type, message[:4000], claim.worker)
        return True


def record_cancelled(claim: Claim) -> bool:
    with session_scope(write=True) as session:
        job = _owned(session, claim)
        if job is None:
            return False
        _finish_cancelled(session, job, claim.worker, STOPPED)
        return True


def fail_running(job_id: int, *, worker: str, error_type: str, message: str) -> bool:
    """Fail a job that this worker holds, from outside the attempt (hard time limit)."""
    with session_scope(write=True) as session:
        job = session.scalars(
            select(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker == worker)
            .with_for_update()
        ).one_or_none()
        if job is None:
            return False
        _fail_row(session, job, error_type, message, worker)
        return True


@dataclass(frozen=True)
class Cancellation:
    job_id: int
    before: str
    after: str


def cancel(job_ids: Sequence[int]) -> list[Cancellation]:
    """Cancel queued jobs at once; ask running ones to stop at their next step."""
    outcomes = []
    with session_scope(write=True) as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(job_ids)).with_for_update()).all()
        for job in sorted(jobs, key=lambda j: j.id):
            before = job.status
            if job.status == JobStatus.QUEUED:
                _finish_cancelled(session, job, None, "cancelled while queued")
            elif job.status == JobStatus.RUNNING and _lapsed(job):
                # No attempt is alive to stop at a step; fencing keeps a late one from writing.
                _finish_cancelled(session, job, None, "cancelled; its attempt had stopped")
            elif job.status == JobStatus.RUNNING and not job.cancel_requested:
                job.cancel_requested = True
                _event(
                    session, job.id, JobStatus.RUNNING, job.attempts, job.worker, "cancel requested"
                )
            outcomes.append(Cancellation(job.id, before, job.status))
    return outcomes


@dataclass
class ReapReport:
    requeued: list[Job] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def reap_expired(*, now: dt.datetime | None = None) -> ReapReport:
    """Re-queue running jobs whose worker stopped heart-beating; fail those out of attempts.

    Re-queued jobs get a new task id; the caller publishes a message for each.
    """
    now = now or utcnow()
    report = ReapReport()
    with session_scope(write=True) as session:
        expired = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            lost = f"worker {job.worker} stopped heart-beating (attempt {job.attempts})"
            if job.cancel_requested:
                _finish_cancelled(session, job, None, f"cancelled; {lost}")
            elif job.attempts >= job.max_attempts:
                _fail_row(
                    session,
                    job,
                    "WorkerLost",
                    f"gave up after {job.attempts} attempts: {lost}",
                    None,
                )
                report.failed.append(job.id)
            else:
                job.status = JobStatus.QUEUED
                job.queued_at = now
                job.task_id = new_task_id()
                job.lease_expires_at = None
                job.progress_phase = None
                _event(session, job.id, JobStatus.QUEUED, job.attempts, None, f"re-queued: {lost}")
                report.requeued.append(job)
    return report


def queued_without_message(pending_task_ids: set[str], *, older_than: dt.datetime) -> list[Job]:
    """Queued jobs whose task id is in no broker queue: their message was lost."""
    with session_scope(write=True) as session:
        # Many jobs may wait legitimately: compare task ids first, load only the lost rows.
        waiting = session.execute(
            select(Job.id, Job.task_id).where(
                Job.status == JobStatus.QUEUED,
                Job.queued_at < older_than,
                # Held by a live eager process, which runs it without a message.
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < utcnow()),
            )
        ).all()
        lost_ids = [job_id for job_id, task_id in waiting if task_id not in pending_task_ids]
        if not lost_ids:
            return []
        lost = list(
            session.scalars(
                select(Job)
                .where(Job.id.in_(lost_ids), Job.status == JobStatus.QUEUED)
                .with_for_update()
            )
        )
        for job in lost:
            job.task_id = new_task_id()
            job.queued_at = utcnow()
            _event(
                session, job.id, JobStatus.QUEUED, job.attempts, None, "re-published: message lost"
            )
        return lost


def _lapsed(job: Job, now: dt.datetime | None = None) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at < (now or utcnow())


# --- jobs held by an eager process (FTQUEUE_EAGER=1) ----------------------------------------


def renew_held(holder: str, *, lease_seconds: int) -> int:
    """Renew the lease on the queued jobs ``holder`` holds; returns how many it still holds."""
    now = utcnow()
    with session_scope(write=True) as session:
        result = session.execute(
            update(Job)
            .where(Job.worker == holder, Job.status == JobStatus.QUEUED)
            .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def end_abandoned(job_ids: Sequence[int] | None = None, *, holder_prefix: str) -> list[int]:
    """End the queued or running jobs held by processes named ``holder_prefix...`` whose lease
    lapsed: their process died, and no worker will ever receive them. Returns their ids.

    Cancelled when a cancel was asked for, else failed as WorkerLost. Reads first, so that a
    command that finds nothing to end takes no write lock.
    """
    now = utcnow()
    where = [
        Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
        Job.worker.startswith(holder_prefix, autoescape=True),
        Job.lease_expires_at < now,
    ]
    if job_ids is not None:
        where.append(Job.id.in_(list(job_ids)))
    with session_scope() as session:
        found = list(session.scalars(select(Job.id).where(*where)))
    if not found:
        return []
    ended = []
    with session_scope(write=True) as session:
        rows = session.scalars(select(Job).where(Job.id.in_(found), *where).with_for_update())
        for job in rows:
            if job.status == JobStatus.RUNNING:
                lost = f"the process running it ({job.worker}) stopped heart-beating"
            else:
                lost = f"the process that was to run it ({job.worker}) died before it started"
            if job.cancel_requested:
                _finish_cancelled(session, job, None, f"cancelled; {lost}")
            else:
                _fail_row(session, job, "WorkerLost", f"{lost}: submit it again to run it", None)
            ended.append(job.id)
    return ended


def end_held(holder: str, *, error_type: str, message: str) -> list[int]:
    """End every queued or running job ``holder`` holds, because its process is stopping."""
    with session_scope(write=True) as session:
        rows = session.scalars(
            select(Job)
            .where(
                Job.worker == holder,
                Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
            )
            .with_for_update()
        ).all()
        for job in rows:
            _fail_row(session, job, error_type, message, holder)
        return [job.id for job in rows]
