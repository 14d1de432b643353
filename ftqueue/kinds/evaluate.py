"""The ``evaluate`` kind: the base line (head trained, body frozen) or an adapter, measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftqueue.core.outcome import Outcome
from ftqueue.core.text import clip
from ftqueue.errors import AdapterError, ModelError, SpecError
from ftqueue.kinds.registry import JobContext, JobKind, Role, register
from ftqueue.specs import (
    POOLINGS,
    SPLITS,
    DataSpec,
    ModelSpec,
    eval_batch_size_field,
    max_length_field,
    model_fingerprint_field,
    param,
    required,
    resolve_model,
    seed_field,
)


@dataclass(frozen=True, kw_only=True)
class EvaluateSpec(ModelSpec):
    """Evaluate a model on a split: a bare model after training its head, or a LoRA adapter.

    ``head_epochs`` and ``pooling`` default to None, resolved on construction: a bare model
    gets 1 head epoch and mean pooling; an adapter brings its own head and pooling, so it gets
    0 head epochs and keeps ``pooling`` None unless given (then it must match the adapter).
    """

    kind = "evaluate"

    model: str = required(
        "text", "Model to evaluate; with --adapter-job, defaults to the adapter's.", cli=False
    )
    data: DataSpec
    model_fingerprint: str | None = model_fingerprint_field()
    split: str = param("test", "choice", "Split to evaluate.", choices=SPLITS)
    adapter_job: int | None = param(
        None, "int", "Evaluate the adapter of this succeeded LoRA job (a comma list evaluates "
        "several), with no training.", lo=1, hi=2**63 - 1, optional=True, grid=True,
    )  # fmt: skip
    head_epochs: int | None = param(
        None, "int", "Epochs of head-only training (body frozen) before evaluating a bare model.",
        hi=1000, optional=True, default_text="1", grid=True,
    )  # fmt: skip
    pooling: str | None = param(
        None, "choice", "Sentence vector.", choices=POOLINGS, optional=True,
        default_text="mean; an adapter's own with --adapter-job",
    )  # fmt: skip
    head_lr: float = param(
        3e-3, "float", "Learning rate of the head.", lo=0, hi=1, lo_open=True, grid=True
    )
    batch_size: int = param(32, "int", "Head training batch size.", lo=1, hi=8192)
    eval_batch_size: int | None = eval_batch_size_field()
    max_length: int = max_length_field()
    seed: int = seed_field("Random seed of head training.")

    def _after_check(self) -> None:
        if self.adapter_job is not None:
            if self.head_epochs not in (None, 0):
                raise SpecError(
                    "--head-epochs trains a head on a bare model, but an adapter brings its own "
                    "trained head: leave --head-epochs out with --adapter-job; "
                    f"got {self.head_epochs!r}",
                    param="--head-epochs",
                )
            self._set("head_epochs", 0)
            return
        if self.head_epochs is None:
            self._set("head_epochs", 1)
        elif self.head_epochs == 0:
            raise SpecError(
                "--head-epochs 0 is only allowed with --adapter-job: a bare model's head is "
                "untrained, so use 1..1000",
                param="--head-epochs",
            )
        if self.pooling is None:
            self._set("pooling", "mean")


def check(spec: EvaluateSpec) -> None:
    """The adapter to evaluate exists, succeeded, is on this machine, and was trained on the
    model given (the same directory content, where it is a local one)."""
    if spec.adapter_job is not None:
        from ftqueue.artifacts import publishing
        from ftqueue.kinds import rows
        from ftqueue.store import reads

        adapter = rows.adapter_dir_of(spec.adapter_job)
        check_base_model(spec, reads.spec_of(spec.adapter_job) or {})
        try:
            metadata = publishing.check_adapter_dir(adapter)
        except AdapterError:
            return  # not an adapter that loads (a synthetic run's): the job says what is wrong
        pairs = spec.data.text_pair_column is not None
        publishing.check_pairs(metadata, pairs, spec.adapter_job)


def check_base_model(spec: EvaluateSpec, trained_spec: dict[str, Any]) -> None:
    """AdapterError unless the adapter's job (its stored spec) trained on ``spec.model``."""
    trained = str(trained_spec.get("model"))
    if not _same_model(trained, spec.model):
        raise AdapterError(
            f"--adapter-job {spec.adapter_job} was trained on model {clip(trained)}, not "
            f"{clip(spec.model)}: leave --model out (it defaults to the adapter's model)",
            param="--model",
        )
    was = trained_spec.get("model_fingerprint")
    if was is not None and spec.model_fingerprint not in (None, was):
        raise AdapterError(
            f"model directory {clip(spec.model)} changed since --adapter-job "
            f"{spec.adapter_job} was trained on it (fingerprint {str(was)[:12]}, now "
            f"{spec.model_fingerprint[:12]}): the adapter no longer fits it",
            param="--model",
        )


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return resolve_model(a) == resolve_model(b)
    except ModelError:
        return False


def perform(spec: EvaluateSpec, ctx: JobContext) -> Outcome:
    from ftqueue import training
    from ftqueue.kinds import rows

    adapter = rows.adapter_dir_of(spec.adapter_job) if spec.adapter_job is not None else None
    return training.run_evaluate(
        spec, cache_dir=ctx.cache_dir, adapter_dir=adapter, on_progress=ctx.on_progress
    )


KIND = register(
    JobKind(
        name="evaluate", spec_type=EvaluateSpec, perform=perform, role=Role.EVALUATION, check=check
    )
)
