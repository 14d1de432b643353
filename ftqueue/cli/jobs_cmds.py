"""`ftqueue list`, `status` and `cancel`: read and change jobs in the results database."""

from __future__ import annotations

import click

from ftqueue import kinds
from ftqueue.cli.common import COUNT, JOB_ID, console, echo_json, json_option
from ftqueue.cli.render import job_details, jobs_table
from ftqueue.core.states import STATUSES, JobStatus
from ftqueue.core.text import printable


@click.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Only jobs in this status (repeatable).",
)
@click.option(
    "--kind",
    "job_kinds",
    multiple=True,
    type=click.Choice(kinds.names()),
    help="Only jobs of this kind (repeatable).",
)
@click.option("--sweep", help="Only jobs of this sweep id.")
@click.option(
    "--tag", "tags", multiple=True, help="Only jobs with this tag (repeatable: all must match)."
)
@click.option("--model", help="Only jobs on this model.")
@click.option("--dataset", help="Only jobs on this dataset.")
@click.option("--user", help="Only jobs this user submitted (FTQUEUE_USER, or their login name).")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@click.option(
    "--before", type=JOB_ID, help="Only jobs older than this job id: the next page of a list."
)
@click.option("--all", "show_all", is_flag=True, help="No limit.")
@json_option
def list_cmd(
    statuses: tuple[str, ...],
    job_kinds: tuple[str, ...],
    sweep: str | None,
    tags: tuple[str, ...],
    model: str | None,
    dataset: str | None,
    user: str | None,
    limit: int,
    before: int | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """List jobs, newest first, a page at a time.

    \b
    Examples:
      ftqueue list
      ftqueue list --status running --status queued
      ftqueue list --sweep 7f3a9c --json
      ftqueue list --user alice --status running
      ftqueue list --before 950      # the page after one that ended at job 950
    """
    from ftqueue import api

    jobs = api.jobs(
        statuses=statuses,
        kinds=job_kinds,
        sweep=sweep,
        tags=tags,
        model=model,
        dataset=dataset,
        limit=None if show_all else limit,
        before=before,
        user=user,
    )
    if as_json:
        echo_json(jobs)
        return
    if not jobs:
        click.echo("No jobs match. Submit one with `ftqueue submit lora --help`.")
        return
    out = console()
    out.print(jobs_table(jobs, width=out.width))
    if not show_all and len(jobs) == limit:
        click.echo(f"older jobs: the same command with --before {jobs[-1]['id']}")


@click.command("status")
@click.argument("job_id", type=JOB_ID)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Follow the job with a progress bar until it ends; exit 0 succeeded, "
    "1 failed, 3 cancelled.",
)
@json_option
def status_cmd(job_id: int, follow: bool, as_json: bool) -> None:
    """Show where one job is: status, progress, attempts, error.

    \b
    Examples:
      ftqueue status 12
      ftqueue status 12 --follow
      ftqueue status 12 --json | jq .status
    """
    from ftqueue import api

    if as_json and not follow:
        echo_json(api.job(job_id))
        return
    if not follow:
        console().print(job_details(api.job(job_id, detail=True)))
        return
    from ftqueue.cli.follow import exit_code
    from ftqueue.cli.follow import follow as follow_jobs

    api.states(job_id)  # no such job: say so before following
    out = console()
    try:
        statuses = follow_jobs([job_id], console=out)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if as_json:
        echo_json(api.job(job_id))
    else:
        out.print(job_details(api.job(job_id, detail=True)))
    raise SystemExit(exit_code(list(statuses.values())))


@click.command("cancel")
@click.argument("job_ids", type=JOB_ID, nargs=-1)
@click.option("--sweep", help="Cancel every unfinished job of this sweep.")
@json_option
def cancel_cmd(job_ids: tuple[int, ...], sweep: str | None, as_json: bool) -> None:
    """Cancel jobs: a queued job never starts; a running one stops at its next step.

    \b
    Examples:
      ftqueue cancel 12 13
      ftqueue cancel --sweep 7f3a9c
    """
    from ftqueue import api

    if not job_ids and not sweep:
        raise click.UsageError("give job ids, or --sweep S")
    if sweep and api.stop_sweep(sweep_id=sweep):
        click.echo(f"sweep {printable(sweep)}: stopped; it makes no more trials", err=as_json)
    outcomes = api.cancel(job_ids, sweep=sweep)
    if sweep and not outcomes and not as_json:
        click.echo(f"sweep {printable(sweep)}: it had no trials to cancel")
    if as_json:
        echo_json([{"id": o.job_id, "before": o.before, "after": o.after} for o in outcomes])
        return
    for o in outcomes:
        if o.before == JobStatus.QUEUED:
            click.echo(f"job {o.job_id}: cancelled (it had not started)")
        elif o.before == JobStatus.RUNNING:
            click.echo(f"job {o.job_id}: cancel requested; it stops at its next step")
        else:
            click.echo(f"job {o.job_id}: already {o.before}, left as it is")
