"""The ``lora`` kind: fine-tune LoRA adapters, record validation and test accuracy."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftqueue.core.outcome import Outcome
from ftqueue.core.text import clip, close_match
from ftqueue.errors import SpecError
from ftqueue.kinds.registry import JobContext, JobKind, Role, register
from ftqueue.specs import (
    BIASES,
    POOLINGS,
    SELECT_EPOCHS,
    DataSpec,
    ModelSpec,
    eval_batch_size_field,
    max_length_field,
    model_fingerprint_field,
    param,
    required,
    seed_field,
    spec_params,
)

#: The recipe's values that depend on where a job runs. On a GPU a step of batch 32 is bound by
#: kernel launches (thousands per step, each a few microseconds), so a larger batch costs little
#: more per step; the learning rates grow with it (about the square root of the batch ratio) and
#: more epochs make up for the fewer steps. Chosen on movie-snippets with minilm, run on CPU (a
#: recipe's accuracy does not depend on the device): see the docs, guides/training.md.
DEVICE_DEFAULTS: dict[str, dict[str, int | float]] = {
    "cpu": {"batch_size": 32, "lr": 1e-3, "head_lr": 1e-2, "epochs": 2},
    "gpu": {"batch_size": 256, "lr": 3e-3, "head_lr": 3e-2, "epochs": 4},
}


def device_recipe(device: str) -> dict[str, int | float]:
    """The device-dependent defaults for a device type (``cuda`` -> the GPU recipe)."""
    return dict(DEVICE_DEFAULTS["gpu" if device in ("gpu", "cuda") else "cpu"])


def _per_device(name: str) -> str:
    """What ``--help`` says such a default is: ``32 on CPU, 256 on GPU``."""
    return f"{DEVICE_DEFAULTS['cpu'][name]:g} on CPU, {DEVICE_DEFAULTS['gpu'][name]:g} on GPU"


@dataclass(frozen=True, kw_only=True)
class LoraSpec(ModelSpec):
    """A LoRA fine-tuning job; the defaults are tuned for small encoders on sentence polarity.

    The original script is ``r=32, alpha=4, dropout=0.01, target_modules=("query", "key",
    "value"), model_dropout=None, batch_size=16, warmup_ratio=0`` with this default pooling.
    ``lr``, ``head_lr``, ``epochs`` and ``batch_size`` left None take the values of the device
    the job runs on (``DEVICE_DEFAULTS``), which the job records in its stats.
    """

    kind = "lora"

    model: str = required(
        "text", "minilm (offline), a hub id (bert-base-uncased) or a local model directory."
    )
    data: DataSpec
    model_fingerprint: str | None = model_fingerprint_field()
    r: int = param(16, "int", "LoRA rank.", lo=1, hi=1024, grid=True, hyper=True)
    alpha: float = param(
        32.0, "float", "LoRA alpha (scale = alpha / r).", lo=0, hi=1e6, lo_open=True, grid=True,
        hyper=True,
    )  # fmt: skip
    #: LoRA dropout. Zero by default: dropout masks cost about a third of a CPU step here, and
    #: neither it nor ``model_dropout`` improved accuracy on movie-snippets.
    dropout: float = param(
        0.0, "float", "LoRA dropout.", lo=0, hi=1, hi_open=True, grid=True, hyper=True
    )
    target_modules: tuple[str, ...] = param(
        ("query", "key", "value", "dense"),
        "modules",
        "Comma list of module names to adapt; repeat the flag to compare several sets.",
        hyper=True,
        cli=False,
    )
    bias: str = param("none", "choice", "Which biases to train.", choices=BIASES, hyper=True)
    #: Dropout inside the pretrained body while training; None keeps its own (BERT: 0.1).
    model_dropout: float | None = param(
        0.0, "float", "Dropout inside the pretrained body.", lo=0, hi=1, hi_open=True,
        optional=True, cli=False,
    )  # fmt: skip
    #: How a sentence vector is formed: the model's pooler (BERT's own head, so the adapter
    #: loads with stock transformers and exports), the mean of token states, or the first token.
    pooling: str = param(
        "pooler",
        "choice",
        "Sentence vector: the pooler (BERT's stock head; exportable), mean of tokens, or first "
        "token.",
        choices=POOLINGS,
        hyper=True,
    )
    lr: float | None = param(
        None, "float", "Learning rate of the adapter.", lo=0, hi=1, lo_open=True, grid=True,
        hyper=True, optional=True, default_text=_per_device("lr"),
    )  # fmt: skip
    #: The classification head starts from scratch (and MiniLM's pooler was never trained), so
    #: it learns faster than the adapter: 1e-2 beat 3e-3 on movie-snippets validation.
    head_lr: float | None = param(
        None, "float", "Learning rate of the new head.", lo=0, hi=1, lo_open=True, grid=True,
        hyper=True, optional=True, default_text=_per_device("head_lr"),
    )  # fmt: skip
    epochs: int | None = param(
        None, "int", "Passes over the training data.", lo=1, hi=1000, grid=True, hyper=True,
        optional=True, default_text=_per_device("epochs"),
    )  # fmt: skip
    batch_size: int | None = param(
        None, "int", "Training batch size.", lo=1, hi=8192, grid=True, hyper=True,
        optional=True, default_text=_per_device("batch_size"),
    )  # fmt: skip
    #: Micro-batches per optimizer step, for an effective batch larger than fits in memory.
    #: Stored only above 1, so that specs from before the field keep their hash.
    grad_accum: int = param(
        1, "int", "Gradient accumulation: micro-batches of --batch-size per optimizer step "
        "(effective batch = batch size x this).", lo=1, hi=1024, grid=True, hyper=True,
        omit_default=True,
    )  # fmt: skip
    eval_batch_size: int | None = eval_batch_size_field()
    max_length: int = max_length_field()
    warmup_ratio: float = param(
        0.06, "float", "Share of warm-up steps.", lo=0, hi=1, hi_open=True, grid=True, hyper=True
    )
    weight_decay: float = param(
        0.01, "float", "AdamW weight decay.", lo=0, hi=1, grid=True, hyper=True
    )
    seed: int = seed_field()
    #: Which epoch's adapter is kept and tested. Stored only when given, so that specs from
    #: before the field keep their hash; None is ``best``.
    select_epoch: str | None = param(
        None,
        "choice",
        "Keep the adapter of the best validation epoch and report its test accuracy (a later "
        "epoch counts as better only above the earlier one's 95% interval), or the last "
        "epoch's.",
        choices=SELECT_EPOCHS,
        optional=True,
        omit_none=True,
        default_text="best",
    )

    def for_device(self, device: str) -> LoraSpec:
        """This spec with the values it leaves to the device (None) set for ``device``."""
        chosen = device_recipe(device)
        values = {k: v for k, v in chosen.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **values)  # type: ignore[arg-type]

    def trained_with(self) -> dict[str, Any]:
        """The hyper-parameters of this (device-resolved) spec, as a job records them."""
        out: dict[str, Any] = {}
        for f, p in spec_params(type(self)):
            if p.hyper:
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def check(spec: LoraSpec) -> None:
    """--target-modules names layers the model has, where its weights are on this machine
    (the alias, a local directory); a hub id's are checked when a worker loads it."""
    from ftqueue.inputs.weights import layer_names, resolve_model
    from ftqueue.kinds import synthetic

    if synthetic.is_synthetic(spec.model):
        return
    layers = layer_names(resolve_model(spec.model))
    if not layers:
        return
    # peft's rule for a list of names: a module matches a name it equals or ends in.
    missing = [
        t for t in spec.target_modules if not any(n == t or n.endswith("." + t) for n in layers)
    ]
    if not missing:
        return
    leaves = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in layers))
    leaves.sort(key=lambda name: name.endswith("embeddings"))  # the usual targets first
    hints = [h for h in (close_match(m, leaves) for m in missing) if h]
    slip = f"; did you mean {','.join(hints)}?" if len(hints) == len(missing) else ""
    raise SpecError(
        f"--target-modules {','.join(spec.target_modules)}: model {clip(spec.model)} has no "
        f"layer named {' or '.join(missing)}; its layers LoRA can adapt are "
        f"{', '.join(leaves)}{slip} (default: query,key,value,dense)",
        param="--target-modules",
    )


def perform(spec: LoraSpec, ctx: JobContext) -> Outcome:
    from ftqueue import training

    assert ctx.staging is not None, "a lora job publishes an adapter"
    return training.run_lora(
        spec,
        adapter_dir=ctx.staging,
        cache_dir=ctx.cache_dir,
        on_progress=ctx.on_progress,
        keep_going=ctx.keep_going,
        rungs=ctx.rungs,
    )


KIND = register(
    JobKind(
        name="lora",
        spec_type=LoraSpec,
        perform=perform,
        role=Role.RUN,
        artifacts="adapters",
        output_label="adapter",
        check=check,
        check_reads=("model", "target_modules"),
    )
)


def export_model(adapter_dir: Path, out_dir: Path, *, job_id: int) -> Path:
    """Write a LoRA run's model, LoRA merged into the weights, as a transformers model."""
    from ftqueue import training

    return training.export_adapter(adapter_dir, out_dir, job_id=job_id)
