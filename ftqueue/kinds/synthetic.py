"""Synthetic jobs: the model ``synthetic[:key=value,...]`` runs a timed stand-in for training.

They exercise the queue itself (delivery, leases, retries, recording, adapters) without a
model: for the queue's tests, fault drills and scale benchmarks. Their results are
deterministic numbers derived from the spec, clearly not measurements of anything.

Keys: ``seconds`` (sleep spread over the steps, default 0.5), ``steps`` (default 10),
``fault``: ``raise`` (an exception), ``oom`` (a CUDA out-of-memory error), ``crash`` (the
process kills itself), ``crash-first`` (only on the first attempt), ``hang`` (never ends),
``stuck`` (never ends and ignores the soft time limit, like a job stuck in native code),
``crash-at-rung`` (the first attempt kills itself right after its first sweep rung verdict),
``abort`` (the process aborts, as a native library does on input it cannot hold),
``memory`` (the process takes memory, up to :data:`MEMORY_FAULT_BYTES`, until the kernel's
OOM killer ends it: run it only under a memory limit).
Sweep rungs count only at epoch ends here (whole epochs): a stand-in validates nothing between.

A training spec's validation accuracy follows a curve set by its hyper-parameters: a level
drawn from the spec, rising by epoch up to a peak epoch (also drawn) and sagging after it,
so sweeps have something to rank and a best epoch that is not always the last.
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

from ftqueue.artifacts.publishing import ADAPTER_CONFIG, ADAPTER_METADATA, ADAPTER_WEIGHTS
from ftqueue.core.confidence import kept_epoch
from ftqueue.core.files import write_json_atomic
from ftqueue.core.outcome import Measurement, Outcome, Progress
from ftqueue.core.states import Phase
from ftqueue.errors import SpecError
from ftqueue.kinds.registry import JobContext, JobKind, Role
from ftqueue.specs import JobSpec

PREFIX = "synthetic"
FAULTS = (
    "none",
    "raise",
    "oom",
    "crash",
    "crash-first",
    "hang",
    "stuck",
    "crash-at-rung",
    "abort",
    "memory",
)
#: The most a ``memory`` fault takes before it gives up and raises (no limit stopped it).
MEMORY_FAULT_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class SyntheticParams:
    seconds: float = 0.5
    steps: int = 10
    fault: str = "none"


def model_name(seconds: float = 0.5, steps: int = 10, fault: str = "none") -> str:
    """The model string of a synthetic job: ``model_name(0.1)`` is ``synthetic:seconds=0.1,...``."""
    fault_part = f",fault={fault}" if fault != "none" else ""
    name = f"{PREFIX}:seconds={seconds:g},steps={steps}{fault_part}"
    parse(name)  # the same checks as a submitted model string, raised here
    return name


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


def _trained_epochs(spec: JobSpec) -> int | None:
    """A training spec's epochs; those it leaves to the device are a CPU's (synthetic runs
    stand in for one). None for a spec that does not train."""
    epochs = getattr(spec, "epochs", None)
    if epochs is None and hasattr(spec, "for_device"):
        epochs = spec.for_device("cpu").epochs
    return epochs


def validation_accuracy(spec: JobSpec, epoch: int) -> float:
    """The synthetic validation accuracy of a training spec after ``epoch``."""
    epochs = int(_trained_epochs(spec) or 1)
    level = _score(spec, "level")
    peak = 1 + int(_score(spec, "peak") * epochs)
    curve = 0.04 * min(epoch, peak) / epochs - 0.01 * max(0, epoch - peak)
    return round(0.5 + 0.4 * level + curve, 6)


def _measurement(split: str, epoch: int, accuracy: float) -> Measurement:
    return Measurement(
        split, epoch, accuracy, round(1.0 - accuracy, 6), round(accuracy - 0.01, 6), 1000
    )


def run(spec: JobSpec, kind: JobKind[Any], ctx: JobContext) -> Outcome:
    """Sleep through the steps, reporting progress, then record numbers derived from the spec.

    A spec with ``epochs`` (a training run) records validation after each epoch, asking
    ``ctx.keep_going`` whether to go on, and its split (``test`` unless the spec names one)
    at the selected epoch (``select_epoch``: best validation, or the last); a run's kind gets
    a dummy adapter, also when its sweep prunes it.
    """
    params = parse(spec.model)
    started = time.perf_counter()
    trained_epochs = _trained_epochs(spec)
    epochs = int(trained_epochs or 1)
    total = params.steps
    pause = params.seconds / total
    if params.fault == "abort":
        # Where a real one dies: the tokenizer, given a row it cannot hold. The pause lets
        # the heartbeat store the phase first.
        ctx.on_progress(Progress(Phase.TOKENIZE))
        time.sleep(1.5)
        os.abort()
    ctx.on_progress(Progress(Phase.TRAIN, 1, 0, total, None))
    if params.fault == "memory":
        time.sleep(1.5)
        _take_memory()
    step = 0
    endless = params.fault in ("hang", "stuck")
    validation: list[Measurement] = []
    pruned_at: int | None = None
    while (step < total or endless) and pruned_at is None:
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
        # Every epoch whose last step this was (several when there are fewer steps than epochs).
        while (
            trained_epochs
            and len(validation) < epochs
            and -(-total * (len(validation) + 1) // epochs) <= step
        ):
            done = len(validation) + 1
            accuracy = validation_accuracy(spec, done)
            validation.append(_measurement("validation", done, accuracy))
            ctx.on_progress(Progress(Phase.EVALUATE, done, val_accuracy=accuracy, val_epoch=done))
            # Rungs at epoch ends only: a stand-in has no weights to validate mid-epoch.
            at_rung = ctx.rungs is None or ctx.rungs.unit == "epoch"
            keep = done == epochs or ctx.keep_going(
                float(done) if at_rung else None, validation[-1]
            )
            if params.fault == "crash-at-rung" and ctx.attempt == 1 and done == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            if not keep:
                pruned_at = done
                break
    measurements = list(validation)
    selected: int | None = None
    if trained_epochs:
        selected = _selected_epoch(spec, validation)
    if pruned_at is None:
        final_epoch = (
            selected if selected is not None else int(getattr(spec, "head_epochs", 0) or 0)
        )
        split = getattr(spec, "split", "test")
        measurements.append(
            _measurement(
                split, final_epoch, round(0.5 + 0.45 * _score(spec, f"{split}{final_epoch}"), 6)
            )
        )
    if ctx.staging is not None:
        _write_output(ctx.staging, spec, adapter=kind.role == Role.RUN)
    elapsed = time.perf_counter() - started
    stats: dict[str, Any] = {
        "train_seconds": elapsed,
        "samples_per_second": 1000 * epochs / max(elapsed, 1e-9),
        "trainable_params": 1000,
        "total_params": 100_000,
        "synthetic": True,
    }
    if selected is not None:
        stats["selected_epoch"] = selected
    if pruned_at is not None:
        stats["pruned_at"] = pruned_at
    if hasattr(spec, "for_device"):  # the values a real job would choose on a CPU
        stats["recipe"] = spec.for_device("cpu").trained_with()
    return Outcome(measurements, ctx.staging, stats)


def _selected_epoch(spec: JobSpec, validation: list[Measurement]) -> int | None:
    """The epoch a real run would keep (``confidence.kept_epoch``), or the last one trained."""
    if not validation:
        return None
    if getattr(spec, "select_epoch", None) == "last":
        return validation[-1].epoch
    return kept_epoch([(m.epoch, m.accuracy, m.n_examples) for m in validation])


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


def _take_memory(chunk: int = 64 * 1024**2) -> None:
    held = []
    for _ in range(MEMORY_FAULT_BYTES // chunk):
        held.append(b"\x01" * chunk)  # written, so the pages are really taken
    taken = len(held) * chunk
    raise RuntimeError(f"synthetic memory fault: took {taken:,} bytes and nothing stopped it")


def _write_output(directory: Path, spec: JobSpec, *, adapter: bool) -> None:
    """A dummy adapter (weights, config, metadata last, like a real one), or just metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    if adapter:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"weight": np.zeros((2, 2), dtype=np.float32)}, directory / ADAPTER_WEIGHTS)
        (directory / ADAPTER_CONFIG).write_text(json.dumps({"synthetic": True}))
    write_json_atomic(directory / ADAPTER_METADATA, {"synthetic": True, "spec": spec.to_dict()})
