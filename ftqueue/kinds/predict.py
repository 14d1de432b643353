"""The ``predict`` kind: label the texts of a file with a LoRA job's adapter.

It reads unlabelled text (checked here, at submit time, by ``check``) and publishes one
predictions directory per job: ``predictions.parquet`` and ``predictions.csv`` (row, text and
for sentence pairs text_pair, label name, its score, a probability per class) and
``ftqueue_predictions.json`` (where they came from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftqueue.artifacts import publishing
from ftqueue.core.outcome import Outcome
from ftqueue.errors import AdapterError
from ftqueue.kinds.registry import JobContext, JobKind, Role, register
from ftqueue.specs import (
    MAX_LENGTH_CAP,
    JobSpec,
    eval_batch_size_field,
    model_fingerprint_field,
    param,
    required,
)

if TYPE_CHECKING:
    from ftqueue.training.predicting import Labelled


@dataclass(frozen=True, kw_only=True)
class PredictSpec(JobSpec):
    """Label every row of ``input`` with the adapter of LoRA job ``adapter_job``.

    ``model`` is the adapter's own (the command fills it in), ``input_sha256`` the input's
    content when it was submitted: an identical spec is then the same file, labelled by the
    same adapter, and a job whose file has changed since refuses to run.
    """

    kind = "predict"

    model: str = required("text", "The adapter's model (taken from --adapter-job).", cli=False)
    adapter_job: int = required(
        "int", "Label with the adapter of this succeeded LoRA job (a comma list labels the "
        "input once per adapter).", lo=1, grid=True,
    )  # fmt: skip
    input: str = required("text", "A .csv, .jsonl or .parquet file of texts to label.")
    text_column: str = param("text", "text", "Column holding the text.")
    #: Stored only when given, so that specs from before the field keep their hash.
    text_pair_column: str | None = param(
        None, "text", "Column holding the second text of sentence pairs (for an adapter "
        "trained on pairs).", optional=True, omit_none=True,
    )  # fmt: skip
    input_sha256: str | None = param(
        None, "text", "sha256 of the input file when it was submitted.", optional=True, cli=False
    )
    max_length: int = param(
        128, "int", "Tokens kept per text.", lo=8, hi=MAX_LENGTH_CAP, default_text="the adapter's"
    )
    eval_batch_size: int | None = eval_batch_size_field()
    model_fingerprint: str | None = model_fingerprint_field()

    def source(self) -> str:
        return self.input


def check(spec: PredictSpec) -> None:
    """The adapter exists and fits the model; the input is readable text, as submitted."""
    from ftqueue.inputs import unlabelled
    from ftqueue.kinds import rows
    from ftqueue.specs import resolve_model

    adapter = rows.adapter_dir_of(spec.adapter_job)
    metadata = publishing.check_adapter_dir(adapter)
    publishing.check_pairs(metadata, spec.text_pair_column is not None, spec.adapter_job)
    if resolve_model(str(metadata["model"])) != resolve_model(spec.model):
        raise AdapterError(
            f"adapter of job {spec.adapter_job} was trained on model {metadata['model']}, not "
            f"{spec.model}: leave the model to the adapter",
            param="--adapter-job",
        )
    unlabelled.read_inputs(
        spec.input, spec.text_column, sha256=spec.input_sha256, pair_column=spec.text_pair_column
    )


def perform(spec: PredictSpec, ctx: JobContext) -> Outcome:
    from ftqueue import training
    from ftqueue.kinds import rows

    assert ctx.staging is not None, "a predict job publishes its predictions"
    return training.run_predict(
        spec,
        adapter_dir=Path(rows.adapter_dir_of(spec.adapter_job)),
        out_dir=ctx.staging,
        on_progress=ctx.on_progress,
    )


KIND = register(
    JobKind(
        name="predict",
        spec_type=PredictSpec,
        perform=perform,
        role=Role.OTHER,
        artifacts="predictions",
        output_label="predictions",
        output_files=publishing.PREDICTIONS_FILES,
        check=check,
    )
)


def label_texts(adapter_dir: Path, texts: list[str]) -> Labelled:
    """Label a few texts in this process with an adapter, for a quick try (``ftqueue predict``)."""
    from ftqueue import training

    return training.label_texts(adapter_dir, texts)
