"""What a claimed job does: dispatch its spec to the trainer (or the synthetic job)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ftqueue import synthetic
from ftqueue.db import session_scope
from ftqueue.errors import AdapterError
from ftqueue.lifecycle import Claim
from ftqueue.models import Job
from ftqueue.settings import get_settings
from ftqueue.specs import EvaluateSpec, LoraSpec

SPEC_TYPES: dict[str, type[LoraSpec] | type[EvaluateSpec]] = {
    "lora": LoraSpec,
    "evaluate": EvaluateSpec,
}


def spec_from_dict(kind: str, data: dict[str, Any]) -> LoraSpec | EvaluateSpec:
    return SPEC_TYPES[kind].from_dict(data)


def adapter_of(job_id: int) -> Path:
    """The published adapter of an earlier LoRA job, or AdapterError saying why there is none."""
    with session_scope() as session:
        row = session.execute(
            select(Job.kind, Job.status, Job.adapter_path).where(Job.id == job_id)
        ).one_or_none()
    hint = "`ftqueue list --kind lora --status succeeded` shows the adapters there are."
    if row is None:
        raise AdapterError(f"--adapter-job {job_id}: no such job; {hint}", param="--adapter-job")
    kind, status, path = row
    if kind != "lora":
        raise AdapterError(
            f"--adapter-job {job_id} is an {kind} job, which trains no adapter; {hint}",
            param="--adapter-job",
        )
    if status != "succeeded" or not path:
        raise AdapterError(
            f"--adapter-job {job_id} has status {status}, not succeeded, so it has no "
            f"adapter; {hint}",
            param="--adapter-job",
        )
    if not Path(path).is_dir():
        raise AdapterError(
            f"--adapter-job {job_id}: its adapter {path} is missing from this machine; check "
            "that FTQUEUE_ARTIFACTS_DIR is the shared directory the job wrote to.",
            param="--adapter-job",
        )
    return Path(path)


def perform(claim: Claim, *, staging: Path | None, on_progress: Callable[[Any], None]) -> Any:
    """Run the job's work and return its outcome (measurements, stats, adapter directory)."""
    spec = spec_from_dict(claim.kind, claim.spec)
    cache_dir = get_settings().cache_dir
    if synthetic.is_synthetic(spec.model):
        return synthetic.run(spec, attempt=claim.attempt, staging=staging, on_progress=on_progress)
    from ftqueue import training

    try:
        if isinstance(spec, LoraSpec):
            assert staging is not None
            return training.run_lora(
                spec, adapter_dir=staging, cache_dir=cache_dir, on_progress=on_progress
            )
        adapter = adapter_of(spec.adapter_job) if spec.adapter_job is not None else None
        return training.run_evaluate(
            spec, cache_dir=cache_dir, adapter_dir=adapter, on_progress=on_progress
        )
    finally:
        # GPU memory goes back after each job; the cached base model and tokens stay.
        training.release_memory()
