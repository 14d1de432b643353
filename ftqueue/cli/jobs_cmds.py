"""`ftqueue list` and `ftqueue status`: read jobs from the results database."""

from __future__ import annotations

import click

from ftqueue import db, store
from ftqueue.cli.app import cli, console, echo_json, json_option
from ftqueue.cli.render import job_details, jobs_table
from ftqueue.models import JOB_KINDS, JOB_STATUSES


@cli.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(JOB_STATUSES),
    help="Only jobs in this status (repeatable).",
)
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(JOB_KINDS), help="evaluate or lora."
)
@click.option("--sweep", help="Only jobs of this sweep id.")
@click.option(
    "--tag", "tags", multiple=True, help="Only jobs with this tag (repeatable: all must match)."
)
@click.option("--model", help="Only jobs on this model.")
@click.option("--dataset", help="Only jobs on this dataset.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="No limit.")
@json_option
def list_cmd(
    statuses: tuple[str, ...],
    kinds: tuple[str, ...],
    sweep: str | None,
    tags: tuple[str, ...],
    model: str | None,
    dataset: str | None,
    limit: int,
    show_all: bool,
    as_json: bool,
) -> None:
    """List jobs, newest first.

    \b
    Examples:
      ftqueue list
      ftqueue list --status running --status queued
      ftqueue list --sweep 7f3a9c --json
    """
    db.ensure_ready()
    with db.session_scope() as session:
        jobs = store.list_jobs(
            session,
            statuses=statuses,
            kinds=kinds,
            sweep=sweep,
            tags=tags,
            model=model,
            dataset=dataset,
            limit=None if show_all else limit,
        )
        if as_json:
            echo_json([store.job_summary(job) for job in jobs])
            return
        if not jobs:
            click.echo("No jobs match. Submit one with `ftqueue submit lora --help`.")
            return
        console().print(jobs_table(jobs))


@cli.command("status")
@click.argument("job_id", type=int)
@json_option
def status_cmd(job_id: int, as_json: bool) -> None:
    """Show where one job is: status, progress, attempts, error.

    \b
    Examples:
      ftqueue status 12
      ftqueue status 12 --json | jq .status
    """
    db.ensure_ready()
    with db.session_scope() as session:
        job = store.get_job(session, job_id)
        if as_json:
            echo_json(store.job_summary(job))
            return
        console().print(job_details(job))
