"""`ftqueue export JOB DIR`: a LoRA job's model as a standalone transformers model; `ftqueue
fetch JOB [DEST]`: a job's outputs as they were published."""

from __future__ import annotations

from pathlib import Path

import click

from ftqueue.cli.common import ADAPTER_JOB, JOB_ID, echo_json, json_option
from ftqueue.core.text import printable


@click.command("export")
@click.argument("job_id", type=ADAPTER_JOB, metavar="JOB")
@click.argument("directory", type=click.Path(path_type=Path), metavar="DIR")
@click.option(
    "--push-to-hub",
    "repo",
    metavar="REPO",
    help="Then upload DIR to this Hugging Face hub repository (USER/NAME), created if needed.",
)
@click.option("--private", is_flag=True, help="Create the hub repository as a private one.")
@json_option
def export_cmd(
    job_id: int, directory: Path, repo: str | None, private: bool, as_json: bool
) -> None:
    """Write LoRA job JOB's model into the new directory DIR, LoRA merged into the weights.

    DIR holds model.safetensors, config.json (with the label names), the tokenizer and a
    README.md, and loads with transformers alone:
    pipeline("text-classification", model="DIR"). Heads that no stock transformers class
    computes (--pooling mean or cls) are refused: train with --pooling pooler, the default.
    DIR must be new (or an empty directory): the model is written beside it and renamed into
    place whole, and never replaces anything, not even a DIR another export made meanwhile.

    \b
    Examples:
      ftqueue export 12 exported/reviews
      ftqueue export 12 exported/reviews --push-to-hub my-org/reviews-classifier --private
    """
    from ftqueue import api

    done = api.export(job_id=job_id, directory=directory, repo=repo, private=private)
    if as_json:
        echo_json({"job_id": job_id, "directory": str(done.directory), "hub_url": done.hub_url})
        return
    labels = ", ".join(done.label_names)
    click.echo(printable(f"job {job_id}: exported to {done.directory} (labels: {labels})"))
    if done.hub_url is not None:
        click.echo(printable(f"uploaded to {done.hub_url}"))


@click.command("fetch")
@click.argument("job_id", type=JOB_ID, metavar="JOB")
@click.argument("dest", type=click.Path(path_type=Path), metavar="[DEST]", required=False)
@json_option
def fetch_cmd(job_id: int, dest: Path | None, as_json: bool) -> None:
    """Download job JOB's outputs (an adapter, predictions) into the new directory DEST.

    DEST defaults to job-JOB in the current directory. From an object store
    (FTQUEUE_ARTIFACTS_DIR=s3://...), each file is checked against the manifest the worker
    wrote last: an upload that did not finish is refused, never fetched in part. DEST must be
    new (or an empty directory) and is renamed into place whole. An adapter fetched this way
    loads with peft alone: PeftModel.from_pretrained(base_model, "DEST").

    \b
    Examples:
      ftqueue fetch 12                  # into ./job-12
      ftqueue fetch 12 adapters/rt-best --json
    """
    from ftqueue import api

    done = api.fetch(job_id=job_id, directory=dest)
    if as_json:
        echo_json(
            {
                "job_id": job_id,
                "source": done.source,
                "directory": str(done.directory),
                "files": done.files,
            }
        )
        return
    click.echo(
        printable(
            f"job {job_id}: fetched {len(done.files)} files from {done.source} to {done.directory}"
        )
    )
