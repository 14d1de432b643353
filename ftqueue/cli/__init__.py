"""The `ftqueue` command line: a thin shell over the package's Python API.

This module makes the root group and adds every command to it; the command modules import
nothing from here.
"""

from __future__ import annotations

import click

from ftqueue import __version__
from ftqueue.cli import (
    db_cmds,
    export_cmd,
    jobs_cmds,
    logs_cmd,
    predict_cmd,
    report_cmd,
    submit_cmd,
    sweep_cmd,
    top_cmd,
    worker_cmd,
    workers_cmd,
)
from ftqueue.cli.common import CONTEXT, FtqueueGroup


@click.group(cls=FtqueueGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="ftqueue")
def cli() -> None:
    """Queue LoRA fine-tuning and evaluation jobs, run them on GPU workers, compare results.

    \b
    Typical session:
      ftqueue db upgrade                                  # create the results tables
      ftqueue submit evaluate --model minilm --dataset movie-snippets
      ftqueue submit lora --model minilm --dataset movie-snippets --wait
      ftqueue report                                      # base model vs its LoRA runs
      ftqueue predict 2 "a gripping, beautifully acted film"  # try job 2's adapter
      ftqueue export 2 exported/minilm-snippets           # a standalone transformers model
      ftqueue fetch 2 adapters/job-2                      # job 2's adapter, as published

    Settings come from FTQUEUE_* environment variables (the docs' Settings page lists them):
    FTQUEUE_DATABASE_URL, FTQUEUE_BROKER_URL, FTQUEUE_ARTIFACTS_DIR (a directory or
    s3://BUCKET/PREFIX), FTQUEUE_EAGER=1 to run jobs in-process.
    """


submit_cmd.submit_group.add_command(predict_cmd.submit_predict)

for command in (
    db_cmds.db_group,
    submit_cmd.submit_group,
    sweep_cmd.sweep_cmd,
    jobs_cmds.list_cmd,
    jobs_cmds.status_cmd,
    jobs_cmds.cancel_cmd,
    report_cmd.report_cmd,
    report_cmd.show_cmd,
    logs_cmd.logs_cmd,
    predict_cmd.predict_cmd,
    export_cmd.export_cmd,
    export_cmd.fetch_cmd,
    worker_cmd.worker_cmd,
    workers_cmd.workers_cmd,
    top_cmd.top_cmd,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="ftqueue")


__all__ = ["cli", "main"]
