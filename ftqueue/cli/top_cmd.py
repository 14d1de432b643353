"""`ftqueue top`: workers, running jobs, queues and recent failures, redrawn every second."""

from __future__ import annotations

import time
from typing import Any

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.cli.render import (
    Job,
    beat_text,
    lost_text,
    natural_width,
    progress_text,
    when,
)
from ftqueue.cli.workers_cmd import workers_table
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


def _table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
    )
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    return table


def running_table(jobs: list[Job], *, width: int | None = None) -> Any:
    """Running jobs: worker, progress, heartbeat age (or lost?), run time."""
    columns = ["job", "kind", "worker", "progress", "beat", "time"]
    right = ("job", "beat", "time")
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
    table = _table("running", columns, right)
    for row in rows:
        table.add_row(*row)
    if width is not None and natural_width(table) > width:
        # The worker column is the one that can go: its name is in the workers table.
        table = _table("running", [c for c in columns if c != "worker"], right)
        for row in rows:
            table.add_row(*(row[:2] + row[3:]))
    return table


def _run_seconds(job: Job) -> float:
    from ftqueue.cli.render import utcnow

    started = when(job["started_at"])
    return (utcnow() - started).total_seconds() if started else 0.0


def queues_table(snap: Snapshot) -> Any:
    """Each queue's depth and its live consumers; a queue jobs wait in with none is red."""
    table = _table("queues", ["queue", "queued", "live workers"], ("queued", "live workers"))
    for q in snap["queues"]:
        stuck = q["queued"] and not q["live_workers"]
        table.add_row(
            literal(q["name"]),
            str(q["queued"]),
            str(q["live_workers"]),
            style="red" if stuck else None,
        )
    return table


def failures_table(jobs: list[Job], *, width: int) -> Any:
    """The newest failed jobs, one line each: the error is cut to the room there is."""
    rows = [
        [
            str(job["id"]),
            job["kind"],
            age(when(job["finished_at"])),
            clip(f"{job['error_type'] or 'error'}: {job['error_message'] or ''}"),
        ]
        for job in jobs
    ]
    table = _table("recent failures", ["job", "kind", "ended", "error"], ("job",))
    fixed = [
        max(len(name), *(len(row[i]) for row in rows))
        for i, name in enumerate(("job", "kind", "ended"))
    ]
    for column, size in zip(table.columns[:3], fixed, strict=True):
        column.no_wrap = True
        column.min_width = size
    # Two spaces after each column but the last; the error gets what is left, on one line.
    room = max(10, width - sum(fixed) - 6)
    for row in rows:
        error = row[3] if len(row[3]) <= room else row[3][: room - 1] + "…"
        table.add_row(*row[:3], literal(error))
    return table


def frame(snap: Snapshot, *, width: int) -> Any:
    """One screen of `ftqueue top`."""
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
