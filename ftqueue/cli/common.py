"""What every command shares: the root group's error handling, output helpers, --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ftqueue.errors import FtqueueError

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


def console(*, quiet: bool = False) -> Console:
    from rich.console import Console

    if quiet:
        return Console(quiet=True)
    if sys.stdout.isatty():
        return Console()
    # Piped output is read by people later (logs, CI) or by grep: do not squeeze it to 80.
    return Console(width=int(os.environ.get("COLUMNS") or 160))
