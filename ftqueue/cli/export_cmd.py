"""`ftqueue export JOB DIR`: a LoRA job's model as a standalone transformers model."""

from __future__ import annotations

from pathlib import Path

import click

from ftqueue.cli.common import ADAPTER_JOB, echo_json, json_option


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
    from ftqueue.artifacts import publishing
    from ftqueue.inputs import hub
    from ftqueue.store import db, reads

    if repo is not None:
        hub.check_repo(repo)
    publishing.check_new_dir(directory, param="DIR")
    db.ensure_ready()
    adapter = reads.adapter_dir_of(job_id, flag="job")
    metadata = publishing.check_adapter_dir(adapter)
    publishing.check_exportable(metadata, job_id)
    from ftqueue import training

    out = training.export_adapter(adapter, directory, job_id=job_id)
    url = None
    if repo is not None:
        url = hub.push(out, repo, private=private, message=f"ftqueue export of job {job_id}")
    if as_json:
        echo_json({"job_id": job_id, "directory": str(out), "hub_url": url})
        return
    labels = ", ".join(str(n) for n in metadata["label_names"])
    click.echo(f"job {job_id}: exported to {out} (labels: {labels})")
    if url is not None:
        click.echo(f"uploaded to {url}")
