"""The root command group, its error handling, and options shared by several commands."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ftqueue import __version__
from ftqueue.errors import FtqueueError

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A one-line error with the exit code of the FtqueueError behind it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


class FtqueueGroup(click.Group):
    """Turns FtqueueError from any command into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FtqueueError as exc:
            raise UserError(exc.message, exc.exit_code) from None


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON instead of a table, for scripts."
    )(func)


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


def console(*, quiet: bool = False) -> Any:
    from rich.console import Console

    if quiet:
        return Console(quiet=True)
    if sys.stdout.isatty():
        return Console()
    # Piped output is read by people later (logs, CI) or by grep: do not squeeze it to 80.
    return Console(width=int(os.environ.get("COLUMNS") or 160))


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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

    Settings come from FTQUEUE_* environment variables (see README): FTQUEUE_DATABASE_URL,
    FTQUEUE_BROKER_URL, FTQUEUE_ARTIFACTS_DIR, FTQUEUE_EAGER=1 to run jobs in-process.
    """


def _register() -> None:
    # Command modules import this one for `cli`; importing them here, after `cli` exists,
    # avoids an import cycle.
    from ftqueue.cli import db_cmds, jobs_cmds, report_cmd, submit_cmd, worker_cmd  # noqa: F401


_register()


def main() -> None:
    cli(prog_name="ftqueue")
