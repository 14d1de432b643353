"""`ftqueue sweep FILE`: start a search from a sweep file; follow, extend or resume one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.core.text import literal, printable


@click.command("sweep")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the sweep until its last trial ends; exit 0 when every trial succeeded or "
    "was pruned, 1 when one failed, 3 when cancelled.",
)
@click.option(
    "--follow",
    "follow_id",
    metavar="NAME",
    help="Follow an existing sweep until it ends, with the exit codes of --wait; Ctrl-C stops "
    "following, not the sweep.",
)
@click.option(
    "--extend",
    "extend_id",
    metavar="NAME",
    help="Add --trials N trials to an existing sweep, from its method and space (an Optuna "
    "sweep goes on in the same study).",
)
@click.option(
    "--trials", type=click.IntRange(1, 10_000), metavar="N", help="How many trials --extend adds."
)
@click.option(
    "--resume",
    "resume_id",
    metavar="NAME",
    help="Continue a cancelled, broken or interrupted sweep: the trials that did not run are "
    "queued again, then its free slots are filled as before.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse a sweep file's gpu_class that no live worker serves, before anything is "
    "written, instead of queuing its trials with a warning.",
)
@json_option
def sweep_cmd(
    file: Path | None,
    wait: bool,
    follow_id: str | None,
    extend_id: str | None,
    trials: int | None,
    resume_id: str | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Start a sweep: grid, random, Optuna (TPE) or Sobol search, with early stopping (ASHA).

    FILE is YAML (or TOML) naming the model, the dataset, fixed settings, the searched
    space, the method, a budget and the early-stopping rungs; the docs' sweeps guide
    describes every key. It is checked before anything is queued. Workers then make each
    next trial as a slot frees up: the sweep goes on when this command exits.
    --follow, --extend and --resume take the name of a sweep already started instead.

    \b
    Examples:
      ftqueue sweep examples/sweep.yaml --wait
      ftqueue sweep --follow demo-sweep              # progress until it ends
      ftqueue sweep --extend demo-sweep --trials 8   # 8 more trials, the same study
      ftqueue cancel --sweep demo-sweep              # no more trials; running ones stop
      ftqueue sweep --resume demo-sweep              # run what the cancel left
      ftqueue report --sweep demo-sweep              # trials, pruned ones, time saved
    """
    from ftqueue import api

    given = [x for x in (file, follow_id, extend_id, resume_id) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give a sweep FILE, or one of --follow, --extend or --resume NAME")
    if (trials is None) != (extend_id is None):
        raise click.UsageError("--extend NAME and --trials N go together: N is how many to add")
    out = console(quiet=as_json)
    if follow_id is not None:
        state = api.sweep_state(sweep_id=follow_id)
        if not as_json:
            out.print(literal(f"sweep {follow_id}: {state}"))
        _follow(follow_id, out)
        _finish(follow_id, out, as_json)
    if extend_id is not None or resume_id is not None:
        if extend_id is not None:
            assert trials is not None
            done = api.extend_sweep(sweep_id=extend_id, trials=trials)
            what = f"{trials} trials added"
        else:
            assert resume_id is not None
            done = api.resume_sweep(sweep_id=resume_id)
            what = f"resumed, {len(done.requeued)} trials queued again"
        if not as_json:
            made = ", ".join(str(j.id) for j in done.jobs) or "none yet"
            out.print(literal(f"sweep {done.sweep_id}: {what}; jobs {made} queued"))
        _go_on(done.sweep_id, done.jobs, out, wait=wait, as_json=as_json)
        return
    assert file is not None
    started = api.start_sweep(file=file, strict=strict)
    plan = started.plan
    for note in started.notes:
        click.echo(f"note: {printable(note)}", err=True)
    stopping = plan.stopping
    if not as_json:
        out.print(
            literal(
                f"sweep {started.sweep_id}: {plan.method} search, {plan.max_jobs} trials at most, "
                f"{plan.max_parallel} at a time, {stopping}, by validation {plan.metric} "
                f"({plan.goal}); trials "
                f"{', '.join(str(j.id) for j in started.created)} queued"
            )
        )
    _go_on(started.sweep_id, started.created, out, wait=wait, as_json=as_json)


def _go_on(sweep_id: str, created: list[Any], out: Any, *, wait: bool, as_json: bool) -> None:
    """After trials were queued: run them here (eager), follow them (--wait), or return."""
    from ftqueue import api
    from ftqueue.settings import get_settings

    if not get_settings().eager and created:
        from ftqueue.cli.submitting import warn_idle

        warn_idle(api.idle_queues((job.kind for job in created), gpu_class=created[0].gpu_class))
    if get_settings().eager:
        _run_eager(sweep_id, out)
    elif wait:
        _follow(sweep_id, out)
    else:
        if as_json:
            echo_json({"sweep_id": sweep_id, "jobs": api.sweep_jobs(sweep_id=sweep_id)})
        return
    _finish(sweep_id, out, as_json)


def _finish(sweep_id: str, out: Any, as_json: bool) -> None:
    """The trials' table (or JSON) and the exit code of --wait."""
    from ftqueue import api
    from ftqueue.cli.follow import exit_code

    statuses = api.sweep_jobs(sweep_id=sweep_id)
    if as_json:
        echo_json(
            {"sweep_id": sweep_id, "state": api.sweep_state(sweep_id=sweep_id), "jobs": statuses}
        )
    else:
        from ftqueue.cli.follow import summary_table

        out.print(summary_table(sorted(statuses)))
        out.print(literal(f"sweep {sweep_id}: {api.sweep_state(sweep_id=sweep_id)}"))
        out.print(literal(f"`ftqueue report --sweep {sweep_id}` compares the trials."))
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
            elif api.sweep_state(sweep_id=sweep_id) == "interrupted":
                return  # its eager process died: nothing will make the next trials
            else:
                time.sleep(1.0)  # a worker is making the next trials
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped following; the sweep goes on. `ftqueue report --sweep "
            f"{printable(sweep_id)}` shows it; `ftqueue cancel --sweep` stops it.",
            err=True,
        )
        raise SystemExit(130) from None
