"""What every command shares: the root group's error handling, output helpers, --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ftqueue.core.text import clip, printable, quote
from ftqueue.errors import FtqueueError, PublishInterrupted

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: No error message is longer than this, whatever user data went into it.
MESSAGE_LIMIT = 1000
#: Counts fit a signed 64-bit SQL integer; larger numbers are refused as input.
COUNT = click.IntRange(1, 2**63 - 1)
#: Job ids and attempts are INTEGER columns, 32 bits on PostgreSQL: a larger number is refused
#: as input rather than sent to the server, which fails the query.
MAX_ID = 2**31 - 1
#: Most job ids the shell is offered on a tab.
COMPLETIONS = 200


def complete_jobs(incomplete: str, *, runs_only: bool = False) -> list[Any]:
    """Job ids starting with ``incomplete``, newest first, with kind, status, model and data
    as their help; only succeeded training runs (those with an adapter) with ``runs_only``.

    Completion must never break the shell: any error (no database yet) offers nothing.
    """
    from click.shell_completion import CompletionItem

    try:
        from ftqueue import api
        from ftqueue.core.text import display_name

        return [
            CompletionItem(
                str(job["id"]),
                # The shell prints this help beside the id: user text, so made printable.
                help=printable(
                    f"{job['kind']} {job['status']}: {display_name(job['model'])} on "
                    f"{display_name(job['dataset'])}"
                ),
            )
            for job in api.completions(runs_only=runs_only, limit=COMPLETIONS)
            if str(job["id"]).startswith(incomplete)
        ]
    except Exception:
        return []


class JobId(click.IntRange):
    """A job id (1 up to the SQL integer limit) that the shell completes from the database."""

    def __init__(self, *, runs_only: bool = False) -> None:
        super().__init__(1, 2**63 - 1)
        self.runs_only = runs_only

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # click's own message repeats the whole value: a pasted page would be the error.
        if isinstance(value, str) and len(value) > 40:
            self.fail(f"{quote(value, 40)} is not a job id: give a number such as 12", param, ctx)
        job_id = super().convert(value, param, ctx)
        if job_id > MAX_ID:
            self.fail(f"no job {job_id}: job ids go up to {MAX_ID}", param, ctx)
        return job_id

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[Any]:
        return complete_jobs(incomplete, runs_only=self.runs_only)


JOB_ID = JobId()
#: A job whose adapter a command uses: succeeded training runs are offered.
ADAPTER_JOB = JobId(runs_only=True)


class UserError(click.ClickException):
    """A one-line error with the exit code of the FtqueueError behind it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


def _with_synonym(exc: click.NoSuchOption) -> click.UsageError:
    """A flag another tool spells differently (``--learning_rate``, ``--lora-r``) gets the
    command's own spelling, ahead of click's guesses from spelling alone (``--lr``)."""
    from ftqueue.specs.aliases import own_flag

    known = {o for p in exc.ctx.command.params for o in p.opts} if exc.ctx else set()
    typed = exc.option_name.split("=", 1)[0]
    ours = own_flag(typed, known)
    if ours is None:
        return exc
    return click.UsageError(f"no such option {typed}; ftqueue calls it {ours}", ctx=exc.ctx)


def one_line_usage(exc: click.UsageError) -> click.UsageError:
    """Click's usage error without its usage block: ``Error: ... (see 'ftqueue x -h')``."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # a bare group prints its help: that is no error to shorten
    if isinstance(exc, click.NoSuchOption):
        exc = _with_synonym(exc)
    where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
    return click.UsageError(printable(clip(exc.format_message(), MESSAGE_LIMIT)) + where)


class FtqueueGroup(click.Group):
    """Every error of every command as one line on stderr and a non-zero exit: FtqueueError
    with its exit code, usage errors (bad flags and values) with 2, never a usage block."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PublishInterrupted as exc:  # committed rows to tell of, not just "Aborted!"
            click.echo(f"\n{printable(exc.message)}", err=True)
            raise SystemExit(130) from None
        except FtqueueError as exc:
            raise UserError(printable(clip(exc.message, MESSAGE_LIMIT)), exc.exit_code) from None
        except click.UsageError as exc:
            raise one_line_usage(exc) from None
        except click.ClickException as exc:
            # Messages quote what the user typed or named: no control sequence reaches stderr.
            raise UserError(printable(exc.format_message()), exc.exit_code) from None


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
