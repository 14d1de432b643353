"""Recovering jobs whose process is gone: lapsed leases, lost messages, eager holders."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ftqueue.core.states import JobStatus
from ftqueue.store.db import session_scope
from ftqueue.store.insert import new_task_id
from ftqueue.store.lifecycle import fail_row, finish_cancelled, record_event
from ftqueue.store.schema import Job, Sweep, utcnow


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
            _recover(session, job, lost, now, report)
    return report


def release_lost(
    worker: str,
    *,
    lost: str,
    job_id: int | None = None,
    keep_task_id: bool = False,
    crashed: tuple[str, Callable[[str | None], str]] | None = None,
) -> ReapReport:
    """Release the running jobs of a worker whose process is known dead, without its lease.

    The same outcome as a lapsed lease, seconds after the death instead of at lease expiry:
    re-queued (``keep_task_id`` when the broker redelivers the dead attempt's own message,
    else a new task id for the caller to publish), failed once out of attempts, or cancelled.
    The worker's name is held by one live process at a time, so a running job under it is the
    dead process's; taking it out of ``running`` fences that attempt's writes, as the reaper's
    re-queue does.

    ``crashed``: the attempt died of its job (a native crash, the OOM killer), so the job is
    failed at once, not re-queued: its error type, and its message made from the job's phase.
    """
    now = utcnow()
    report = ReapReport()
    where = [Job.worker == worker, Job.status == JobStatus.RUNNING]
    if job_id is not None:
        where.append(Job.id == job_id)
    with session_scope(write=True) as session:
        for job in session.scalars(select(Job).where(*where).with_for_update()).all():
            if crashed is not None and not job.cancel_requested:
                error_type, message = crashed
                fail_row(session, job, error_type, message(job.progress_phase), None)
                report.failed.append(job.id)
                continue
            _recover(session, job, f"{lost} (attempt {job.attempts})", now, report, keep_task_id)
    return report


def _recover(
    session: Session,
    job: Job,
    lost: str,
    now: dt.datetime,
    report: ReapReport,
    keep_task_id: bool = False,
) -> None:
    """End or re-queue a running job whose attempt is gone, under the attempts rule."""
    if job.cancel_requested:
        finish_cancelled(session, job, None, f"cancelled; {lost}")
    elif job.attempts >= job.max_attempts:
        fail_row(session, job, "WorkerLost", f"gave up after {job.attempts} attempts: {lost}", None)
        report.failed.append(job.id)
    else:
        job.status = JobStatus.QUEUED
        job.queued_at = now
        if not keep_task_id:
            job.task_id = new_task_id()
        job.lease_expires_at = None
        job.progress_phase = None
        record_event(session, job.id, JobStatus.QUEUED, job.attempts, None, f"re-queued: {lost}")
        report.requeued.append(job)


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
            record_event(
                session, job.id, JobStatus.QUEUED, job.attempts, None, "re-published: message lost"
            )
        return lost


# --- jobs held by an eager process (FTQUEUE_EAGER=1) ----------------------------------------


def renew_held(holder: str, *, lease_seconds: int) -> int:
    """Renew the lease on the queued jobs ``holder`` holds, and on the sweep it runs; returns
    how many jobs it still holds."""
    now = utcnow()
    with session_scope(write=True) as session:
        result = session.execute(
            update(Job)
            .where(Job.worker == holder, Job.status == JobStatus.QUEUED)
            .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        # The sweep it runs, if any: a lapsed lease says the sweep's process died.
        session.execute(
            update(Sweep)
            .where(Sweep.holder == holder, Sweep.ended_at.is_(None))
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
                finish_cancelled(session, job, None, f"cancelled; {lost}")
            else:
                fail_row(session, job, "WorkerLost", f"{lost}: submit it again to run it", None)
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
            fail_row(session, job, error_type, message, holder)
        return [job.id for job in rows]


def requeue_ended(
    session: Session,
    job: Job,
    *,
    detail: str,
    max_attempts: int,
    held_by: str | None = None,
    lease_expires_at: dt.datetime | None = None,
) -> None:
    """Queue an ended job again as it was (a sweep resumed): a new task id, a fresh set of
    attempts, the end's error cleared; its events keep what happened before."""
    job.status = JobStatus.QUEUED
    job.queued_at = utcnow()
    job.task_id = new_task_id()
    job.worker = held_by
    job.lease_expires_at = lease_expires_at
    job.cancel_requested = False
    job.error_type = None
    job.error_message = None
    job.finished_at = None
    job.output_path = None
    job.progress_phase = None
    job.max_attempts = job.attempts + max_attempts
    record_event(session, job.id, JobStatus.QUEUED, job.attempts, None, detail)
