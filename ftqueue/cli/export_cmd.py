"""`ftqueue export JOB DIR`: a LoRA job's model as a standalone transformers model."""

from __future__ import annotations

from pathlib import Path

import click

from ftqueue.cli.common import ADAPTER_JOB, echo_json, json_option
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
