"""Labelling text with an adapter: a job's predictions file, or a few texts in-process.

The adapter's LoRA weights are merged into a private copy of the base model first (the same
numbers, fewer matrix products per step), texts are tokenized in one call and run in
length-sorted batches under ``torch.inference_mode``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ftqueue.artifacts.publishing import PREDICTIONS_FILES, check_adapter_dir, check_pairs
from ftqueue.core.files import share_tree, write_json_atomic
from ftqueue.core.outcome import Outcome, Progress, ProgressCallback
from ftqueue.core.states import Phase
from ftqueue.inputs.unlabelled import read_inputs
from ftqueue.training.adapters import library_versions, load_adapter
from ftqueue.training.loop import Tracker, predict
from ftqueue.training.modeling import autocast_dtype, configure_torch, pick_device
from ftqueue.training.preparing import releases_memory
from ftqueue.training.tokens import encode

if TYPE_CHECKING:
    from ftqueue.kinds.predict import PredictSpec

PREDICTIONS_METADATA = "ftqueue_predictions.json"
PREDICTIONS_FORMAT = 1
#: Progress (and a chance to be cancelled) every this many batches.
REPORT_EVERY = 10


@dataclass
class Labelled:
    """Predictions for some texts: the class names and a probability per text and class."""

    label_names: list[str]
    probabilities: np.ndarray

    @property
    def labels(self) -> list[str]:
        return [self.label_names[i] for i in self.probabilities.argmax(1)]

    @property
    def scores(self) -> np.ndarray:
        """The probability of each text's label."""
        return self.probabilities.max(1)


def label_texts(
    adapter_dir: Path,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    tracker: Tracker | None = None,
) -> Labelled:
    """Class probabilities of ``texts`` (with ``pairs``: of each text and its second text)
    under the adapter (its own max length by default)."""
    check_pairs(check_adapter_dir(adapter_dir), pairs is not None, None)
    tracker = tracker or Tracker(None)
    device = pick_device()
    configure_torch(device)
    with tracker.phase(Phase.LOAD):
        adapter = load_adapter(adapter_dir, device=device)
        model = adapter.model.merge_and_unload()
    tokenizer = adapter.base.tokenizer
    with tracker.phase(Phase.TOKENIZE):
        length = max_length or int(adapter.metadata["max_length"])
        tokens = encode(texts, [0] * len(texts), tokenizer, length, pairs)
    size = batch_size or (512 if device.type == "cuda" else 64)
    total = -(-len(texts) // size)

    def on_batch(done: int, _: int) -> None:
        if done % REPORT_EVERY == 0 or done == total:
            tracker.report(Progress(Phase.PREDICT, 0, done, total, None))

    with tracker.phase(Phase.PREDICT, 0, total):
        logits = predict(
            model,
            tokens,
            batch_size=size,
            pad_id=tokenizer.pad_token_id or 0,
            device=device,
            amp_dtype=autocast_dtype(device),
            on_batch=on_batch,
        )
    probabilities = torch.softmax(logits.float(), dim=-1).numpy().astype(np.float32)
    return Labelled([str(n) for n in adapter.metadata["label_names"]], probabilities)


def probability_columns(label_names: list[str]) -> list[str]:
    return [f"prob_{name}" for name in label_names]


def write_predictions(
    directory: Path, labelled: Labelled, texts: list[str], pairs: list[str] | None = None
) -> list[str]:
    """``predictions.parquet`` and ``predictions.csv``: row (from 0), text (and text_pair),
    label (the class name), score (its probability), prob_<class>...; returns the columns."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    probs = labelled.probabilities
    columns: dict[str, Any] = {
        "row": pa.array(np.arange(len(probs), dtype=np.int64)),
        "text": pa.array(texts, type=pa.string()),
    }
    if pairs is not None:
        columns["text_pair"] = pa.array(pairs, type=pa.string())
    columns["label"] = pa.array(labelled.labels, type=pa.string())
    columns["score"] = pa.array(labelled.scores)
    for i, name in enumerate(probability_columns(labelled.label_names)):
        columns[name] = pa.array(probs[:, i])
    table = pa.table(columns)
    parquet, csv = PREDICTIONS_FILES
    pq.write_table(table, directory / parquet)
    pacsv.write_csv(table, directory / csv)
    return list(columns)


@releases_memory
def run_predict(
    spec: PredictSpec,
    *,
    adapter_dir: Path,
    out_dir: Path,
    on_progress: ProgressCallback | None = None,
) -> Outcome:
    """Label every row of the spec's input; write the predictions into the new ``out_dir``.

    The input is checked (and must be the file that was submitted) before the model loads.
    """
    metadata = check_adapter_dir(adapter_dir)
    check_pairs(metadata, spec.text_pair_column is not None, spec.adapter_job)
    texts, pairs = read_inputs(
        spec.input, spec.text_column, sha256=spec.input_sha256, pair_column=spec.text_pair_column
    )
    started = time.time()
    tracker = Tracker(on_progress)
    labelled = label_texts(
        adapter_dir,
        texts,
        pairs=pairs,
        max_length=spec.max_length,
        batch_size=spec.eval_batch_size,
        tracker=tracker,
    )
    with tracker.phase(Phase.SAVE):
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = write_predictions(out_dir, labelled, texts, pairs)
    seconds = tracker.seconds
    # What labelling costs once the model is loaded: tokenizing, the model, writing the file.
    work = seconds[Phase.TOKENIZE] + seconds.get(Phase.PREDICT, 0.0) + seconds[Phase.SAVE]
    counts = np.bincount(labelled.probabilities.argmax(1), minlength=len(labelled.label_names))
    stats: dict[str, Any] = {
        "rows": len(texts),
        "rows_per_second": len(texts) / work if work > 0 else None,
        "samples_per_second": len(texts) / work if work > 0 else None,
        "label_counts": dict(zip(labelled.label_names, counts.tolist(), strict=True)),
        "label_names": labelled.label_names,
        "adapter_job": spec.adapter_job,
        "input_sha256": spec.input_sha256,
        "phase_seconds": dict(seconds),
        "peak_rss_mb": tracker.peak_rss / 2**20,
        "device": str(pick_device()),
    }
    with tracker.phase(Phase.SAVE):
        write_json_atomic(
            out_dir / PREDICTIONS_METADATA,
            {
                "format": PREDICTIONS_FORMAT,
                "spec": spec.to_dict(),
                "spec_hash": spec.spec_hash(),
                "adapter": {
                    "job": spec.adapter_job,
                    "model": metadata["model"],
                    "spec_hash": metadata.get("spec_hash"),
                    "pooling": metadata["pooling"],
                },
                "columns": columns,
                "started_at": started,
                "versions": library_versions(),
                "stats": stats,
            },
        )
        share_tree(out_dir)
    stats["phase_seconds"] = dict(tracker.seconds)
    return Outcome(measurements=[], artifact_dir=out_dir, stats=stats)
