"""The two jobs, as plain functions: ``run_lora`` and ``run_evaluate``."""

from __future__ import annotations

import functools
import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from ftqueue.artifacts.publishing import check_adapter_dir
from ftqueue.core.outcome import Measurement, Outcome, Progress, ProgressCallback
from ftqueue.core.states import Phase
from ftqueue.errors import AdapterError, FtqueueError, SpecError, first_line
from ftqueue.inputs.labelled import LoadedData, resolve_dataset
from ftqueue.specs import JobSpec, resolve_model, validate_against_model
from ftqueue.training.adapters import load_adapter, save_adapter
from ftqueue.training.loop import (
    FitPlan,
    Tracker,
    fit,
    fit_head,
    make_optimizer,
    measure,
    pooled_features,
    predict,
)
from ftqueue.training.modeling import (
    Base,
    autocast_dtype,
    build_classifier,
    classifier_of,
    configure_torch,
    count_params,
    load_base,
    max_positions,
    pick_device,
    stock_class_name,
)
from ftqueue.training.tokens import Tokens, tokenize_splits, tokenizer_identity

if TYPE_CHECKING:
    from ftqueue.kinds.evaluate import EvaluateSpec
    from ftqueue.kinds.lora import LoraSpec

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
class _Prepared:
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


def _load(spec: JobSpec, data: LoadedData, tracker: Tracker, model: str) -> _Prepared:
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
    return _Prepared(base, data, device, autocast_dtype(device), eval_batch_size, cached, reserved)


def _tokenize(prep: _Prepared, max_length: int, cache_dir: Path, tracker: Tracker) -> None:
    with tracker.phase(Phase.TOKENIZE):
        base = prep.base
        identity = tokenizer_identity(base.name, base.path, base.tokenizer)
        prep.tokens, hit = tokenize_splits(
            prep.data, base.tokenizer, identity, max_length, cache_dir
        )
    prep.cached["tokens_cached"] = hit


def _stats(
    prep: _Prepared,
    tracker: Tracker,
    model: torch.nn.Module,
    seen: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
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


def _lora_model(spec: LoraSpec, prep: _Prepared) -> PeftModel:
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


@releases_memory
def run_lora(
    spec: LoraSpec,
    *,
    adapter_dir: Path,
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    keep_going: Callable[[int, float], bool] | None = None,
) -> Outcome:
    """Train a LoRA adapter and write it, metadata last, into the new ``adapter_dir``.

    After each epoch, validation accuracy goes to ``keep_going`` (a sweep's rung decision),
    which may stop training there. The adapter kept is the best validation epoch's (or the
    last's, with ``select_epoch: last``), and test accuracy is measured on it; a pruned run
    keeps its adapter but is not tested.

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
    prep = _load(spec, data, tracker, spec.model)
    submitted, spec = spec, spec.for_device(prep.device.type)
    assert spec.epochs is not None and spec.batch_size is not None
    assert spec.lr is not None and spec.head_lr is not None
    with tracker.phase(Phase.LOAD):
        model = _lora_model(spec, prep)
    _tokenize(prep, spec.max_length, cache_dir, tracker)
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
    )
    keeper = _EpochKeeper(model, best=spec.select_epoch != "last")

    def after_epoch(epoch: int) -> bool:
        evaluate("validation", epoch)
        keeper.saw(epoch, measurements[-1])
        if keep_going is None or keep_going(epoch, measurements[-1].accuracy):
            return True
        keeper.pruned_at = epoch
        return False

    seen = fit(model, prep.tokens["train"], optimizer, plan, tracker, after_epoch)
    selected = keeper.restore_selected()
    if keeper.pruned_at is None:
        evaluate("test", selected)
    stats = _stats(prep, tracker, model, seen, optimizer)
    # The values the device chose, for reports and model cards of jobs that left them open.
    stats["recipe"] = {k: getattr(spec, k) for k in ("batch_size", "lr", "head_lr", "epochs")}
    stats["selected_epoch"] = selected
    if keeper.pruned_at is not None:
        stats["pruned_at"] = keeper.pruned_at
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
            "metrics": [asdict(m) for m in measurements],
            "selected_epoch": selected,
            "started_at": started,
            "stats": stats,
        }
        save_adapter(model, prep.base, adapter_dir, metadata)
    stats["phase_seconds"] = dict(tracker.seconds)
    return Outcome(measurements=measurements, artifact_dir=adapter_dir, stats=stats)


class _EpochKeeper:
    """Keeps a copy of the trainable weights of the best validation epoch so far.

    Only the adapter and the head train, a few MB: copied to the CPU, they cost little next
    to an epoch. Best is the highest accuracy, then the lowest loss, then the earliest.
    """

    def __init__(self, model: torch.nn.Module, *, best: bool) -> None:
        self.model = model
        self.best = best
        self.last = 0
        self.selected: tuple[int, float, float] | None = None
        self.weights: dict[str, torch.Tensor] = {}
        self.pruned_at: int | None = None

    def saw(self, epoch: int, validation: Measurement) -> None:
        self.last = epoch
        if not self.best:
            return
        key = (epoch, validation.accuracy, validation.loss)
        if self.selected is None or (key[1], -key[2]) > (self.selected[1], -self.selected[2]):
            self.selected = key
            self.weights = {
                name: p.detach().to("cpu", copy=True)
                for name, p in self.model.named_parameters()
                if p.requires_grad
            }

    def restore_selected(self) -> int:
        """Put the selected epoch's weights back (when it is not the last); returns it."""
        if self.selected is None or self.selected[0] == self.last:
            return self.last
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.weights:
                    p.copy_(self.weights[name].to(p.device))
        return self.selected[0]


@releases_memory
def run_evaluate(
    spec: EvaluateSpec,
    *,
    cache_dir: Path,
    adapter_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> Outcome:
    """Evaluate a split: a bare model after ``head_epochs`` of head-only training, or an adapter.

    Head-only training runs the frozen body once over train to get sentence vectors, then fits
    the head on them for ``head_epochs``.
    """
    if (adapter_dir is None) != (spec.adapter_job is None):
        raise SpecError(
            "an evaluate job with --adapter-job needs the adapter's directory, and one without "
            "needs none",
            param="--adapter-job",
        )
    validate_against_model(spec)
    meta = check_adapter_dir(adapter_dir) if adapter_dir is not None else None
    data = resolve_dataset(spec.data)
    tracker = Tracker(on_progress)
    if adapter_dir is not None and meta is not None:
        return _evaluate_adapter(spec, data, adapter_dir, meta, cache_dir, tracker)
    assert spec.pooling is not None and spec.head_epochs is not None
    prep = _load(spec, data, tracker, spec.model)
    with tracker.phase(Phase.LOAD):
        classifier = build_classifier(
            prep.base, data.num_labels, spec.pooling, spec.seed, prep.device
        )
    _tokenize(prep, spec.max_length, cache_dir, tracker)
    with tracker.phase(Phase.TRAIN, 0):
        features = pooled_features(
            classifier,
            prep.tokens["train"],
            batch_size=prep.eval_batch_size,
            pad_id=prep.pad_id,
            device=prep.device,
            amp_dtype=prep.amp_dtype,
        )
    optimizer = make_optimizer(
        classifier.classifier, lr=spec.head_lr, head_lr=spec.head_lr, weight_decay=0.0
    )
    plan = FitPlan(
        spec.head_epochs, spec.batch_size, 0.0, spec.seed, prep.pad_id, prep.device, None
    )
    seen = fit_head(classifier, features, prep.tokens["train"].labels, optimizer, plan, tracker)
    with tracker.phase(Phase.EVALUATE, spec.head_epochs):
        logits = prep.predict(classifier, spec.split)
        result = measure(spec.split, spec.head_epochs, logits, prep.tokens[spec.split].labels)
    stats = _stats(prep, tracker, classifier, seen, optimizer)
    return Outcome(measurements=[result], artifact_dir=None, stats=stats)


def _evaluate_adapter(
    spec: EvaluateSpec,
    data: LoadedData,
    adapter_dir: Path,
    meta: dict[str, Any],
    cache_dir: Path,
    tracker: Tracker,
) -> Outcome:
    if resolve_model(str(meta["model"])) != resolve_model(spec.model):
        raise AdapterError(
            f"adapter {adapter_dir} was trained on model {meta['model']}, not {spec.model}: "
            f"evaluate it with --model {meta['model']}",
            param="--model",
        )
    if int(meta["num_labels"]) != data.num_labels:
        raise AdapterError(
            f"adapter {adapter_dir} predicts {meta['num_labels']} classes but {data.source} has "
            f"{data.num_labels}: evaluate it on a dataset with the same number of classes",
            param="--dataset",
        )
    if spec.pooling is not None and spec.pooling != meta["pooling"]:
        raise AdapterError(
            f"adapter {adapter_dir} was trained with --pooling {meta['pooling']}: "
            "leave --pooling out or give that",
            param="--pooling",
        )
    prep = _load(spec, data, tracker, str(meta["model"]))
    with tracker.phase(Phase.LOAD):
        adapter = load_adapter(adapter_dir, device=prep.device)
    _tokenize(prep, spec.max_length, cache_dir, tracker)
    with tracker.phase(Phase.EVALUATE, 0):
        logits = prep.predict(adapter.model, spec.split)
        result = measure(spec.split, 0, logits, prep.tokens[spec.split].labels)
    stats = _stats(prep, tracker, adapter.model, 0)
    stats["adapter_dataset_fingerprint"] = meta.get("dataset_fingerprint")
    stats["adapter_label_names"] = meta.get("label_names")
    return Outcome(measurements=[result], artifact_dir=None, stats=stats)


def release_memory() -> None:
    """Return freed GPU memory to the driver between jobs; cached base models stay loaded."""
    if torch.cuda.is_available():
        # Cycles in the finished job's model would hold CUDA blocks until the next collection;
        # on a CPU the automatic collector is enough and a full pass costs most of a second.
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
