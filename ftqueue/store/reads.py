"""Reading jobs: every query that reads job rows lives here (writes are in lifecycle.py).

Small keyword-only functions over a session, shared by the CLI, the worker, the reaper and
the kinds; and the one JSON form of a job that every `--json` prints.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ftqueue.core.outcome import Progress
from ftqueue.core.states import STATUSES, JobStatus
from ftqueue.errors import AdapterError, FilterError, JobNotFound
from ftqueue.kinds import registry as kinds
from ftqueue.store import db
from ftqueue.store.schema import Job, JobTag, Result, held_by_attempt


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
    for kind in job_kinds:
        kinds.lookup(kind)
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
    )
    with db.session_scope() as session:
        rows = session.execute(select(*cols).where(Job.id.in_(job_ids))).all()
    return {
        job_id: JobState(
            job_id, kind, JobStatus(status), attempts, worker, Progress(*progress), error, started
        )
        for job_id, kind, status, attempts, worker, *progress, error, started in rows
    }


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


def outputs_of(job_ids: Sequence[int]) -> dict[int, tuple[str, list[str]]]:
    """What each job that published something published (see ``published``)."""
    with db.session_scope() as session:
        rows = session.scalars(
            select(Job).where(Job.id.in_(job_ids), Job.output_path.is_not(None))
        ).all()
        return {job.id: published(job) for job in rows}


def unfinished(job_ids: Iterable[int]) -> set[int]:
    """Those of the jobs that exist and have not ended."""
    ids = list(job_ids)
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))
        return {job_id for job_id, status in rows if not JobStatus(status).terminal}


_ADAPTERS_HINT = "`ftqueue list --status succeeded` shows the jobs that trained one."


def adapter_dir_of(job_id: int, *, flag: str = "--adapter-job") -> Path:
    """The published adapter of an earlier training job, or AdapterError saying why not.

    ``flag`` is how the command the user typed names the job (``--adapter-job``, ``JOB``).
    """
    with db.session_scope() as session:
        row = session.execute(
            select(Job.kind, Job.status, Job.output_path).where(Job.id == job_id)
        ).one_or_none()
    if row is None:
        raise AdapterError(f"{flag} {job_id}: no such job; {_ADAPTERS_HINT}", param=flag)
    kind, status, path = row
    if kind not in kinds.with_role(kinds.Role.RUN):
        raise AdapterError(
            f"{flag} {job_id} is an {kind} job, which trains no adapter; {_ADAPTERS_HINT}",
            param=flag,
        )
    # A pruned trial keeps the adapter of the epochs it trained.
    if status not in (JobStatus.SUCCEEDED, JobStatus.PRUNED) or not path:
        raise AdapterError(
            f"{flag} {job_id} has status {status}, not succeeded, so it has no "
            f"adapter; {_ADAPTERS_HINT}",
            param=flag,
        )
    if not Path(path).is_dir():
        raise AdapterError(
            f"{flag} {job_id}: its adapter {path} is missing from this machine; check "
            "that FTQUEUE_ARTIFACTS_DIR is the shared directory the job wrote to.",
            param=flag,
        )
    return Path(path)


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


def published(job: Job) -> tuple[str, list[str]]:
    """What a job published, as its kind names it, and the paths to show: its files, else the
    directory; no paths while it has published nothing."""
    kind = kinds.get(job.kind)
    label = kind.output_label if kind is not None else "output"
    if not job.output_path:
        return label, []
    names = kind.output_files if kind is not None else ()
    return label, [str(Path(job.output_path, n)) for n in names] or [job.output_path]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(job: Job, *, detail: bool = False) -> dict[str, Any]:
    """The JSON form of a job, for every `--json`; ``detail`` adds stats, history and results.

    With ``detail`` the job must have been read with ``get_job(..., with_results=True)``.
    """
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "model": job.model,
        "dataset": job.dataset,
        "name": job.name,
        "sweep_id": job.sweep_id,
        "trial": job.trial,
        "selected_epoch": job.selected_epoch,
        "tags": job.tag_names,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "worker": job.worker,
        "task_id": job.task_id,
        "cancel_requested": job.cancel_requested,
        "progress": {
            "phase": job.progress_phase,
            "epoch": job.progress_epoch,
            "step": job.progress_step,
            "total": job.progress_total,
            "loss": job.progress_loss,
            "val_accuracy": job.progress_val_accuracy,
            "val_epoch": job.progress_val_epoch,
        },
        "error_type": job.error_type,
        "error_message": job.error_message,
        "output_path": job.output_path,
        "output_files": published(job)[1] if job.output_path else [],
        "train_seconds": job.train_seconds,
        "samples_per_second": job.samples_per_second,
        "peak_memory_mb": job.peak_memory_mb,
        "trainable_params": job.trainable_params,
        "total_params": job.total_params,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "finished_at": _iso(job.finished_at),
        "spec_hash": job.spec_hash,
        "spec": job.spec,
    }
    if not detail:
        return out
    out["queued_at"] = _iso(job.queued_at)
    out["stats"] = job.stats
    out["events"] = [
        {
            "at": _iso(e.at),
            "status": e.status,
            "attempt": e.attempt,
            "worker": e.worker,
            "detail": e.detail,
        }
        for e in job.events
    ]
    out["results"] = [
        {
            "split": r.split,
            "epoch": r.epoch,
            "accuracy": r.accuracy,
            "loss": r.loss,
            "macro_f1": r.macro_f1,
            "n_examples": r.n_examples,
            "attempt": r.attempt,
            "recorded_at": _iso(r.recorded_at),
        }
        for r in job.results
    ]
    return out
