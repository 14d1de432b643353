"""Fixed-shape training (a few batch shapes, zero-weight filler rows, an optionally compiled
step): the same per-step losses as dynamically padded training, on real MiniLM on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model

from ftqueue.core.outcome import Progress
from ftqueue.errors import FtqueueError
from ftqueue.inputs.labelled import resolve_dataset
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import load_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.training import loop
from ftqueue.training.loop import FitPlan, Tracker, fit, make_optimizer
from ftqueue.training.modeling import build_classifier, load_base
from ftqueue.training.shapes import bucket_width, fixed_batch, weighted_loss, widths
from ftqueue.training.tokens import Tokens, encode

CPU = torch.device("cpu")
MAX_LENGTH = 48
# 38 rows at batch 4: 9 full batches and one of 2 per epoch; 2 epochs are 20 steps.
ROWS, BATCH, EPOCHS = 38, 4, 2


def test_widths_are_few_powers_of_two_capped_at_max_length() -> None:
    assert widths(128) == [32, 64, 128]
    assert widths(100) == [32, 64, 100]
    assert widths(512) == [32, 64, 128, 256, 512]
    assert [bucket_width(n, 128) for n in (1, 32, 33, 64, 65, 128)] == [32, 32, 64, 64, 128, 128]
    # A cap below the narrowest width: the cap itself, never narrower than a row.
    assert bucket_width(5, 16) == 16 and bucket_width(16, 16) == 16


def _tokens(pairs: bool = False, device: torch.device = CPU) -> tuple[Tokens, Any]:
    base, _ = load_base("minilm", device)
    data = resolve_dataset(DataSpec(dataset="movie-snippets", train_samples=ROWS))
    texts, labels = data.train.texts, data.train.labels
    second = texts[1:] + texts[:1] if pairs else None
    return encode(texts, labels, base.tokenizer, MAX_LENGTH, second), base


def test_a_short_batch_is_filled_with_zero_weight_copies_to_one_shape() -> None:
    tokens, base = _tokens(pairs=True)
    rows = np.array([3, 7, 11])
    batch = fixed_batch(tokens, rows, base.tokenizer.pad_token_id, CPU, size=8, cap=MAX_LENGTH)
    longest = int(tokens.lengths[rows].max())
    assert batch.input_ids.shape == (8, bucket_width(longest, MAX_LENGTH))
    assert batch.token_type_ids is not None and batch.token_type_ids.shape == batch.input_ids.shape
    assert batch.weights is not None and batch.weights.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch.rows.tolist() == [3, 7, 11]  # what the loop counts as seen
    # Filler rows are real rows again (never an all-padding row, whose attention is empty).
    assert batch.labels.tolist() == tokens.labels[[3, 7, 11, 3, 7, 11, 3, 7]].tolist()
    assert int(batch.attention_mask[3:].sum()) > 0
    filled = rows[[0, 1, 2, 0, 1, 2, 0, 1]]
    assert int(batch.attention_mask.sum()) == int(tokens.lengths[filled].sum())


def _model(base: Any, num_labels: int, device: torch.device = CPU) -> torch.nn.Module:
    classifier = build_classifier(base, num_labels, "mean", 0, device, model_dropout=0.0)
    # The head's dropout draws one mask per row: more rows (the filler) draw other masks, and
    # the two paths would differ by chance; with it off they must agree.
    classifier.dropout.p = 0.0
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                        target_modules=["query", "key", "value", "dense"])  # fmt: skip
    return get_peft_model(classifier, config)


def test_the_weighted_loss_is_the_mean_over_real_rows_only() -> None:
    tokens, base = _tokens()
    model = _model(base, 2)
    model.train()
    rows = np.array([0, 1, 2])
    pad = base.tokenizer.pad_token_id
    full = fixed_batch(tokens, rows, pad, CPU, size=8, cap=MAX_LENGTH)
    assert full.weights is not None
    got = weighted_loss(model, full.input_ids, full.attention_mask, full.labels, full.weights, None)
    plain = next(iter(loop.batches(tokens, [rows], pad, CPU)))
    want = model(input_ids=plain.input_ids, attention_mask=plain.attention_mask,
                 labels=plain.labels).loss  # fmt: skip
    assert float(got.detach()) == pytest.approx(float(want.detach()), abs=1e-5)
    # Filler rows get no gradient: the weighted loss's gradient is the real rows' one.
    got.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]
    model.zero_grad()
    want.backward()
    wants = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert len(grads) == len(wants) > 0
    for g, w in zip(grads, wants, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-3)


def _losses(
    tokens: Tokens,
    base: Any,
    *,
    fixed: bool,
    compile_mode: str = "off",
    grad_accum: int = 1,
    device: torch.device = CPU,
    amp: torch.dtype | None = None,
) -> tuple[list[float], Tracker]:
    """Per-step training losses (with ``loop.PROGRESS_EVERY`` set to 1) of 20 steps."""
    model = _model(base, 2, device)
    optimizer = make_optimizer(model, lr=2e-3, head_lr=1e-2, weight_decay=0.01)
    plan = FitPlan(EPOCHS, BATCH, 0.06, 0, base.tokenizer.pad_token_id, device, amp, grad_accum,
                   fixed_width=MAX_LENGTH if fixed else 0, compile_mode=compile_mode)  # fmt: skip
    events: list[Progress] = []
    tracker = Tracker(events.append)
    seen = fit(model, tokens, optimizer, plan, tracker, lambda epoch, rung: True)
    assert seen == ROWS * EPOCHS
    losses = [e.loss for e in events if e.phase == "train" and e.loss is not None]
    return [float(x) for x in losses], tracker


@pytest.mark.parametrize(("pairs", "grad_accum"), [(False, 1), (True, 2)])
def test_fixed_shapes_give_the_same_losses_step_by_step(
    pairs: bool, grad_accum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 1)  # every step's loss
    tokens, base = _tokens(pairs)
    eager, _ = _losses(tokens, base, fixed=False, grad_accum=grad_accum)
    fixed, tracker = _losses(tokens, base, fixed=True, grad_accum=grad_accum)
    assert len(eager) == 20 // grad_accum == len(fixed)
    assert fixed == pytest.approx(eager, abs=1e-3)
    # It trained: the losses moved (a loop that skipped its steps would repeat the first).
    assert max(eager) - min(eager) > 1e-2
    # A few shapes only: batch 4 at widths 32 and 48 (MAX_LENGTH).
    assert 1 <= tracker.step_shapes <= len(widths(MAX_LENGTH))
    assert tracker.compile_seconds == 0.0 and tracker.compiles == 0


@pytest.mark.slow  # seconds alone; minutes on a loaded two-core machine
def test_the_compiled_step_gives_the_same_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path's graph capture and autograd (aot_eager: no code generation, so it
    runs in seconds on a CPU); bench/gpu_check.sh runs the inductor modes on a GPU."""
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 1)
    tokens, base = _tokens()
    eager, _ = _losses(tokens, base, fixed=False)
    compiled, tracker = _losses(tokens, base, fixed=True, compile_mode="aot_eager")
    assert compiled == pytest.approx(eager, abs=1e-3)
    # One graph per width (32 and 48), built at its first step.
    assert tracker.compiles == tracker.step_shapes == 2 and tracker.compile_seconds > 0.0
    # A second job (a new model of the same structure) in this process reuses the graphs:
    # torch.compile builds none (its own counter says so).
    again, second = _losses(tokens, base, fixed=True, compile_mode="aot_eager")
    assert again == pytest.approx(compiled, abs=1e-5)
    assert second.compiles == 0 and second.compile_seconds == 0.0


def test_lora_dropout_zero_issues_no_dropout_op() -> None:
    _, base = _tokens()
    model = _model(base, 2)
    lora_dropouts = [m for n, m in model.named_modules() if n.endswith("lora_dropout.default")]
    assert lora_dropouts and all(isinstance(m, torch.nn.Identity) for m in lora_dropouts)


def test_settings_choose_fixed_shapes_and_refuse_an_unknown_compile_mode() -> None:
    assert load_settings({}).fixed_shapes is None and load_settings({}).compile_mode == "off"
    assert load_settings({"FTQUEUE_FIXED_SHAPES": "0"}).fixed_shapes is False
    assert load_settings({"FTQUEUE_FIXED_SHAPES": "1"}).fixed_shapes is True
    modes = {"FTQUEUE_COMPILE_MODE": "Reduce-Overhead"}
    assert load_settings(modes).compile_mode == "reduce-overhead"
    with pytest.raises(FtqueueError, match=r"FTQUEUE_COMPILE_MODE='fast' is no compile mode"):
        load_settings({"FTQUEUE_COMPILE_MODE": "fast"})


def test_fixed_shapes_are_the_gpu_default_and_forced_by_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ftqueue.training.lora import step_shapes

    reset_settings()
    assert step_shapes(CPU, 128) == (0, "off")
    assert step_shapes(torch.device("cuda"), 128) == (128, "off")
    monkeypatch.setenv("FTQUEUE_FIXED_SHAPES", "1")
    monkeypatch.setenv("FTQUEUE_COMPILE_MODE", "max-autotune-no-cudagraphs")
    reset_settings()
    assert step_shapes(CPU, 64) == (64, "max-autotune-no-cudagraphs")
    monkeypatch.setenv("FTQUEUE_FIXED_SHAPES", "0")
    reset_settings()
    assert step_shapes(torch.device("cuda"), 64) == (0, "off")
    reset_settings()


@pytest.mark.slow  # a few seconds of CPU training
def test_a_lora_job_on_fixed_shapes_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.training import run_lora

    monkeypatch.setenv("FTQUEUE_FIXED_SHAPES", "1")
    reset_settings()
    spec = LoraSpec(model="minilm", data=DataSpec(dataset="movie-snippets", train_samples=20,
                    eval_samples=20), epochs=1, batch_size=8, max_length=32)  # fmt: skip
    out = run_lora(spec, adapter_dir=tmp_path / "adapter", cache_dir=tmp_path / "cache")
    assert out.stats["fixed_shapes"] is True and out.stats["compile_mode"] == "off"
    assert out.stats["attention"] == "sdpa"
    assert out.stats["step_shapes"] == 1  # batch 8 at width 32, the last batch filled
    assert out.stats["train_examples"] == 20 and out.stats["optimizer_steps"] == 3
    test = [m for m in out.measurements if m.split == "test"]
    assert len(test) == 1 and np.isfinite(test[0].loss)
    # The spec is unchanged by the setting: its hash is that of the same spec without it.
    assert "fixed_shapes" not in spec.to_dict()
    reset_settings()
