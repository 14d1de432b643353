"""The ``evaluate`` job: measure a split on a bare model (after training its head) or an adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftqueue.artifacts.publishing import check_adapter_dir, check_pairs
from ftqueue.core.outcome import Outcome, ProgressCallback
from ftqueue.core.states import Phase
from ftqueue.core.text import clip
from ftqueue.errors import AdapterError, SpecError
from ftqueue.inputs.labelled import LoadedData, resolve_dataset
from ftqueue.specs import resolve_model, validate_against_model
from ftqueue.training.adapters import load_adapter
from ftqueue.training.loop import (
    FitPlan,
    Tracker,
    fit_head,
    make_optimizer,
    measure,
    pooled_features,
)
from ftqueue.training.modeling import build_classifier
from ftqueue.training.preparing import job_stats, prepare, releases_memory, tokenize

if TYPE_CHECKING:
    from ftqueue.kinds.evaluate import EvaluateSpec


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
    prep = prepare(spec, data, tracker, spec.model)
    with tracker.phase(Phase.LOAD):
        classifier = build_classifier(
            prep.base, data.num_labels, spec.pooling, spec.seed, prep.device
        )
    tokenize(prep, spec.max_length, cache_dir, tracker)
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
    stats = job_stats(prep, tracker, classifier, seen, optimizer)
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
    check_pairs(meta, data.is_pairs, spec.adapter_job)
    trained = [str(n) for n in meta["label_names"]]
    numbered = [str(i) for i in range(data.num_labels)]
    if numbered not in (trained, data.label_names) and trained != data.label_names:
        raise AdapterError(
            f"adapter {adapter_dir} predicts the classes {clip(', '.join(trained))}, but "
            f"{clip(data.source)} has {clip(', '.join(data.label_names))}: evaluate it on data "
            "with the same classes (or name them the same with --label-names)",
            param="--dataset",
        )
    if spec.pooling is not None and spec.pooling != meta["pooling"]:
        raise AdapterError(
            f"adapter {adapter_dir} was trained with --pooling {meta['pooling']}: "
            "leave --pooling out or give that",
            param="--pooling",
        )
    prep = prepare(spec, data, tracker, str(meta["model"]))
    with tracker.phase(Phase.LOAD):
        adapter = load_adapter(adapter_dir, device=prep.device)
    tokenize(prep, spec.max_length, cache_dir, tracker)
    with tracker.phase(Phase.EVALUATE, 0):
        logits = prep.predict(adapter.model, spec.split)
        result = measure(spec.split, 0, logits, prep.tokens[spec.split].labels)
    stats = job_stats(prep, tracker, adapter.model, 0)
    stats["adapter_dataset_fingerprint"] = meta.get("dataset_fingerprint")
    stats["adapter_label_names"] = meta.get("label_names")
    return Outcome(measurements=[result], artifact_dir=None, stats=stats)
