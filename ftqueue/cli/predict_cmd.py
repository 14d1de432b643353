"""`ftqueue submit predict` (a queued job per input file) and `ftqueue predict` (a quick try)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftqueue.cli.common import ADAPTER_JOB, console, echo_json, json_option
from ftqueue.cli.options import expand, pop_queue_options, queue_options, spec_options, split_grid
from ftqueue.cli.submitting import submit_specs
from ftqueue.kinds.predict import PredictSpec


@click.command("predict")
@spec_options(PredictSpec)
@click.option(
    "--output-dir",
    metavar="DIR",
    help="Publish predictions as DIR/job-<id> under FTQUEUE_ARTIFACTS_DIR [default: predictions].",
)
@queue_options
def submit_predict(**kw: Any) -> None:
    """Label every row of a file with a LoRA job's adapter: one predictions file per job.

    Each job writes predictions.parquet and predictions.csv (row from 0, text, text_pair for
    sentence pairs, label (the class name), score (its probability), prob_<class> per class);
    `ftqueue show JOB` prints where. --max-length defaults to the adapter's. An adapter
    trained on sentence pairs needs --text-pair-column.

    \b
    Examples:
      ftqueue submit predict --adapter-job 12 --input reviews.csv --wait
      ftqueue submit predict --adapter-job 12 --input posts.jsonl --text-column body
      ftqueue submit predict --adapter-job 12,13 --input reviews.parquet   # one job each
      ftqueue submit predict --adapter-job 14 --input pairs.csv \\
          --text-column premise --text-pair-column hypothesis              # sentence pairs
    """
    from ftqueue import api

    queue = pop_queue_options(kw)
    queue["output_dir"] = kw.pop("output_dir")
    # Workers read the file, maybe from another directory: the path goes in absolute.
    path = Path(kw.pop("input")).expanduser().absolute()
    digest = api.file_sha256(path=path)
    fixed, grid = split_grid(PredictSpec, kw)
    # A handful of rows (one per adapter and value): read twice, so kept as a list.
    rows = list(expand({**fixed, "input": str(path), "input_sha256": digest}, grid))
    # Each adapter's metadata: its model and max length become the job's.
    adapters = api.adapters(job_ids=sorted({row["adapter_job"] for row in rows}))
    specs = []
    for row in rows:
        meta = adapters[row["adapter_job"]]
        values = {k: v for k, v in row.items() if v is not None}
        values.setdefault("max_length", int(meta["max_length"]))
        specs.append(PredictSpec(model=str(meta["model"]), **values))
    submit_specs(specs, **queue)


@click.command("predict")
@click.argument("job_id", type=ADAPTER_JOB, metavar="JOB")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@json_option
def predict_cmd(job_id: int, texts: tuple[str, ...], as_json: bool) -> None:
    """Label a few texts in this process with LoRA job JOB's adapter, for a quick try.

    \b
    Examples:
      ftqueue predict 12 "a gripping, beautifully acted film" "dull and far too long"
      ftqueue predict 12 "not bad at all" --json
    For a file of texts, queue a job: ftqueue submit predict --adapter-job 12 --input FILE
    """
    from ftqueue import api

    if any(not t.strip() for t in texts):
        raise click.BadParameter("every TEXT must hold some text", param_hint="TEXT")
    rows = api.predict(job_id=job_id, texts=texts)
    names = list(rows[0]["probabilities"])
    if as_json:
        echo_json(rows)
        return
    console().print(predictions_table(rows, names))


def predictions_table(rows: list[dict[str, Any]], names: list[str]) -> Any:
    """Each text with its label and the probability of each label."""
    from ftqueue.core.tables import Column, FitTable
    from ftqueue.core.text import literal

    columns = [
        Column("text", wrap=True, min_width=20),
        Column("label", wrap=True),
        # Label names are the model's own strings: literal; the probabilities go first.
        *(Column(literal(f"p({name})"), priority=1, justify="right") for name in names),
    ]
    cells = [
        [
            literal(row["text"]),
            literal(row["label"]),
            *[f"{row['probabilities'][n]:.3f}" for n in names],
        ]
        for row in rows
    ]
    return FitTable(columns, cells, header_style="bold")
