"""The ``lora`` job: train a LoRA adapter, keep its best epoch, test it and write it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from ftqueue.core.confidence import keeps_later
from ftqueue.core.objective import RungPoints
from ftqueue.core.outcome import Measurement, Outcome, Progress, ProgressCallback
from ftqueue.core.states import Phase
from ftqueue.errors import FtqueueError, SpecError, first_line
from ftqueue.inputs.labelled import resolve_dataset
from ftqueue.settings import get_settings
from ftqueue.specs import validate_against_model
from ftqueue.training.adapters import save_adapter
from ftqueue.training.cards import data_summary, hyperparameters
from ftqueue.training.loop import FitPlan, Tracker, fit, make_optimizer, measure
from ftqueue.training.modeling import build_classifier, classifier_of, stock_class_name
from ftqueue.training.preparing import Prepared, job_stats, prepare, releases_memory, tokenize

if TYPE_CHECKING:
    from ftqueue.kinds.lora import LoraSpec


def _lora_model(spec: LoraSpec, prep: Prepared) -> PeftModel:
    classifier = build_classifier(
        prep.base,
        prep.data.num_labels,
        spec.pooling,
        spec.seed,
        prep.device,
        model_dropout=spec.model_dropout,
        label_names=prep.data.label_names,
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec.r,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft's hint says int; floats work
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias=spec.bias,  # type: ignore[arg-type]  # checked against BIASES by the spec
    )
    try:
        return get_peft_model(classifier, config)
    except ValueError as exc:
        names = [n for n, _ in classifier.encoder.named_modules() if n]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise SpecError(
            f"--target-modules {','.join(spec.target_modules)} does not match layers of "
            f"{spec.model} ({first_line(exc)}); its module names include: "
            f"{', '.join(leaves)}",
            param="--target-modules",
        ) from None


def step_shapes(device: torch.device, max_length: int) -> tuple[int, str]:
    """FitPlan's ``fixed_width`` and ``compile_mode`` from the settings: fixed shapes by
    default on a GPU, compiled only when FTQUEUE_COMPILE_MODE asks."""
    settings = get_settings()
    fixed = settings.fixed_shapes if settings.fixed_shapes is not None else device.type == "cuda"
    if not fixed:
        return 0, "off"
    return max_length, settings.compile_mode


@releases_memory
def run_lora(
    spec: LoraSpec,
    *,
    adapter_dir: Path,
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    keep_going: Callable[[float | None, Measurement], bool] | None = None,
    rungs: RungPoints | None = None,
) -> Outcome:
    """Train a LoRA adapter and write it, metadata last, into the new ``adapter_dir``.

    After each epoch, and at each of ``rungs`` inside one (a sweep's rungs: fractions of an
    epoch or steps), the validation measurement goes to ``keep_going`` (a sweep's rung
    decision) with the rung's position (None at an epoch end that is no rung), which may stop
    training there. Validation inside an epoch is kept in ``stats["rung_validations"]``;
    results hold epochs. The adapter kept is the first epoch's, replaced by each later one
    whose validation accuracy lies above the kept one's 95% interval (or the last's, with
    ``select_epoch: last``; the weights of the moment when pruned before the first epoch
    ended), and test accuracy is measured on it; a pruned run keeps its adapter but is not
    tested.

    Inputs (spec, model, data, target modules) are checked before anything is written. The
    caller publishes ``adapter_dir``, or deletes it when this raises; nothing else is left
    behind except complete files in the tokenized-data cache.
    """
    validate_against_model(spec)
    data = resolve_dataset(spec.data)
    if adapter_dir.exists() and (not adapter_dir.is_dir() or any(adapter_dir.iterdir())):
        raise FtqueueError(f"adapter_dir {adapter_dir} must be new or empty; it is not")
    started = time.time()
    tracker = Tracker(on_progress)
    prep = prepare(spec, data, tracker, spec.model)
    submitted, spec = spec, spec.for_device(prep.device.type)
    assert spec.epochs is not None and spec.batch_size is not None
    assert spec.lr is not None and spec.head_lr is not None
    with tracker.phase(Phase.LOAD):
        model = _lora_model(spec, prep)
    tokenize(prep, spec.max_length, cache_dir, tracker)
    optimizer = make_optimizer(
        model, lr=spec.lr, head_lr=spec.head_lr, weight_decay=spec.weight_decay
    )
    measurements: list[Measurement] = []

    def evaluate(split: str, epoch: int) -> None:
        with tracker.phase(Phase.EVALUATE, epoch):
            logits = prep.predict(model, split)
            measurements.append(measure(split, epoch, logits, prep.tokens[split].labels))
        if split == "validation":  # the end of an epoch, for followers and the worker's log
            accuracy = measurements[-1].accuracy
            tracker.report(Progress(Phase.EVALUATE, epoch, val_accuracy=accuracy, val_epoch=epoch))

    plan = FitPlan(
        spec.epochs,
        spec.batch_size,
        spec.warmup_ratio,
        spec.seed,
        prep.pad_id,
        prep.device,
        prep.amp_dtype,
        spec.grad_accum,
        *step_shapes(prep.device, spec.max_length),
    )
    keeper = _EpochKeeper(model, best=spec.select_epoch != "last")

    def after_epoch(epoch: int, rung: float | None) -> bool:
        evaluate("validation", epoch)
        keeper.saw(epoch, measurements[-1])
        # After the last epoch there is nothing left to save: a verdict would only cost the
        # trial its test.
        if keep_going is None or epoch == plan.epochs or keep_going(rung, measurements[-1]):
            return True
        keeper.pruned_at = epoch if rung is None else rung
        return False

    inside: list[dict[str, float]] = []

    def at_rung(epoch: int, rung: float) -> bool:
        with tracker.phase(Phase.EVALUATE, epoch):
            logits = prep.predict(model, "validation")
            measured = measure("validation", epoch, logits, prep.tokens["validation"].labels)
        inside.append({"rung": rung, **asdict(measured)})
        if keep_going is None or keep_going(rung, measured):
            return True
        keeper.pruned_at = rung
        return False

    seen = fit(
        model,
        prep.tokens["train"],
        optimizer,
        plan,
        tracker,
        after_epoch,
        rungs=rungs,
        at_rung=at_rung,
    )
    selected = keeper.restore_selected()
    if keeper.pruned_at is None:
        evaluate("test", selected)
    stats = job_stats(prep, tracker, model, seen, optimizer)
    # The values it trained with, the device's choices included: what reports and `show` use.
    stats["recipe"] = spec.trained_with()
    stats["optimizer_steps"] = tracker.optimizer_steps
    stats["selected_epoch"] = selected
    # SDPA: fused attention kernels (flash or memory-efficient in bf16 on a GPU).
    stats["attention"] = getattr(prep.base.body.config, "_attn_implementation", None)
    stats["fixed_shapes"] = bool(plan.fixed_width)
    if plan.fixed_width:
        stats["compile_mode"] = plan.compile_mode
        stats["step_shapes"] = tracker.step_shapes
        stats["compile_seconds"] = round(tracker.compile_seconds, 3)
        stats["compiles"] = tracker.compiles
    # With train_examples: how much of its training a pruned run saved.
    stats["planned_examples"] = len(prep.tokens["train"]) * spec.epochs
    if keeper.pruned_at is not None:
        stats["pruned_at"] = keeper.pruned_at
    if inside:
        stats["rung_validations"] = inside
    with tracker.phase(Phase.SAVE, spec.epochs):
        metadata = {
            "kind": spec.kind,
            "spec": submitted.to_dict(),
            "spec_hash": submitted.spec_hash(),
            "model": spec.model,
            "model_revision": prep.base.revision,
            "num_labels": data.num_labels,
            "label_names": data.label_names,
            "pooling": spec.pooling,
            "max_length": spec.max_length,
            "body_attr": classifier_of(model).body_attr,
            "model_type": prep.base.body.config.model_type,
            "stock_class": stock_class_name(prep.base.body.config, spec.pooling),
            "dataset_fingerprint": data.fingerprint,
            "text_pair": data.is_pairs,
            "data": data_summary(data, spec.data),
            "hyperparameters": hyperparameters(spec),
            "metrics": [asdict(m) for m in measurements],
            "selected_epoch": selected,
            "started_at": started,
            "stats": stats,
        }
        save_adapter(model, prep.base, adapter_dir, metadata)
    stats["phase_seconds"] = dict(tracker.seconds)
    return Outcome(measurements=measurements, artifact_dir=adapter_dir, stats=stats)


class _EpochKeeper:
    """Keeps a copy of the trainable weights of the epoch to keep (see ``keeps_later``).

    Only the adapter and the head train, a few MB: copied to the CPU, they cost little next
    to an epoch. A later epoch replaces the kept one only if its validation accuracy lies
    above the kept one's 95% interval: within it, the two are not told apart by this split,
    and the earlier one trained less.
    """

    def __init__(self, model: torch.nn.Module, *, best: bool) -> None:
        self.model = model
        self.best = best
        self.last = 0
        self.selected: Measurement | None = None
        self.weights: dict[str, torch.Tensor] = {}
        #: Where a sweep stopped it: the rung's position, or the epoch (a verdict that waited).
        self.pruned_at: float | None = None

    def saw(self, epoch: int, validation: Measurement) -> None:
        self.last = epoch
        if not self.best:
            return
        kept = self.selected
        if kept is None or keeps_later(kept.accuracy, kept.n_examples, validation.accuracy):
            self.selected = validation
            self.weights = {
                name: p.detach().to("cpu", copy=True)
                for name, p in self.model.named_parameters()
                if p.requires_grad
            }

    def restore_selected(self) -> int:
        """Put the selected epoch's weights back (when it is not the last); returns it."""
        if self.selected is None or self.selected.epoch == self.last:
            return self.last
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.weights:
                    p.copy_(self.weights[name].to(p.device))
        return self.selected.epoch
