"""`ftqueue db`: create and upgrade the results schema."""

from __future__ import annotations

import click

from ftqueue.cli.common import echo_json, json_option


@click.group("db")
def db_group() -> None:
    """Create, upgrade and inspect the results database schema (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def upgrade(revision: str) -> None:
    """Create or upgrade the tables; safe to run any number of times.

    \b
    Example:
      ftqueue db upgrade
      FTQUEUE_DATABASE_URL=postgresql+psycopg://postgres@db/ftqueue ftqueue db upgrade
    """
    from ftqueue import api

    where = api.db_url()
    before, after = api.db_upgrade(revision=revision)
    if before == after:
        click.echo(f"{where} is already at revision {after}.")
    else:
        click.echo(f"{where} upgraded from {before or 'empty'} to {after}.")


# A relative revision (-1) looks like an option to click: let it through as the argument.
@db_group.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask before a downgrade that drops every table.")
def downgrade(revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION (`base` drops every table and its data).

    A downgrade below the first revision says how many jobs and results it would drop and
    asks first; `--yes` skips the question (for scripts).

    \b
    Examples:
      ftqueue db downgrade -1
      ftqueue db downgrade base --yes
    """
    if revision.startswith("--"):
        # Unknown options pass as arguments here so that `-1` can; a flag is still a mistake.
        raise click.NoSuchOption(revision, ctx=click.get_current_context())
    from ftqueue import api

    where = api.db_url()
    loss = api.db_downgrade_loss(revision=revision)
    if loss is not None:
        jobs, results = loss
        what = f"drops every table of {where}: {jobs} jobs and {results} results"
        if yes:
            click.echo(f"Downgrading to {revision} {what}.")
        else:
            click.confirm(f"Downgrading to {revision} {what} would be lost. Continue?", abort=True)
    now = api.db_downgrade(revision=revision)
    click.echo(f"{where} is now at revision {now or 'base'}.")


@db_group.command("current")
@json_option
def current(as_json: bool) -> None:
    """Show the database URL and its schema revision.

    \b
    Example:
      ftqueue db current --json
    """
    from ftqueue import api

    schema = api.db_current()
    if as_json:
        echo_json(schema)
        return
    rev, head = schema["revision"], schema["head"]
    state = "up to date" if rev == head else "run `ftqueue db upgrade`"
    click.echo(f"{schema['url']}: revision {rev or 'none'} (head {head}, {state})")
