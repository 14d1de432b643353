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

from ftqueue.core.objective import RungPoints
from ftqueue.core.outcome import Measurement, Progress, ProgressCallback
from ftqueue.core.states import TIMED_PHASES, Phase
from ftqueue.training.shapes import StepRunner, fixed_batch
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
    #: Optimizer steps taken (with gradient accumulation, fewer than batches).
    optimizer_steps: int = 0
    #: Fixed-shape training: the (batch, width) shapes it ran; compiled, the steps that built
    #: a graph (a shape or model new to the process) and the seconds they took.
    step_shapes: int = 0
    compile_seconds: float = 0.0
    compiles: int = 0
    _process: psutil.Process = field(default_factory=psutil.Process)
    _announced: tuple[str, int] | None = None
    _inner: list[float] = field(default_factory=list)

    def sample_memory(self) -> None:
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    @contextlib.contextmanager
    def phase(self, name: Phase, epoch: int = 0, total_steps: int = 0) -> Iterator[None]:
        """Time a phase (re-entrant across epochs) and announce it when it changes."""
        if self._announced != (name, epoch):
            self._announced = (name, epoch)
            self.report(Progress(name, epoch, 0, total_steps, None))
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            # A phase inside another (validation at a rung inside an epoch) counts once: as
            # itself, not also as the phase around it.
            spent = time.perf_counter() - start
            inner = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - inner
            if self._inner:
                self._inner[-1] += spent
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
    #: Micro-batches of ``batch_size`` per optimizer step.
    grad_accum: int = 1
    #: Train on fixed shapes (training/shapes.py) up to this width (the tokenizer's max
    #: length); 0: batches padded to their longest row.
    fixed_width: int = 0
    #: With fixed shapes: "off" or the torch.compile mode of the loss step.
    compile_mode: str = "off"


def fit(
    model: nn.Module,
    train: Tokens,
    optimizer: torch.optim.Optimizer,
    plan: FitPlan,
    tracker: Tracker,
    after_epoch: Callable[[int, float | None], bool],
    rungs: RungPoints | None = None,
    at_rung: Callable[[int, float], bool] | None = None,
) -> int:
    """Train for ``plan.epochs``; stops early when a callback returns False (the job's sweep
    pruned it).

    With ``plan.grad_accum`` N the optimizer steps once per N micro-batches, each loss scaled
    by 1/N so that the gradient is the group's mean; an epoch's last group, when shorter,
    still steps, scaled by its own length.
    ``after_epoch(epoch, rung)`` is called outside the timed train phase after each epoch,
    with the rung's position when one falls on its last step (else None). ``at_rung(epoch,
    position)`` is called at each of ``rungs`` that falls inside an epoch, after its step.
    Returns the number of training examples processed.
    """
    rng = np.random.default_rng(plan.seed)
    accum = plan.grad_accum
    micro_per_epoch = -(-len(train) // plan.batch_size)
    steps_per_epoch = -(-micro_per_epoch // accum)
    total = steps_per_epoch * plan.epochs
    checks = rungs.steps(steps_per_epoch, total) if rungs is not None else {}
    scheduler = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * total), total)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    runner = None
    if plan.fixed_width:
        runner = StepRunner(plan.compile_mode, lambda: autocast(plan.device, plan.amp_dtype))
    step = seen = 0
    for epoch in range(1, plan.epochs + 1):
        stopped = False
        with tracker.phase(Phase.TRAIN, epoch, total):
            model.train()
            running, count = torch.zeros((), device=plan.device), 0
            order = train_batches(train, plan.batch_size, rng)
            for i, batch in enumerate(_batches(train, order, plan)):
                group = min(accum, len(order) - (i - i % accum))
                if runner is not None:
                    loss = runner(model, batch, group)
                else:
                    with autocast(plan.device, plan.amp_dtype):
                        loss = model(
                            input_ids=batch.input_ids,
                            attention_mask=batch.attention_mask,
                            labels=batch.labels,
                            token_type_ids=batch.token_type_ids,
                        ).loss
                    (loss / group if group > 1 else loss).backward()
                running += loss.detach()
                count += 1
                seen += len(batch.rows)
                if (i + 1) % accum and i + 1 < len(order):
                    continue
                # foreach: a handful of ops for all parameters, not two per parameter.
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tracker.optimizer_steps += 1
                # The first step is reported too: it tells the queue training has started.
                if step == 1 or step % PROGRESS_EVERY == 0 or step % steps_per_epoch == 0:
                    mean_loss = float(running) / count
                    tracker.report(Progress(Phase.TRAIN, epoch, step, total, mean_loss))
                    tracker.sample_memory()
                    running.zero_()
                    count = 0
                if step in checks and step % steps_per_epoch and at_rung is not None:
                    # A rung inside the epoch: validate there (timed as evaluation), go on.
                    stopped = not at_rung(epoch, checks[step])
                    if stopped:
                        break
                    model.train()
        if runner is not None:
            tracker.step_shapes = len(runner.shapes)
            tracker.compile_seconds = runner.compile_seconds
            tracker.compiles = runner.compiles
        if stopped or not after_epoch(epoch, checks.get(step)):
            break
    return seen


def _batches(train: Tokens, order: list[np.ndarray], plan: FitPlan) -> Iterator[Batch]:
    if not plan.fixed_width:
        yield from batches(train, order, plan.pad_id, plan.device)
        return
    for rows in order:
        yield fixed_batch(train, rows, plan.pad_id, plan.device, plan.batch_size, plan.fixed_width)


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
            lambda b: (
                model(
                    input_ids=b.input_ids,
                    attention_mask=b.attention_mask,
                    token_type_ids=b.token_type_ids,
                ).logits
            ),
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
    pool: Callable[..., torch.Tensor] = model.pool  # type: ignore[assignment]
    # no_grad, not inference_mode: these tensors are inputs to a trained head later.
    with torch.no_grad(), autocast(device, amp_dtype):
        return _in_row_order(
            lambda b: pool(b.input_ids, b.attention_mask, b.token_type_ids),
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
