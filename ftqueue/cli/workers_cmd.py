"""`ftqueue workers`: the worker processes the workers table knows, live ones first."""

from __future__ import annotations

from typing import Any

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.cli.render import natural_width
from ftqueue.core.text import duration, literal

#: A worker as ``api.workers`` gives it (and `--json` prints it).
Worker = dict[str, Any]

#: Dropped in this order while the table is wider than the terminal (``gpu_name``: the GPU's
#: name, its index and memory stay); the rest always stay.
_DROP_FIRST = ("versions", "pid", "queues", "up", "gpu_name")
_RIGHT = ("seen", "up", "pid")


def gpu_text(worker: Worker, *, named: bool = True) -> str:
    """``0 NVIDIA H200 140G``, ``0`` where NVML told nothing, ``cpu`` without a GPU."""
    if worker["gpu"] is None:
        return "cpu"
    parts = [str(worker["gpu"])]
    if worker["gpu_name"] and named:
        parts.append(worker["gpu_name"])
    if worker["gpu_memory_mb"]:
        parts.append(f"{worker['gpu_memory_mb'] / 1024:.0f}G")
    return " ".join(parts)


def job_text(job: dict[str, Any] | None) -> str:
    """The job a worker runs: ``12 lora ep 1 23%``, or ``lost? last heartbeat 2m10s ago``."""
    if job is None:
        return ""
    head = f"{job['id']} {job['kind']}"
    if job["lost"]:
        return f"{head} [red]lost? last heartbeat {duration(job['heartbeat_age'])} ago[/]"
    p = job["progress"]
    if p["total"]:
        epoch = f"ep {p['epoch']} " if p["epoch"] else ""
        return f"{head} {epoch}{100 * (p['step'] or 0) / p['total']:.0f}%"
    return f"{head} {p['phase'] or 'starting'}"


def versions_text(worker: Worker) -> str:
    v = worker["versions"]
    return " ".join(
        f"{short} {v[name]}"
        for name, short in (("ftqueue", "ftqueue"), ("torch", "torch"), ("transformers", "tf"))
        if v[name]
    )


def _rows(workers: list[Worker]) -> list[dict[str, Any]]:
    from ftqueue.cli.render import utcnow, when

    now = utcnow()
    rows = []
    for w in workers:
        started = when(w["started_at"])
        state = "[green]live[/]" if w["state"] == "live" else "[red]gone[/]"
        pid = str(w["pid"]) + (f" ({w['supervisor_pid']})" if w["supervisor_pid"] else "")
        rows.append(
            {
                "worker": literal(w["name"]),
                "state": state,
                "gpu": literal(gpu_text(w)),
                "gpu_name": literal(gpu_text(w, named=False)),
                "job": job_text(w["job"]) or ("idle" if w["state"] == "live" else ""),  # markup
                "seen": f"{duration(w['seen_ago'])} ago",
                "up": duration((now - started).total_seconds()) if started else "",
                "pid": pid,
                "queues": literal(",".join(w["queues"])),
                "versions": literal(versions_text(w)),
            }
        )
    return rows


def workers_table(workers: list[Worker], *, width: int | None = None, edge: bool = True) -> Any:
    """One line per worker; the least needed columns go while it is wider than ``width``.

    ``edge=False`` leaves out the blank lines above and below, as a section of `top`.
    """
    rows = _rows(workers)
    columns = [c for c in rows[0] if c != "gpu_name"] if rows else []
    table = _table(rows, columns, edge)
    for name in _DROP_FIRST:
        if width is None or natural_width(table) <= width:
            break
        if name == "gpu_name":
            # The short form under the same header.
            rows = [{**row, "gpu": row["gpu_name"]} for row in rows]
        else:
            columns.remove(name)
        table = _table(rows, columns, edge)
    return table


def _table(rows: list[dict[str, Any]], columns: list[str], edge: bool) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=edge,
    )
    for name in columns:
        table.add_column(
            name,
            justify="right" if name in _RIGHT else "left",
            no_wrap=name not in ("job", "queues", "versions", "worker"),
            overflow="fold",
        )
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


@click.command("workers")
@json_option
def workers_cmd(as_json: bool) -> None:
    """List the worker processes: live ones first, their GPU, queues and the job each runs.

    A worker refreshes its row every FTQUEUE_WORKER_REFRESH seconds (5); one not seen for
    three intervals reads as gone, and its row is deleted a while later. The pid in brackets
    is the `ftqueue worker` that started it.

    \b
    Examples:
      ftqueue workers
      ftqueue workers --json | jq '.[] | select(.state == "live") | .name'
    """
    from ftqueue import api

    workers = api.workers()
    if as_json:
        echo_json(workers)
        return
    if not workers:
        click.echo("No workers have registered. Start one with `ftqueue worker`.")
        return
    out = console()
    out.print(workers_table(workers, width=out.width))
