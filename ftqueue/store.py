"""Reading jobs: small keyword-only functions over a session, shared by CLI, worker and report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ftqueue.errors import FilterError, JobNotFound
from ftqueue.models import JOB_KINDS, JOB_STATUSES, Job, JobTag


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
    kinds: Sequence[str] = (),
    sweep: str | None = None,
    tags: Sequence[str] = (),
    model: str | None = None,
    dataset: str | None = None,
    limit: int | None = 50,
) -> list[Job]:
    """Jobs matching every filter given, newest first."""
    for status in statuses:
        if status not in JOB_STATUSES:
            raise FilterError(
                f"unknown status {status!r}: use one of {', '.join(JOB_STATUSES)}.",
                param="--status",
            )
    for kind in kinds:
        if kind not in JOB_KINDS:
            raise FilterError(
                f"unknown kind {kind!r}: use one of {', '.join(JOB_KINDS)}.", param="--kind"
            )
    query = select(Job).order_by(Job.id.desc())
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if kinds:
        query = query.where(Job.kind.in_(kinds))
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


def job_summary(job: Job) -> dict[str, Any]:
    """A JSON-safe dict of a job's columns, for `--json` output."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "model": job.model,
        "dataset": job.dataset,
        "name": job.name,
        "sweep_id": job.sweep_id,
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
        },
        "error_type": job.error_type,
        "error_message": job.error_message,
        "adapter_path": job.adapter_path,
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


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
