"""`ftqueue logs JOB`: an attempt's log lines and traceback, from any machine."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from ftqueue.cli.common import JOB_ID, MAX_ID
from ftqueue.core.text import printable

if TYPE_CHECKING:
    from ftqueue.api import LogPage

#: Seconds between two reads while following.
POLL_SECONDS = 1.0


@click.command("logs")
@click.argument("job_id", type=JOB_ID, metavar="JOB")
@click.option(
    "--attempt",
    type=click.IntRange(1, MAX_ID),
    help="The attempt to print, from 1 [default: the latest].",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def logs_cmd(job_id: int, attempt: int | None, follow: bool) -> None:
    """Print a job's log lines and, for a failed attempt, its traceback.

    Every attempt keeps the last 2 MB of its log in the results database, secrets redacted,
    so this works on any machine that reaches the database, whichever worker ran the job.

    \b
    Examples:
      ftqueue logs 12
      ftqueue logs 12 --attempt 1
      ftqueue logs 12 --follow
    """
    from ftqueue import api

    page = api.logs_of(job_id, attempt=attempt)
    shown, printed = page.attempt, _print(page)
    while follow and page.live:
        time.sleep(POLL_SECONDS)
        if attempt is None and page.attempts != shown:
            # Re-queued and started again: follow the new attempt from its start.
            _print_traceback(page, printed)
            page = api.logs_of(job_id)
            shown = page.attempt
            click.echo(f"--- attempt {shown} ---", err=True)
            printed = _print(page)
        else:
            page = api.logs_of(job_id, attempt=shown, after=page.next_after)
            printed += _print(page)
            if not page.live:
                # The attempt stores its last lines just after it records the job's end.
                time.sleep(POLL_SECONDS)
                page = api.logs_of(job_id, attempt=shown, after=page.next_after)
                printed += _print(page)
    if page.attempt is None:
        click.echo(f"job {job_id} has not started yet: nothing logged.", err=True)
        return
    _print_traceback(page, printed)
    if not printed and not page.traceback:
        # Silence would read as a broken command; say what was found.
        click.echo(f"job {job_id} attempt {page.attempt} stored no log lines.", err=True)


def _print(page: LogPage) -> str:
    """Print a page's lines; returns them."""
    if page.dropped:
        click.echo(
            f"(the start of attempt {page.attempt} was dropped: each attempt keeps its last 2 MB)",
            err=True,
        )
    # Stored lines are what a job printed: no control sequence of theirs reaches the terminal.
    click.echo(printable(page.text), nl=False)
    return page.text


def _print_traceback(page: LogPage, printed: str) -> None:
    # An unexpected error's traceback is already in the log; an expected one's is not.
    if page.traceback and page.traceback.strip() not in printed:
        click.echo(printable(page.traceback), nl=not page.traceback.endswith("\n"))
