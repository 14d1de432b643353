"""The training and evaluation loops, progress reporting and phase timing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from transformers import get_linear_schedule_with_warmup

from ftqueue.core.outcome import Measurement, Progress, ProgressCallback
from ftqueue.core.states import TIMED_PHASES, Phase
from ftqueue.training.tokens import Batch, Tokens, batches, eval_batches, train_batches

#: Steps between progress reports; each report costs a device sync for the loss.
PROGRESS_EVERY = 10
MAX_GRAD_NORM = 1.0


@dataclass
class Tracker:
    """Phase wall times, peak RSS and the progress callback, in one place."""

    on_progress: ProgressCallback | None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMED_PHASES, 0.0))
    peak_rss: int = 0
    _process: psutil.Process = field(default_factory=psutil.Process)
    _announced: tuple[str, int] | None = None

    def sample_memory(self) -> None:
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    @contextlib.contextmanager
    def phase(self, name: Phase, epoch: int = 0, total_steps: int = 0) -> Iterator[None]:
        """Time a phase (re-entrant across epochs) and announce it when it changes."""
        if self._announced != (name, epoch):
            self._announced = (name, epoch)
            self.report(Progress(name, epoch, 0, total_steps, None))
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.sample_memory()

    def report(self, progress: Progress) -> None:
        # Exceptions (JobCancelled, JobSuperseded) deliberately propagate and end the job.
        if self.on_progress is not None:
            self.on_progress(progress)


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[None]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(
    model: nn.Module, *, lr: float, head_lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW with the freshly initialised head on its own (usually higher) learning rate."""
    head: list[nn.Parameter] = []
    body: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if "classifier" in name else body).append(param)
    groups = [{"params": head, "lr": head_lr}]
    if body:
        groups.append({"params": body, "lr": lr})
    # Fused: one kernel per group instead of about ten per parameter (there are ~50 LoRA
    # matrices), on a GPU and on a CPU alike; other devices take torch's default.
    fused = all(p.device.type in ("cuda", "cpu") for p in head + body)
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused or None)


@dataclass
class FitPlan:
    epochs: int
    batch_size: int
    warmup_ratio: float
    seed: int
    pad_id: int
    device: torch.device
    amp_dtype: torch.dtype | None


def fit(
    model: nn.Module,
    train: Tokens,
    optimizer: torch.optim.Optimizer,
    plan: FitPlan,
    tracker: Tracker,
    after_epoch: Callable[[int], bool],
) -> int:
    """Train for ``plan.epochs``; calls ``after_epoch(epoch)`` outside the timed train phase,
    and stops early when it returns False (the job's sweep pruned it).

    Returns the number of training examples processed.
    """
    rng = np.random.default_rng(plan.seed)
    steps_per_epoch = -(-len(train) // plan.batch_size)
    total = steps_per_epoch * plan.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * total), total)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step = seen = 0
    for epoch in range(1, plan.epochs + 1):
        with tracker.phase(Phase.TRAIN, epoch, total):
            model.train()
            running, count = torch.zeros((), device=plan.device), 0
            for batch in batches(
                train, train_batches(train, plan.batch_size, rng), plan.pad_id, plan.device
            ):
                with autocast(plan.device, plan.amp_dtype):
                    loss = model(
                        input_ids=batch.input_ids,
                        attention_mask=batch.attention_mask,
                        labels=batch.labels,
                    ).loss
                loss.backward()
                # foreach: a handful of ops for all parameters, not two per parameter.
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += loss.detach()
                count += 1
                step += 1
                seen += len(batch.rows)
                # The first step is reported too: it tells the queue training has started.
                if step == 1 or step % PROGRESS_EVERY == 0 or step % steps_per_epoch == 0:
                    mean_loss = float(running) / count
                    tracker.report(Progress(Phase.TRAIN, epoch, step, total, mean_loss))
                    tracker.sample_memory()
                    running.zero_()
                    count = 0
        if not after_epoch(epoch):
            break
    return seen


def _in_row_order(
    compute: Callable[[Batch], torch.Tensor],
    tokens: Tokens,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    into: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``compute`` over length-sorted batches, its outputs put back in row order on ``into``.

    ``on_batch(done, total)`` is called after each batch (for progress, and to be stopped).
    """
    result: torch.Tensor | None = None
    plan = eval_batches(tokens, batch_size)
    for done, batch in enumerate(batches(tokens, plan, pad_id, device), start=1):
        out = compute(batch).float()
        if result is None:
            result = torch.empty((len(tokens), out.shape[-1]), device=into)
        result[torch.from_numpy(batch.rows).to(into)] = out.to(into)
        if on_batch is not None:
            on_batch(done, len(plan))
    assert result is not None, "cannot run a model on an empty split"
    return result


def predict(
    model: nn.Module,
    tokens: Tokens,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits for every row, in row order (batches are length-sorted for speed)."""
    model.eval()
    with torch.inference_mode(), autocast(device, amp_dtype):
        return _in_row_order(
            lambda b: model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits,
            tokens,
            batch_size=batch_size,
            pad_id=pad_id,
            device=device,
            into=torch.device("cpu"),
            on_batch=on_batch,
        )


def measure(split: str, epoch: int, logits: torch.Tensor, labels: np.ndarray) -> Measurement:
    """Accuracy and macro-F1 (scikit-learn) and mean cross-entropy of the logits."""
    target = torch.from_numpy(labels)
    loss = float(nn.functional.cross_entropy(logits, target))
    predicted = logits.argmax(-1).numpy()
    return Measurement(
        split=split,
        epoch=epoch,
        accuracy=float(accuracy_score(labels, predicted)),
        loss=loss,
        macro_f1=float(f1_score(labels, predicted, average="macro", zero_division=0)),
        n_examples=len(labels),
    )


def pooled_features(
    model: nn.Module,
    tokens: Tokens,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Sentence vectors from the frozen body, computed once so head epochs cost almost nothing."""
    model.eval()
    pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = model.pool  # type: ignore[assignment]
    # no_grad, not inference_mode: these tensors are inputs to a trained head later.
    with torch.no_grad(), autocast(device, amp_dtype):
        return _in_row_order(
            lambda b: pool(b.input_ids, b.attention_mask),
            tokens,
            batch_size=batch_size,
            pad_id=pad_id,
            device=device,
            into=device,
        )


def fit_head(
    model: nn.Module,
    features: torch.Tensor,
    labels: np.ndarray,
    optimizer: torch.optim.Optimizer,
    plan: FitPlan,
    tracker: Tracker,
) -> int:
    """Train only the head on precomputed features (dropout still applies to them)."""
    rng = np.random.default_rng(plan.seed)
    target = torch.from_numpy(labels).to(features.device)
    steps_per_epoch = -(-len(labels) // plan.batch_size)
    total = steps_per_epoch * plan.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * total), total)
    step = seen = 0
    model.train()
    for epoch in range(1, plan.epochs + 1):
        with tracker.phase(Phase.TRAIN, epoch, total):
            order = torch.from_numpy(rng.permutation(len(labels))).to(features.device)
            for rows in order.split(plan.batch_size):
                loss = model(pooled=features[rows], labels=target[rows]).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += len(rows)
                if step % PROGRESS_EVERY == 0 or step % steps_per_epoch == 0:
                    tracker.report(Progress(Phase.TRAIN, epoch, step, total, loss.item()))
    return seen
