"""Synthetic jobs: the model ``synthetic[:key=value,...]`` runs a timed stand-in for training.

They exercise the queue itself (delivery, leases, retries, recording, adapters) without a
model: for the queue's tests, fault drills and scale benchmarks. Their results are
deterministic numbers derived from the spec, clearly not measurements of anything.

Keys: ``seconds`` (sleep spread over the steps, default 0.5), ``steps`` (default 10),
``fault``: ``raise`` (an exception), ``oom`` (a CUDA out-of-memory error), ``crash`` (the
process kills itself), ``crash-first`` (only on the first attempt), ``hang`` (never ends),
``stuck`` (never ends and ignores the soft time limit, like a job stuck in native code).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftqueue.artifacts import ADAPTER_CONFIG, ADAPTER_METADATA, ADAPTER_WEIGHTS
from ftqueue.errors import SpecError
from ftqueue.files import write_json_atomic
from ftqueue.kinds.registry import JobContext, JobKind, Role
from ftqueue.outcome import Measurement, Outcome, Progress
from ftqueue.specs import JobSpec
from ftqueue.states import Phase

PREFIX = "synthetic"
FAULTS = ("none", "raise", "oom", "crash", "crash-first", "hang", "stuck")


@dataclass(frozen=True)
class SyntheticParams:
    seconds: float = 0.5
    steps: int = 10
    fault: str = "none"


def is_synthetic(model: str) -> bool:
    return model == PREFIX or model.startswith(PREFIX + ":")


def parse(model: str) -> SyntheticParams:
    """Parse ``synthetic:seconds=2,steps=20,fault=raise``; SpecError on anything else."""
    values: dict[str, Any] = {}
    _, _, rest = model.partition(":")
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        try:
            if not sep:
                raise ValueError
            if key == "seconds":
                values[key] = float(raw)
                if not 0 <= values[key] <= 86400:
                    raise ValueError
            elif key == "steps":
                values[key] = int(raw)
                if not 1 <= values[key] <= 100_000:
                    raise ValueError
            elif key == "fault" and raw in FAULTS:
                values[key] = raw
            else:
                raise ValueError
        except ValueError:
            raise SpecError(
                f"--model {model!r}: bad synthetic setting {item!r}; use seconds=0..86400, "
                f"steps=1..100000, fault={'|'.join(FAULTS)}",
                param="--model",
            ) from None
    return SyntheticParams(**values)


def _score(spec: JobSpec, salt: str) -> float:
    digest = hashlib.sha256((spec.canonical_json() + salt).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF


def run(spec: JobSpec, kind: JobKind[Any], ctx: JobContext) -> Outcome:
    """Sleep through the steps, reporting progress, then record numbers derived from the spec.

    A spec with ``epochs`` (a training run) records validation after each epoch and its split
    (``test`` unless the spec names one) at the end; a run's kind gets a dummy adapter.
    """
    params = parse(spec.model)
    started = time.perf_counter()
    trained_epochs = getattr(spec, "epochs", None)
    if trained_epochs is None and hasattr(spec, "for_device"):
        trained_epochs = spec.for_device("cpu").epochs  # a synthetic run stands in for a CPU
    epochs = int(trained_epochs or 1)
    total = params.steps
    pause = params.seconds / total
    ctx.on_progress(Progress(Phase.TRAIN, 1, 0, total, None))
    step = 0
    endless = params.fault in ("hang", "stuck")
    while step < total or endless:
        try:
            time.sleep(pause if not endless else 0.2)
        except Exception as exc:
            from celery.exceptions import SoftTimeLimitExceeded

            if params.fault == "stuck" and isinstance(exc, SoftTimeLimitExceeded):
                continue
            raise
        step = min(step + 1, total)
        if step == max(1, total // 2):
            _inject(params.fault, ctx.attempt)
        epoch = 1 + (step * epochs - 1) // total
        ctx.on_progress(Progress(Phase.TRAIN, epoch, step, total, 1.0 / (1 + step)))
    measurements = []
    splits = [("validation", e) for e in range(1, epochs + 1)] if trained_epochs else []
    final_epoch = epochs if trained_epochs else int(getattr(spec, "head_epochs", 0) or 0)
    splits.append((getattr(spec, "split", "test"), final_epoch))
    for split, epoch in splits:
        accuracy = round(0.5 + 0.45 * _score(spec, f"{split}{epoch}"), 6)
        measurements.append(
            Measurement(
                split, epoch, accuracy, round(1.0 - accuracy, 6), round(accuracy - 0.01, 6), 1000
            )
        )
    if ctx.staging is not None:
        _write_output(ctx.staging, spec, adapter=kind.role == Role.RUN)
    elapsed = time.perf_counter() - started
    return Outcome(
        measurements,
        ctx.staging,
        {
            "train_seconds": elapsed,
            "samples_per_second": 1000 * epochs / max(elapsed, 1e-9),
            "trainable_params": 1000,
            "total_params": 100_000,
            "synthetic": True,
        },
    )


def _inject(fault: str, attempt: int) -> None:
    if fault == "raise":
        raise RuntimeError("synthetic failure requested by the job's model string")
    if fault == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by a synthetic job)"
        )
    if fault == "crash" or (fault == "crash-first" and attempt == 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_output(directory: Path, spec: JobSpec, *, adapter: bool) -> None:
    """A dummy adapter (weights, config, metadata last, like a real one), or just metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    if adapter:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"weight": np.zeros((2, 2), dtype=np.float32)}, directory / ADAPTER_WEIGHTS)
        (directory / ADAPTER_CONFIG).write_text(json.dumps({"synthetic": True}))
    write_json_atomic(directory / ADAPTER_METADATA, {"synthetic": True, "spec": spec.to_dict()})
