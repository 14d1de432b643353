"""`ftqueue workers`: the worker processes the workers table knows, live ones first."""

from __future__ import annotations

from typing import Any

import click

from ftqueue.cli.common import console, echo_json, json_option
from ftqueue.cli.render import PLAIN, plain_box
from ftqueue.core.tables import KEEP, Column, FitTable
from ftqueue.core.text import duration, literal

#: A worker as ``api.workers`` gives it (and `--json` prints it).
Worker = dict[str, Any]

#: Hidden in this order (lowest first) while the table is wider than the terminal, the GPU's
#: name last (its index and memory stay in "gpu"); the rest always stay.
_PRIORITY = {"versions": 1, "pid": 2, "queues": 3, "up": 4, "gpu name": 5, "class": 6}
_WRAP = ("job", "queues", "versions", "worker")
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
                "gpu": literal(gpu_text(w, named=False)),
                "gpu name": literal(w["gpu_name"] or ""),
                "class": literal(w.get("gpu_class") or ""),
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
    """One line per worker; the least needed columns go while it is wider than the terminal
    (or ``width``), the GPU's name and class last (see _PRIORITY).

    ``edge=False`` leaves out the blank lines above and below, as a section of `top`.
    """
    rows = _rows(workers)
    optional = ("gpu name", "class")  # shown where some worker has one
    columns = [c for c in rows[0] if c not in optional or any(r[c] for r in rows)] if rows else []
    return FitTable(
        _columns(columns),
        [[row[c] for c in columns] for row in rows],
        width=width,
        one_line=True,
        box=plain_box(),
        show_edge=edge,
        **PLAIN,
    )


def _columns(names: list[str]) -> list[Column]:
    return [
        Column(
            name,
            priority=_PRIORITY.get(name, KEEP),
            justify="right" if name in _RIGHT else "left",
            wrap=name in _WRAP,
        )
        for name in names
    ]


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
