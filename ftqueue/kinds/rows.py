"""What a job's kind says about its row: what it published, the adapter it trained, its JSON form.

The store knows rows, not kinds; these read a row and ask the registry what its kind means.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ftqueue.artifacts import objects, publishing
from ftqueue.core.states import JobStatus, Priority
from ftqueue.errors import AdapterError, FtqueueError, JobNotFound, SpecError
from ftqueue.kinds import registry as kinds
from ftqueue.settings import get_settings
from ftqueue.store import db
from ftqueue.store.schema import Job

_ADAPTERS_HINT = "`ftqueue list --status succeeded` shows the jobs that trained one."


def adapter_dir_of(job_id: int, *, flag: str = "--adapter-job") -> Path:
    """The published adapter of an earlier training job, or AdapterError saying why not.

    ``flag`` is how the command the user typed names the job (``--adapter-job``, ``JOB``).
    """
    row = None
    # jobs.id is a 32-bit INTEGER on PostgreSQL: a larger id is no job, not a query to fail.
    if job_id <= 2**31 - 1:
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
    try:
        return local_output(path)
    except FtqueueError as exc:
        raise AdapterError(f"{flag} {job_id}: {exc.message}", param=flag) from None


def output_of(job_id: int) -> str:
    """The output location a job's row holds, or an error saying why it has none."""
    row = None
    if job_id <= 2**31 - 1:
        with db.session_scope() as session:
            row = session.execute(
                select(Job.status, Job.output_path).where(Job.id == job_id)
            ).one_or_none()
    if row is None:
        raise JobNotFound(
            f"no job {job_id} in this database: `ftqueue list` shows the jobs there are."
        )
    status, path = row
    if not path:
        raise SpecError(
            f"job {job_id} has published nothing (status {status}): only a job that succeeded "
            "has outputs; `ftqueue list --status succeeded` shows them",
            param="JOB",
        )
    return str(path)


def object_root() -> objects.ObjectRoot | None:
    """The object store the artifacts root is on, or None for a local directory."""
    settings = get_settings()
    if settings.artifacts_url is None:
        return None
    return objects.ObjectRoot(settings.artifacts_url, settings.s3_endpoint_url)


def output_location(path: str) -> str:
    """Where a row's output is, for people: a local path or a URL.

    Rows hold locations relative to the artifacts root; those written before that (absolute
    paths outside the root) are taken as they are.
    """
    if Path(path).is_absolute():
        return path
    root = object_root()
    if root is not None:
        return root.location(path)
    return str(get_settings().artifacts_dir / path)


def local_output(path: str) -> Path:
    """A local directory holding a row's output: the published one, or a copy of the object
    store's, downloaded whole and checked into the cache (kept while it is current).

    FtqueueError saying what to check when it is not there.
    """
    root = object_root()
    if Path(path).is_absolute() or root is None:
        local = get_settings().artifacts_dir / path
        if not local.is_dir():
            raise FtqueueError(
                f"its output {local} is missing from this machine; check that "
                "FTQUEUE_ARTIFACTS_DIR is the shared directory the job wrote to."
            )
        return local
    cache = get_settings().artifacts_cache_dir / path
    current = objects.read_manifest(root, path)
    if current is None:
        raise FtqueueError(
            f"{root.location(path)} holds no complete output (an upload that did not finish, "
            "or a different FTQUEUE_ARTIFACTS_DIR than the job's); run the job again"
        )
    try:
        cached = json.loads((cache / objects.MANIFEST).read_text())
    except (OSError, ValueError):
        cached = None
    if cached == current:
        return cache
    staging = publishing.new_staging_dir(cache.parent, cache.name)
    try:
        objects.download_dir(root, path, staging)
        publishing.publish_dir(staging, cache)
    finally:
        publishing.discard(staging)
    return cache


def outputs_of(job_ids: Sequence[int]) -> dict[int, tuple[str, list[str]]]:
    """What each job that published something published (see ``published``)."""
    with db.session_scope() as session:
        rows = session.scalars(
            select(Job).where(Job.id.in_(job_ids), Job.output_path.is_not(None))
        ).all()
        return {job.id: published(job) for job in rows}


def published(job: Job) -> tuple[str, list[str]]:
    """What a job published, as its kind names it, and the paths to show: its files, else the
    directory; no paths while it has published nothing."""
    kind = kinds.get(job.kind)
    label = kind.output_label if kind is not None else "output"
    if not job.output_path:
        return label, []
    names = kind.output_files if kind is not None else ()
    where = output_location(job.output_path)
    separator = "/" if objects.is_url(where) else os.sep
    return label, [f"{where}{separator}{n}" for n in names] or [where]


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
        "user": job.submitted_by,
        "gpu_class": job.gpu_class,
        "priority": Priority.of_level(job.priority).value,
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
        "output_path": output_location(job.output_path) if job.output_path else None,
        "output_files": published(job)[1] if job.output_path else [],
        "train_seconds": job.train_seconds,
        "samples_per_second": job.samples_per_second,
        "peak_memory_mb": job.peak_memory_mb,
        "trainable_params": job.trainable_params,
        "total_params": job.total_params,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "lease_expires_at": _iso(job.lease_expires_at),
        "finished_at": _iso(job.finished_at),
        "spec_hash": job.spec_hash,
        "spec": job.spec,
        #: The hyper-parameters it trained with, those the spec left to the device included.
        "trained_with": job.trained_with,
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
