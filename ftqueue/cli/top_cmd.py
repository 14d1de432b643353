"""`ftqueue top`: workers, running jobs, queues and recent failures, redrawn every second."""

from __future__ import annotations

import time
from typing import Any

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.cli.render import (
    PLAIN,
    Job,
    beat_text,
    lost_text,
    plain_box,
    progress_text,
    when,
)
from ftqueue.cli.workers_cmd import workers_table
from ftqueue.core.tables import Column, FitTable
from ftqueue.core.text import age, clip, duration, literal

#: A snapshot as ``api.top`` gives it (and `--json` prints it).
Snapshot = dict[str, Any]


def _header(snap: Snapshot) -> str:
    live = sum(w["state"] == "live" for w in snap["workers"])
    queued = sum(q["queued"] for q in snap["queues"])
    at = when(snap["at"])
    clock = f"{at:%H:%M:%S} UTC" if at else ""
    return (
        f"[bold]ftqueue top[/]  {clock}  workers [bold]{live}[/] live"
        f"  running [bold]{len(snap['running'])}[/]  queued [bold]{queued}[/]"
    )


def _table(
    title: str,
    columns: list[Column],
    rows: list[list[Any]],
    width: int | None = None,
    row_styles: list[str | None] | None = None,
) -> Any:
    return FitTable(
        columns,
        rows,
        title=title,
        width=width,
        row_styles=row_styles,
        one_line=True,
        title_style="bold",
        box=plain_box(),
        show_edge=False,
        **PLAIN,
    )


def running_table(jobs: list[Job], *, width: int | None = None) -> Any:
    """Running jobs: worker, progress, heartbeat age (or lost?), run time."""
    rows = []
    for job in jobs:
        lost = lost_text(job)
        rows.append(
            [
                str(job["id"]),
                job["kind"],
                literal(job["worker"] or ""),
                f"[red]{lost}[/]" if lost else progress_text(job) or job["progress"]["phase"] or "",
                "" if lost else beat_text(job),
                "" if lost or not job["started_at"] else duration(_run_seconds(job)),
            ]
        )
    columns = [
        Column("job", justify="right"),
        Column("kind"),
        # The worker column is the one that can go: its name is in the workers table.
        Column("worker", priority=1, wrap=True),
        Column("progress", wrap=True),
        Column("beat", justify="right"),
        Column("time", justify="right"),
    ]
    return _table("running", columns, rows, width)


def _run_seconds(job: Job) -> float:
    from ftqueue.cli.render import utcnow

    started = when(job["started_at"])
    return (utcnow() - started).total_seconds() if started else 0.0


def queues_table(snap: Snapshot) -> Any:
    """Each queue's depth and its live consumers; a queue jobs wait in with none is red."""
    columns = [
        Column("queue", wrap=True),
        Column("queued", justify="right"),
        Column("live workers", justify="right"),
    ]
    rows = [[literal(q["name"]), str(q["queued"]), str(q["live_workers"])] for q in snap["queues"]]
    styles = ["red" if q["queued"] and not q["live_workers"] else None for q in snap["queues"]]
    return _table("queues", columns, rows, row_styles=styles)


def failures_table(jobs: list[Job], *, width: int | None = None) -> Any:
    """The newest failed jobs, one line each: the error is cut, between words, to the room
    there is."""
    rows = [
        [
            str(job["id"]),
            job["kind"],
            age(when(job["finished_at"])),
            literal(clip(f"{job['error_type'] or 'error'}: {job['error_message'] or ''}")),
        ]
        for job in jobs
    ]
    columns = [
        Column("job", justify="right"),
        Column("kind"),
        Column("ended"),
        Column("error", wrap=True, max_lines=1, min_width=20),
    ]
    return _table("recent failures", columns, rows, width)


def frame(snap: Snapshot, *, width: int | None = None) -> Any:
    """One screen of `ftqueue top`, as wide as the console (or ``width``)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [_header(snap), Text("")]
    if snap["workers"]:
        parts += [
            Text("workers", style="bold"),
            workers_table(snap["workers"], width=width, edge=False),
        ]
    else:
        parts.append("no workers have registered: start one with `ftqueue worker`")
    if snap["running"]:
        parts += [Text(""), running_table(snap["running"], width=width)]
    else:
        parts += [Text(""), "no job is running"]
    parts += [Text(""), queues_table(snap)]
    if snap["failures"]:
        parts += [Text(""), failures_table(snap["failures"], width=width)]
    return Group(*parts)


@click.command("top")
@click.option("--once", is_flag=True, help="Print one frame and exit, for scripts.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between frames.",
)
@json_option
def top_cmd(once: bool, interval: float, as_json: bool) -> None:
    """Watch the fleet: workers, running jobs with progress and heartbeat age, queue depths,
    recent failures; redrawn every second until Ctrl-C (piped: one frame, as --once).

    \b
    Examples:
      ftqueue top
      ftqueue top --once                 # one frame, for scripts and logs
      ftqueue top --json | jq '.queues'  # one snapshot as JSON
    """
    from ftqueue import api

    if as_json:
        echo_json(api.top())
        return
    out = console()
    if once or not out.is_terminal:
        out.print(frame(api.top(), width=out.width))
        return
    from rich.live import Live

    try:
        with Live(console=out, screen=False, auto_refresh=False) as live:
            while True:
                live.update(frame(api.top(), width=out.width), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return
