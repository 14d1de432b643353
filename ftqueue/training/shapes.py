"""Fixed-shape training: batches of a few (batch, width) shapes, and the compiled loss step.

On a GPU a step of a small encoder is bound by kernel launches, which a compiled step (fused
kernels, CUDA graphs) removes; but a compiled step is specialised to its input shapes, and
dynamically padded batches have a new width nearly every step. Here every training batch has
``batch_size`` rows and a width from a short list (powers of two from 32, capped at the
tokenizer's ``max_length``); the epoch's last, shorter batch is filled with copies of its own
rows whose loss weight is zero, so that the loss is exactly the mean over its real rows and
its gradient that of the real rows alone. The rows of each step are those of the dynamically
padded path: only padding and filler differ, so the losses are the same.

The compiled step is kept per process (a warm worker compiles once per model and shape, and
later jobs reuse it: the graph reads the model as an input, not as a constant).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ftqueue.training.tokens import Batch, Tokens, collate

#: The narrowest width; wider ones double from it up to ``max_length``.
MIN_WIDTH = 32


def bucket_width(length: int, cap: int) -> int:
    """The width a batch whose longest row has ``length`` tokens is padded to."""
    width = max(MIN_WIDTH, 1 << max(0, length - 1).bit_length())
    return max(length, min(width, cap))


def widths(cap: int) -> list[int]:
    """Every width ``bucket_width`` can give under ``cap``."""
    return sorted({bucket_width(n, cap) for n in range(1, cap + 1)})


def fixed_batch(
    tokens: Tokens, rows: np.ndarray, pad_id: int, device: torch.device, size: int, cap: int
) -> Batch:
    """``rows`` padded to their bucket's width and filled up to ``size`` rows with zero-weight
    copies of themselves; ``Batch.rows`` names only the real rows."""
    width = bucket_width(int(tokens.lengths[rows].max()), cap)
    filled = np.resize(rows, size) if len(rows) < size else rows
    batch = collate(tokens, filled, pad_id, device, width=width)
    weights = np.zeros(len(filled), dtype=np.float32)
    weights[: len(rows)] = 1.0
    batch.rows = rows
    batch.weights = torch.from_numpy(weights).to(device, non_blocking=device.type == "cuda")
    return batch


def weighted_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy averaged over the rows of weight one; stays on the device."""
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
    ).logits
    per_row = F.cross_entropy(logits.float(), labels, reduction="none")
    return (per_row * weights).sum() / weights.sum()


LossStep = Callable[..., torch.Tensor]


@functools.cache
def compiled_loss(mode: str) -> LossStep:
    """``weighted_loss`` compiled with a torch.compile mode (or a backend: ``aot_eager``,
    ``eager``), once per process; its graphs are reused by every later job whose model has
    the same structure, shapes and dtypes."""
    # A few widths per model and pooling, and a worker may alternate between two models.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if mode in ("aot_eager", "eager"):
        compiled: Any = torch.compile(weighted_loss, backend=mode, dynamic=False)
    else:
        compiled = torch.compile(weighted_loss, mode=mode, dynamic=False)
    return compiled


def _graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class StepRunner:
    """Runs the loss and backward pass of fixed-shape batches, compiled or not; the steps that
    made torch.compile build a graph (a shape or model new to this process) are counted in
    ``compiles`` and their time, compile included, in ``compile_seconds``."""

    def __init__(
        self, mode: str, amp: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.mode = mode
        self.amp = amp
        self.step = weighted_loss if mode == "off" else compiled_loss(mode)
        self.compile_seconds = 0.0
        self.compiles = 0
        self.shapes: set[tuple[int, ...]] = set()

    def __call__(self, model: nn.Module, batch: Batch, group: int) -> torch.Tensor:
        """The batch's loss, its gradient (scaled by 1/``group``) accumulated."""
        assert batch.weights is not None, "a fixed-shape batch has row weights"
        shape = tuple(batch.input_ids.shape)
        self.shapes.add(shape)
        graphs = _graphs_compiled() if self.mode != "off" else 0
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        start = time.perf_counter()
        with self.amp():
            loss = self.step(
                model,
                batch.input_ids,
                batch.attention_mask,
                batch.labels,
                batch.weights,
                batch.token_type_ids,
            )
        (loss / group if group > 1 else loss).backward()
        if self.mode != "off" and _graphs_compiled() > graphs:
            self.compiles += 1
            self.compile_seconds += time.perf_counter() - start
        return loss
