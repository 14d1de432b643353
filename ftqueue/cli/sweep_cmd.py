"""`ftqueue sweep FILE`: start a search from a sweep file, and follow it when asked."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.core.text import literal, printable


@click.command("sweep")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the sweep until its last trial ends; exit 0 when every trial succeeded or "
    "was pruned, 1 when one failed, 3 when cancelled.",
)
@json_option
def sweep_cmd(file: Path, wait: bool, as_json: bool) -> None:
    """Start a sweep: grid, random, Optuna (TPE) or Sobol search, with early stopping (ASHA).

    FILE is YAML (or TOML) naming the model, the dataset, fixed settings, the searched
    space, the method, a budget and the early-stopping rungs; README's "Sweeps" section
    describes every key. It is checked before anything is queued. Workers then make each
    next trial as a slot frees up: the sweep goes on when this command exits.

    \b
    Examples:
      ftqueue sweep examples/sweep.yaml --wait
      ftqueue report --sweep demo-sweep              # trials, pruned ones, time saved
      ftqueue cancel --sweep demo-sweep              # no more trials; running ones stop
    """
    from ftqueue import api
    from ftqueue.settings import get_settings

    started = api.start_sweep(file=file)
    plan = started.plan
    for note in started.notes:
        click.echo(f"note: {printable(note)}", err=True)
    out = console(quiet=as_json)
    stopping = (
        f"ASHA eta={plan.eta} at epochs {','.join(map(str, plan.rungs))}"
        if plan.eta
        else "no early stopping"
    )
    if not as_json:
        out.print(
            literal(
                f"sweep {started.sweep_id}: {plan.method} search, {plan.max_jobs} trials at most, "
                f"{plan.max_parallel} at a time, {stopping}; trials "
                f"{', '.join(str(j.id) for j in started.created)} queued"
            )
        )
    if not get_settings().eager and started.created:
        from ftqueue.cli.submitting import warn_idle

        warn_idle(api.idle_queues(job.kind for job in started.created))
    if get_settings().eager:
        _run_eager(started.sweep_id, out)
    elif wait:
        _follow(started.sweep_id, out)
    else:
        if as_json:
            echo_json(
                {"sweep_id": started.sweep_id, "jobs": api.sweep_jobs(sweep_id=started.sweep_id)}
            )
        return
    statuses = api.sweep_jobs(sweep_id=started.sweep_id)
    if as_json:
        echo_json({"sweep_id": started.sweep_id, "jobs": statuses})
    else:
        from ftqueue.cli.follow import summary_table

        out.print(summary_table(sorted(statuses)))
        out.print(literal(f"`ftqueue report --sweep {started.sweep_id}` compares the trials."))
    from ftqueue.cli.follow import exit_code

    raise SystemExit(exit_code(list(statuses.values())))


def _run_eager(sweep_id: str, out: object) -> None:
    """Run the trials in this process, each next one made as the one before ends."""
    from ftqueue import api
    from ftqueue.cli.submitting import run_eager_jobs

    while True:
        jobs = api.sweep_trials_to_run(sweep_id=sweep_id)
        if not jobs:
            return
        run_eager_jobs(jobs, out)  # type: ignore[arg-type]


def _follow(sweep_id: str, out: object) -> None:
    """Follow the pending trials, batch after batch, until the sweep has nothing left."""
    from ftqueue import api
    from ftqueue.cli.follow import follow
    from ftqueue.core.states import JobStatus

    try:
        while not api.sweep_finished(sweep_id=sweep_id):
            statuses = api.sweep_jobs(sweep_id=sweep_id)
            pending = [j for j, s in statuses.items() if JobStatus(s).pending]
            if pending:
                follow(pending, console=out)  # type: ignore[arg-type]
            else:
                time.sleep(1.0)  # a worker is making the next trials
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped following; the sweep goes on. `ftqueue report --sweep "
            f"{printable(sweep_id)}` shows it; `ftqueue cancel --sweep` stops it.",
            err=True,
        )
        raise SystemExit(130) from None
