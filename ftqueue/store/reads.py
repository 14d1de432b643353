"""Reading jobs: queries over job rows (writes: insert.py, lifecycle.py, recovery.py).

Small keyword-only functions over a session, shared by the API, the worker, the reaper and
the kinds. What a job's kind says about its row (its outputs, its JSON form) is in kinds/rows.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ftqueue.core.outcome import Progress
from ftqueue.core.states import (
    GPU_CLASS_PATTERN,
    STATUSES,
    JobStatus,
    Priority,
)
from ftqueue.errors import FilterError, JobNotFound
from ftqueue.store import db
from ftqueue.store.schema import Job, JobTag, Result, RungDecision, Sweep, held_by_attempt


def get_job(session: Session, job_id: int, *, with_results: bool = False) -> Job:
    """The job with this id, or JobNotFound."""
    options = [selectinload(Job.results), selectinload(Job.events)] if with_results else []
    job = session.get(Job, job_id, options=options)
    if job is None:
        raise JobNotFound(
            f"no job {job_id} in this database: `ftqueue list` shows the jobs there are."
        )
    return job


def list_jobs(
    session: Session,
    *,
    statuses: Sequence[str] = (),
    job_kinds: Sequence[str] = (),
    sweep: str | None = None,
    tags: Sequence[str] = (),
    model: str | None = None,
    dataset: str | None = None,
    limit: int | None = 50,
    before: int | None = None,
    user: str | None = None,
) -> list[Job]:
    """Jobs matching every filter given, newest first; ``before``: ids below it only.

    Pages are cut by id, not OFFSET, so a page deep in a million jobs is read from the index
    as fast as the first.
    """
    for status in statuses:
        if status not in STATUSES:
            raise FilterError(
                f"unknown status {status!r}: use one of {', '.join(STATUSES)}.",
                param="--status",
            )
    query = select(Job).order_by(Job.id.desc())
    if before is not None:
        query = query.where(Job.id < before)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if job_kinds:
        query = query.where(Job.kind.in_(job_kinds))
    if sweep:
        query = query.where(Job.sweep_id == sweep)
    if model:
        query = query.where(Job.model == model)
    if dataset:
        query = query.where(Job.dataset == dataset)
    if user:
        query = query.where(Job.submitted_by == user)
    for tag in tags:
        query = query.where(Job.id.in_(select(JobTag.job_id).where(JobTag.tag == tag)))
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


#: Which earlier job stands for a spec submitted again: a success, else one still pending.
_SAME_SPEC_RANK = {JobStatus.SUCCEEDED: 0, JobStatus.RUNNING: 1, JobStatus.QUEUED: 2}


def find_same_spec(session: Session, spec_hashes: Iterable[str]) -> dict[str, Job]:
    """For each spec hash, the best earlier job with it: succeeded first, else queued/running."""
    hashes = list(set(spec_hashes))
    found: dict[str, Job] = {}
    rank = _SAME_SPEC_RANK
    for start in range(0, len(hashes), 500):
        chunk = hashes[start : start + 500]
        query = (
            select(Job)
            .where(Job.spec_hash.in_(chunk), Job.status.in_(tuple(rank)))
            .order_by(Job.id.desc())
        )
        for job in session.scalars(query):
            best = found.get(job.spec_hash)
            if best is None or rank[JobStatus(job.status)] < rank[JobStatus(best.status)]:
                found[job.spec_hash] = job
    return found


@dataclass(frozen=True)
class Pruned:
    """A trial early stopping pruned: its job, its sweep and the rung it stopped at (in the
    sweep's rung unit: epochs, possibly fractional, or steps)."""

    job_id: int
    sweep_id: str | None
    rung: float | None


def find_pruned(session: Session, config_hashes: Iterable[str]) -> dict[str, Pruned]:
    """For each config hash, the latest pruned trial with it."""
    hashes = list(set(config_hashes))
    found: dict[str, Pruned] = {}
    if len(hashes) > 500:
        # A big grid asks about many configurations, and pruned ones are few: the pruned
        # jobs' configurations first (one index scan), then only the ones they share.
        pruned = select(Job.config_hash).where(Job.status == JobStatus.PRUNED).distinct()
        hashes = list(set(session.scalars(pruned)).intersection(hashes))
    for start in range(0, len(hashes), 500):
        query = (
            select(Job.config_hash, Job.id, Job.sweep_id, RungDecision.rung)
            .outerjoin(RungDecision, (RungDecision.job_id == Job.id) & RungDecision.keep.is_(False))
            .where(Job.config_hash.in_(hashes[start : start + 500]), Job.status == JobStatus.PRUNED)
            .order_by(Job.id.desc())
        )
        for config, job_id, sweep_id, rung in session.execute(query):
            if rung is not None and float(rung).is_integer():
                rung = int(rung)
            found.setdefault(config, Pruned(job_id, sweep_id, rung))
    return found


def attempt_held(job_id: int, attempt: int) -> tuple[bool, bool]:
    """Whether this attempt still holds the job, and whether a cancel was asked for.

    What a heartbeat needs between its writes: one primary-key read, no lock, no write.
    """
    with db.session_scope() as session:
        cancel = session.scalar(
            select(Job.cancel_requested).where(held_by_attempt(job_id, attempt))
        )
    return (cancel is not None, bool(cancel))


@dataclass(frozen=True)
class JobState:
    """What following a job needs: its status, attempts, worker, progress and error."""

    id: int
    kind: str
    status: JobStatus
    attempts: int
    worker: str | None
    progress: Progress
    error: str | None
    #: When the current attempt started (None while queued).
    started_at: dt.datetime | None = None
    #: The running attempt's last heartbeat write, and when its lease lapses.
    heartbeat_at: dt.datetime | None = None
    lease_expires_at: dt.datetime | None = None
    #: The GPU class whose queue it waits in (None: the shared queue).
    gpu_class: str | None = None

    @property
    def ended(self) -> bool:
        return self.status.terminal


def job_states(job_ids: Sequence[int]) -> dict[int, JobState]:
    """The current state of each job (missing ids are left out)."""
    cols = (
        Job.id,
        Job.kind,
        Job.status,
        Job.attempts,
        Job.worker,
        Job.progress_phase,
        Job.progress_epoch,
        Job.progress_step,
        Job.progress_total,
        Job.progress_loss,
        Job.progress_val_accuracy,
        Job.progress_val_epoch,
        Job.error_message,
        Job.started_at,
        Job.heartbeat_at,
        Job.lease_expires_at,
        Job.gpu_class,
    )
    with db.session_scope() as session:
        rows = session.execute(select(*cols).where(Job.id.in_(job_ids))).all()
    states = {}
    for job_id, kind, status, attempts, worker, *rest in rows:
        *progress, error, started, beat, lease, gpu_class = rest
        states[job_id] = JobState(
            job_id,
            kind,
            JobStatus(status),
            attempts,
            worker,
            Progress(*progress),
            error,
            started,
            beat,
            lease,
            gpu_class,
        )
    return states


def final_results(job_ids: Sequence[int]) -> dict[int, Result]:
    """Each job's headline measurement: its last test result, else its last result of any split."""
    best: dict[int, Result] = {}
    with db.session_scope() as session:
        rows = session.scalars(
            select(Result).where(Result.job_id.in_(job_ids)).order_by(Result.epoch, Result.id)
        ).all()
    for r in rows:
        current = best.get(r.job_id)
        if current is None or r.split == "test" or current.split != "test":
            best[r.job_id] = r
    return best


def unfinished(job_ids: Iterable[int]) -> set[int]:
    """Those of the jobs that exist and have not ended."""
    ids = list(job_ids)
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))
        return {job_id for job_id, status in rows if not JobStatus(status).terminal}


def models_of(job_ids: Sequence[int]) -> dict[int, str]:
    """The model of each job that exists."""
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.model).where(Job.id.in_(job_ids)))
        return {job_id: model for job_id, model in rows}


def spec_of(job_id: int) -> dict[str, Any] | None:
    """The stored spec of a job, or None when there is no such job."""
    with db.session_scope() as session:
        spec = session.scalar(select(Job.spec).where(Job.id == job_id))
    return dict(spec) if spec is not None else None


def sweep_row(sweep_id: str) -> Sweep | None:
    """A sweep's row, detached from its session (None: no such sweep)."""
    with db.session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is not None:
            session.expunge(sweep)
        return sweep


def queue_depths() -> dict[tuple[str, str | None], int]:
    """How many jobs wait in each queue, by (kind, GPU class or None); empty queues left out."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Job.kind, Job.gpu_class, func.count())
            .where(Job.status == JobStatus.QUEUED)
            .group_by(Job.kind, Job.gpu_class)
        )
        return {(kind, gpu_class): int(count) for kind, gpu_class, count in rows}


def queue_positions(job_ids: Sequence[int]) -> dict[int, int]:
    """Each queued job's place in its queue (1: next), as a worker of that queue takes them.

    A queue is a kind's jobs of one GPU class (or of none). Higher priorities go first, as
    their Redis lists are read first; within a priority, the oldest queued. A re-queued job
    goes to the back, as its message does; jobs not queued are left out.
    """
    if not job_ids:
        return {}
    # Time before id: one submit queues many jobs within the same instant.
    order = (
        func.coalesce(Job.priority, Priority.NORMAL.level),  # rows from before priorities
        func.coalesce(Job.queued_at, Job.created_at),
        Job.id,
    )
    ranked = (
        select(
            Job.id,
            func.row_number()
            .over(partition_by=(Job.kind, Job.gpu_class), order_by=order)
            .label("n"),
        )
        .where(Job.status == JobStatus.QUEUED)
        .subquery()
    )
    with db.session_scope() as session:
        rows = session.execute(
            select(ranked.c.id, ranked.c.n).where(ranked.c.id.in_(list(job_ids)))
        )
        return {job_id: int(n) for job_id, n in rows}


#: The statuses a worker is wanted for: jobs waiting, and jobs running (a running job whose
#: worker died needs a live worker's reaper to re-queue it, so it must keep one up).
BACKLOG_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def backlog_sql(
    job_kinds: Sequence[str], gpu_class: str | None = None, *, shared_only: bool = False
) -> str:
    """The SQL an autoscaler runs to size a worker pool: its queued and running jobs.

    Plain text, because the autoscaler (KEDA's postgresql trigger) runs it, not ftqueue; the
    manifests under deploy/kubernetes carry exactly this text (a test checks), so a filter
    added here is added in one place. With ``gpu_class``, only the jobs submitted to that
    class (``submit --gpu-class``): the pool of one ScaledObject per class; with
    ``shared_only``, the jobs of no class (the shared pool, where classes have pools of their
    own); with neither, every job of the kinds.
    """
    if not job_kinds or any(not k.isidentifier() for k in job_kinds):
        raise ValueError(f"job kinds must be plain names: {list(job_kinds)!r}")
    if gpu_class is not None and not GPU_CLASS_PATTERN.fullmatch(gpu_class):
        raise ValueError(f"a GPU class is a plain name: {gpu_class!r}")
    statuses = ", ".join(f"'{s}'" for s in BACKLOG_STATUSES)
    names = ", ".join(f"'{k}'" for k in sorted(job_kinds))
    query = f"SELECT count(*) FROM jobs WHERE status IN ({statuses}) AND kind IN ({names})"
    if gpu_class is not None and shared_only:
        raise ValueError("a pool is either one GPU class's or the shared one, not both")
    if gpu_class is not None:
        return f"{query} AND gpu_class = '{gpu_class}'"
    return f"{query} AND gpu_class IS NULL" if shared_only else query
