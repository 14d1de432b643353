"""What every training job does before its first step and after its last: load, tokenize, stats."""

from __future__ import annotations

import functools
import gc
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch

from ftqueue.core.states import Phase
from ftqueue.errors import SpecError
from ftqueue.inputs.labelled import LoadedData
from ftqueue.specs import JobSpec
from ftqueue.training.loop import Tracker, predict
from ftqueue.training.modeling import (
    Base,
    autocast_dtype,
    configure_torch,
    count_params,
    load_base,
    max_positions,
    pick_device,
)
from ftqueue.training.tokens import Tokens, tokenize_splits, tokenizer_identity

P = ParamSpec("P")
R = TypeVar("R")


def releases_memory(job: Callable[P, R]) -> Callable[P, R]:
    """After the job, however it ends, give GPU memory back; cached base models stay loaded."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return job(*args, **kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            # The traceback's frames hold the failed step's activations; clear their locals
            # so that the memory can go back now, not when the caller drops the exception.
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            release_memory()

    return run


@dataclass
class Prepared:
    """What both jobs need before their first step."""

    base: Base
    data: LoadedData
    device: torch.device
    amp_dtype: torch.dtype | None
    eval_batch_size: int
    cached: dict[str, bool]
    #: GPU memory this process held when the job started (None on a CPU): what the jobs
    #: before it left behind, cached base models included.
    reserved_at_start_mb: float | None = None
    tokens: dict[str, Tokens] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.base.tokenizer.pad_token_id or 0

    def predict(self, model: torch.nn.Module, split: str) -> torch.Tensor:
        return predict(
            model,
            self.tokens[split],
            batch_size=self.eval_batch_size,
            pad_id=self.pad_id,
            device=self.device,
            amp_dtype=self.amp_dtype,
        )


def prepare(spec: JobSpec, data: LoadedData, tracker: Tracker, model: str) -> Prepared:
    """Pick the device, load the base model and check ``max_length`` against it."""
    device = pick_device()
    configure_torch(device)
    reserved = None
    if device.type == "cuda":
        release_memory()
        reserved = torch.cuda.memory_reserved(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    with tracker.phase(Phase.LOAD):
        base, model_cached = load_base(model, device)
    limit = max_positions(base)
    if limit is not None and spec.max_length > limit:
        raise SpecError(
            f"--max-length must be 8..{limit} for model {model}; got {spec.max_length}",
            param="--max-length",
        )
    eval_batch_size = spec.eval_batch_size or (512 if device.type == "cuda" else 64)
    cached = {"model_cached": model_cached}
    return Prepared(base, data, device, autocast_dtype(device), eval_batch_size, cached, reserved)


def tokenize(prep: Prepared, max_length: int, cache_dir: Path, tracker: Tracker) -> None:
    """Tokenize the splits into ``prep.tokens``, from the cache when it has them."""
    with tracker.phase(Phase.TOKENIZE):
        base = prep.base
        identity = tokenizer_identity(base.name, base.path, base.tokenizer)
        prep.tokens, hit = tokenize_splits(
            prep.data, base.tokenizer, identity, max_length, cache_dir
        )
    prep.cached["tokens_cached"] = hit


def job_stats(
    prep: Prepared,
    tracker: Tracker,
    model: torch.nn.Module,
    seen: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """What a job records of its run: speed, memory, sizes, the device and the data."""
    trainable, total = count_params(model)
    train_seconds = tracker.seconds[Phase.TRAIN]
    peak_cuda = (
        torch.cuda.max_memory_allocated(prep.device) / 2**20 if prep.device.type == "cuda" else None
    )
    return {
        "samples_per_second": seen / train_seconds if train_seconds > 0 else None,
        "train_seconds": train_seconds,
        "train_examples": seen,
        "phase_seconds": dict(tracker.seconds),
        "peak_rss_mb": tracker.peak_rss / 2**20,
        "peak_cuda_mb": peak_cuda,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total if total else 0.0,
        "label_names": list(prep.data.label_names),
        "dataset_fingerprint": prep.data.fingerprint,
        "model_name": prep.base.name,
        "model_revision": prep.base.revision,
        "device": str(prep.device),
        "dtype": str(prep.amp_dtype or torch.float32).removeprefix("torch."),
        "fused_optimizer": bool(optimizer is not None and optimizer.defaults.get("fused")),
        "cuda_reserved_at_start_mb": prep.reserved_at_start_mb,
        **prep.cached,
    }


def release_memory() -> None:
    """Return freed GPU memory to the driver between jobs; cached base models stay loaded."""
    if torch.cuda.is_available():
        # Cycles in the finished job's model would hold CUDA blocks until the next collection;
        # on a CPU the automatic collector is enough and a full pass costs most of a second.
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
