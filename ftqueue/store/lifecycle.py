"""A job's life in SQL: queued -> running -> succeeded | failed | cancelled, fenced.

Rows are created by store.insert and recovered from dead processes by store.recovery; reads
are in store.reads.

Every transition is one conditional UPDATE (or one transaction holding the row), so two
workers, a redelivered message, the reaper and `ftqueue cancel` can race without a job being
run by two attempts at once or recorded twice. The attempt number is the fencing token: a
worker may write to a job only while ``jobs.attempts`` still equals the attempt it claimed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from ftqueue.core.outcome import Measurement, Progress
from ftqueue.core.states import JobStatus, Phase
from ftqueue.store import outbox, summary
from ftqueue.store.db import session_scope
from ftqueue.store.schema import Job, JobEvent, Result, held_by_attempt, utcnow

log = logging.getLogger(__name__)

STOPPED = "stopped at a step boundary"


@dataclass(frozen=True)
class Claim:
    """The right of one attempt to run a job and record its result."""

    job_id: int
    attempt: int
    worker: str
    kind: str
    spec: dict[str, Any]
    output_dir: str | None = None


def record_event(
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


class OverUserCap(Exception):
    """Raised by a claim refused because the job's submitter runs as many jobs as allowed.

    Nothing was written: the delivery hands its message back, with a delay, and no attempt
    is counted.
    """

    def __init__(self, job_id: int, user: str, running: int) -> None:
        super().__init__(f"job {job_id}: {user} runs {running} jobs already")
        self.user = user
        self.running = running


def _running_of(session: Session, user: str, job_id: int) -> int:
    """How many jobs ``user`` has running, this one aside."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.submitted_by == user, Job.status == JobStatus.RUNNING, Job.id != job_id)
        )
        or 0
    )


def _user_lock(session: Session, user: str) -> None:
    """Serialise the claims of one submitter's jobs until this transaction ends.

    SQLite's write transactions are serial already. On PostgreSQL two claims would each
    count the other's job as not yet running, so each takes the user's advisory lock first;
    the count after it (a new snapshot under READ COMMITTED) sees the other's commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"ftqueue-user:{user}".encode()).digest()[:8], "big")
        session.execute(select(func.pg_advisory_xact_lock(key - 2**63)))


def claim(
    job_id: int,
    *,
    worker: str,
    lease_seconds: int,
    task_id: str | None = None,
    max_running_per_user: int | None = None,
) -> Claim | None:
    """Take a job for a new attempt, or return None when this delivery has nothing to do.

    A queued job is taken. A running job is taken over only when its lease has expired: a
    live, heart-beating attempt is never superseded, whatever the claiming worker's name.
    With ``max_running_per_user``, a queued job whose submitter has that many jobs running is
    not taken: OverUserCap, with nothing written (the count and the claim are one
    transaction, so two workers cannot both take the last free place).
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds)
    takeover = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    with session_scope(write=True) as session:
        if max_running_per_user is not None:
            user = session.scalar(
                select(Job.submitted_by).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            )
            if user is not None:
                _user_lock(session, user)
                running = _running_of(session, user, job_id)
                if running >= max_running_per_user:
                    raise OverUserCap(job_id, user, running)
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
            record_event(session, job_id, JobStatus.RUNNING, attempts, worker, detail)
            return Claim(job_id, attempts, worker, kind, dict(spec), output_dir)
        # Locked, so that of this delivery and the reaper, one ends a job out of attempts, and
        # only once; a row another process holds is theirs to settle, not this delivery's.
        job = session.scalars(
            select(Job).where(Job.id == job_id).with_for_update(skip_locked=True)
        ).one_or_none()
        if job is None:
            if session.get(Job, job_id) is None:
                log.warning("job %s: no such row; dropping its message", job_id)
            else:
                log.info(
                    "job %s is being changed elsewhere; nothing to do for this delivery", job_id
                )
            return None
        _explain_no_claim(session, job, worker, now)
        return None


def _explain_no_claim(session: Session, job: Job, worker: str, now: dt.datetime) -> None:
    """Settle the cases a claim refused that must not stay as they are."""
    if job.status == JobStatus.QUEUED and job.cancel_requested:
        finish_cancelled(session, job, worker, "cancelled before it started")
    elif JobStatus(job.status).pending and job.attempts >= job.max_attempts:
        expired = job.status == JobStatus.QUEUED or (
            job.lease_expires_at is not None and job.lease_expires_at < now
        )
        if expired:
            fail_row(
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
    """Move a job to a terminal status (the one place that does), and note its event."""
    job.status = status
    job.finished_at = utcnow()
    job.lease_expires_at = None
    record_event(session, job.id, status, job.attempts, worker, detail)
    outbox.job_ended(session, job.id, status)


def fail_row(session: Session, job: Job, error_type: str, message: str, worker: str | None) -> None:
    job.error_type = error_type
    job.error_message = message
    _end(session, job, JobStatus.FAILED, worker, f"{error_type}: {message}")


def finish_cancelled(session: Session, job: Job, worker: str | None, detail: str) -> None:
    job.cancel_requested = True
    job.output_path = None
    _end(session, job, JobStatus.CANCELLED, worker, detail)


def holding(session: Session, claim: Claim) -> Job | None:
    """The job row, locked, if this attempt still holds it."""
    return session.scalars(
        select(Job).where(held_by_attempt(claim.job_id, claim.attempt)).with_for_update()
    ).one_or_none()


def add_event(session: Session, claim: Claim, status: str, detail: str) -> None:
    """Note something that happened to a claimed attempt in the job's history."""
    record_event(session, claim.job_id, status, claim.attempt, claim.worker, detail)


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
            .where(held_by_attempt(claim.job_id, claim.attempt))
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
        job = holding(session, claim)
        if job is None:
            return False
        if job.cancel_requested:
            finish_cancelled(session, job, claim.worker, STOPPED)
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
        job.trained_with = stats.get("recipe")
        job.train_seconds = stats.get("train_seconds")
        job.samples_per_second = stats.get("samples_per_second")
        job.peak_memory_mb = stats.get("peak_cuda_mb") or stats.get("peak_rss_mb")
        job.trainable_params = stats.get("trainable_params")
        job.total_params = stats.get("total_params")
        job.selected_epoch = stats.get("selected_epoch")
        pruned_at = stats.get("pruned_at")
        detail = f"stopped at rung {pruned_at}" if status == JobStatus.PRUNED else None
        _end(session, job, status, claim.worker, detail)
        summary.add_job(session, job)  # the report's sums, never behind the results
        return True


def _end_if_held(claim: Claim, end: Callable[[Session, Job], None]) -> bool:
    """Run ``end`` on the job's locked row if this attempt still holds it; False if not."""
    with session_scope(write=True) as session:
        job = holding(session, claim)
        if job is None:
            return False
        end(session, job)
        return True


def record_failure(claim: Claim, error_type: str, message: str) -> bool:
    """Mark the job failed with its error, if this attempt still holds it."""
    return _end_if_held(
        claim, lambda s, job: fail_row(s, job, error_type, message[:4000], claim.worker)
    )


def record_cancelled(claim: Claim) -> bool:
    """Mark the job cancelled at a step boundary, if this attempt still holds it."""
    return _end_if_held(claim, lambda s, job: finish_cancelled(s, job, claim.worker, STOPPED))


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
        fail_row(session, job, error_type, message, worker)
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
                finish_cancelled(session, job, None, "cancelled while queued")
            elif job.status == JobStatus.RUNNING and _lapsed(job):
                # No attempt is alive to stop at a step; fencing keeps a late one from writing.
                finish_cancelled(session, job, None, "cancelled; its attempt had stopped")
            elif job.status == JobStatus.RUNNING and not job.cancel_requested:
                job.cancel_requested = True
                record_event(
                    session, job.id, JobStatus.RUNNING, job.attempts, job.worker, "cancel requested"
                )
            outcomes.append(Cancellation(job.id, before, job.status))
    return outcomes


def _lapsed(job: Job, now: dt.datetime | None = None) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at < (now or utcnow())
