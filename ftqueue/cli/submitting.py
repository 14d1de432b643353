"""Submitting from the command line: queue specs, print them, follow them to their end.

Every `submit` command builds its specs and hands them here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click

from ftqueue.cli.common import console, echo_json
from ftqueue.core import gcpause
from ftqueue.core.text import literal, printable
from ftqueue.specs import JobSpec

if TYPE_CHECKING:
    from rich.console import Console

    from ftqueue.api import Submission
    from ftqueue.store.schema import Job


def submit_specs(
    specs: Iterable[JobSpec],
    *,
    tags: tuple[str, ...],
    name: str | None,
    sweep: str | None,
    force: bool,
    wait: bool,
    as_json: bool,
    output_dir: str | None = None,
    gpu_class: str | None = None,
    priority: str = "normal",
    strict: bool = False,
) -> None:
    """Queue the specs, print what happened, and follow the jobs when asked (or when eager).

    Exits with the jobs' exit code (0 succeeded, 1 failed, 3 cancelled) when it followed them.
    """
    from ftqueue import api
    from ftqueue.settings import get_settings

    out = console()
    # The eager jobs run below, in a thread this process follows with a progress display.
    sub = api.submit(
        specs,
        tags=tags,
        name=name,
        sweep=sweep,
        force=force,
        output_dir=output_dir,
        run=False,
        gpu_class=gpu_class,
        priority=priority,
        strict=strict,
    )
    eager = get_settings().eager
    for note in sub.notes:
        click.echo(f"note: {printable(note)}", err=True)
    # Eager jobs wait for no worker.
    idle = (
        []
        if eager or not sub.created
        else api.idle_queues((j.kind for j in sub.created), gpu_class=sub.created[0].gpu_class)
    )
    if as_json and not (wait or eager):
        warn_idle(idle)
        echo_json(_payload(sub))
        return
    if not as_json:
        _print_submission(out, sub, eager=eager)
    warn_idle(idle)
    # With --json, progress goes nowhere: stdout is for the JSON document alone.
    progress_out = console(quiet=True) if as_json else out
    statuses: dict[int, str] = {}
    if (eager and sub.created) or (wait and sub.to_follow):
        # `ftqueue submit` pauses the garbage collector while it builds, writes and prints
        # the jobs; following them, or running them here, may take hours.
        gcpause.resume()
    if eager and sub.created:
        statuses = _run_eager(sub, progress_out)
    elif wait and sub.to_follow:
        statuses = _wait(sub.to_follow, progress_out)
    if as_json:
        echo_json(_payload(sub, statuses))
    elif statuses:
        from ftqueue.cli.follow import summary_table

        out.print(summary_table(sorted(statuses)))
    if statuses or (wait and sub.duplicates):
        from ftqueue.cli.follow import exit_code

        everything = list(statuses.values()) + [
            d.status for d in sub.duplicates if d.job_id not in statuses
        ]
        raise SystemExit(exit_code(everything))


def warn_idle(queues: list[str]) -> None:
    """One line for each queue that jobs were just queued to and no live worker consumes."""
    from ftqueue.cli.follow import idle_queue_line

    for queue in queues:
        click.echo(idle_queue_line(queue), err=True)


def _wait(job_ids: list[int], out: Console) -> dict[int, str]:
    from ftqueue.cli.follow import follow

    try:
        return follow(job_ids, console=out)
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped following; the jobs go on. `ftqueue status {job_ids[0]} --follow` "
            "picks them up again.",
            err=True,
        )
        raise SystemExit(130) from None


class _Stopping(Exception):
    """Raised in the main thread when this process is told to stop (SIGHUP, SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopping_signals() -> Iterator[None]:
    """SIGHUP (terminal closed) and SIGTERM raise _Stopping instead of killing silently."""

    def handler(signum: int, _frame: object) -> None:
        raise _Stopping(signum)

    wanted = (signal.SIGHUP, signal.SIGTERM)
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_eager(signum: int) -> None:
    """End this process's eager jobs at once, say so if anyone can hear, exit 128 + signal."""
    from ftqueue import api

    name = signal.Signals(signum).name
    ended = api.end_eager(reason=f"the eager `ftqueue submit` running it received {name}")
    with contextlib.suppress(OSError, ValueError):  # the terminal may be gone (SIGHUP)
        click.echo(f"\n{name}: ended job(s) {', '.join(map(str, ended)) or 'none'}", err=True)
        sys.stderr.flush()
    # The job thread may be inside a step: leave without waiting for it (its writes are fenced).
    os._exit(128 + signum)


def _run_eager(sub: Submission, out: Console) -> dict[int, str]:
    return run_eager_jobs(sub.created, out)


def run_eager_jobs(jobs: list[Job], out: Console) -> dict[int, str]:
    """Run jobs in a thread of this process and follow them from this one.

    Ctrl-C cancels them (they stop at their next step); SIGHUP and SIGTERM end them at once,
    so that none is left running with no process behind it.
    """
    from ftqueue import api
    from ftqueue.cli.follow import follow

    errors: list[BaseException] = []

    def target() -> None:
        try:
            api.run_eager(jobs)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, name="eager-jobs", daemon=True)
    ids = [job.id for job in jobs]
    try:
        with _stopping_signals():
            runner.start()
            try:
                follow(ids, console=out, keep_going=runner.is_alive)
            except KeyboardInterrupt:
                api.cancel(ids)
                click.echo("\nCancelling: the running job stops at its next step.", err=True)
            runner.join()
    except _Stopping as stop:
        _stop_eager(stop.signum)
    if errors:
        raise errors[0]
    # Read once more after the runner ended: the follower may have stopped just before the
    # last job recorded its end.
    return {jid: s.status for jid, s in api.states(ids).items()}


def _payload(sub: Submission, statuses: dict[int, str] | None = None) -> dict[str, Any]:
    from ftqueue import api

    statuses = statuses or {}
    return {
        "sweep_id": sub.sweep_id,
        "notes": sub.notes,
        "jobs": [
            {**summary, "status": statuses.get(summary["id"], summary["status"])}
            for summary in api.describe(sub.created)
        ],
        "duplicates": [
            {
                "job_id": d.job_id,
                "status": statuses.get(d.job_id, d.status),
                "spec_hash": d.spec.spec_hash(),
                "detail": d.detail,
            }
            for d in sub.duplicates
        ],
    }


#: Rows of a submission's table; a line under it counts the rest.
SHOWN = 50


def _same(d: Any) -> str:
    return f"identical to job {d.job_id} ({d.status})"


def _print_submission(out: Console, sub: Submission, *, eager: bool) -> None:

    for d in sub.duplicates:
        if d.detail:  # said on its own line too: the table may show only its first rows
            out.print(
                literal(
                    f"job {d.job_id}'s settings were {d.detail}: not run again (--force runs it)"
                )
            )
    if not sub.created and len(sub.duplicates) == 1 and sub.duplicates[0].detail:
        return
    specs = [(job.id, job.spec, "queued") for job in sub.created]
    specs += [
        (
            d.job_id,
            d.spec.to_dict(),
            f"{d.detail or f'identical to job {d.job_id} ({d.status})'}, not re-run",
        )
        for d in sub.duplicates
    ]
    if len(specs) == 1 and not sub.duplicates:
        job = sub.created[0]
        where = "running it in this process (FTQUEUE_EAGER=1)" if eager else "queued"
        # After commit: a hostile model or file name must print, not crash the command.
        out.print(literal(f"job {job.id} ({job.kind} {job.model} on {job.dataset}): {where}"))
        return
    varying = _varying([spec for _, spec, _ in specs])
    title = literal(f"sweep {sub.sweep_id}") if sub.sweep_id else None
    # A 10,000-job sweep is not read in a terminal: its first rows say what was queued.
    out.print(submission_table(specs[:SHOWN], varying, title=title))
    if len(specs) > SHOWN:
        out.print(
            literal(
                f"the first {SHOWN} of {len(specs):,} jobs; all of them: "
                f"ftqueue list --sweep {sub.sweep_id} --all"
            ),
            soft_wrap=True,
        )


def submission_table(
    specs: list[tuple[int, dict[str, Any], str]], varying: list[str], *, title: Any = None
) -> Any:
    """The jobs a submission made (or found done): id, the settings that vary, state."""
    from ftqueue.core.tables import Column, FitTable

    columns = [
        Column("job", justify="right"),
        # Spec keys and values are user text: literal; lists break after their commas.
        *(Column(literal(key), wrap=True) for key in varying),
        Column("state", wrap=True, min_width=12),
    ]
    rows = [
        [str(jid), *[literal(_fmt(spec.get(k))) for k in varying], literal(state)]
        for jid, spec, state in specs
    ]
    return FitTable(columns, rows, title=title, header_style="bold")


def _varying(specs: list[dict[str, Any]]) -> list[str]:
    from ftqueue.specs.base import varying_keys

    keys = [k for k in specs[0] if k != "data"] if specs else []
    return varying_keys(specs, skip=("data",)) or keys[:1]


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
