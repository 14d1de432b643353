"""Rich renderings of jobs for the terminal."""

from __future__ import annotations

from typing import Any

from ftqueue.models import Job, utcnow
from ftqueue.states import JobStatus
from ftqueue.store import published
from ftqueue.text import age, duration

STATUS_STYLE: dict[str, str] = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "magenta",
    JobStatus.PRUNED: "blue",
}


def elapsed(job: Job) -> float | None:
    if job.started_at is None:
        return None
    end = job.finished_at or utcnow()
    return (end - job.started_at).total_seconds()


def progress_text(job: Job) -> str:
    if job.status != JobStatus.RUNNING or not job.progress_total:
        return ""
    pct = 100.0 * (job.progress_step or 0) / job.progress_total
    loss = f" loss {job.progress_loss:.3f}" if job.progress_loss is not None else ""
    epoch = f"ep {job.progress_epoch} " if job.progress_epoch else ""
    return f"{epoch}{pct:.0f}%{loss}"


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def jobs_table(jobs: list[Job], *, title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for name in ("id", "kind", "status", "model", "dataset", "sweep", "tags", "try", "progress"):
        table.add_column(name, justify="right" if name in ("id", "try") else "left")
    table.add_column("time", justify="right")
    table.add_column("created", justify="right")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.kind,
            status_text(job.status),
            job.model,
            job.dataset,
            job.sweep_id or "",
            ",".join(job.tag_names),
            f"{job.attempts}/{job.max_attempts}",
            progress_text(job),
            duration(elapsed(job)),
            age(job.created_at),
        )
    return table


def job_details(job: Job) -> Any:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("job", f"{job.id} ({job.kind})"),
        ("status", status_text(job.status)),
        ("model", job.model),
        ("dataset", job.dataset),
    ]
    if job.name:
        rows.append(("name", job.name))
    if job.sweep_id:
        trial = f" (trial {job.trial})" if job.trial is not None else ""
        rows.append(("sweep", f"{job.sweep_id}{trial}"))
    if job.selected_epoch is not None:
        pruned = (job.stats or {}).get("pruned_at")
        why = f"pruned at epoch {pruned}; " if pruned else ""
        rows.append(("selected epoch", f"{job.selected_epoch} ({why}its adapter is kept)"))
    if job.tags:
        rows.append(("tags", ", ".join(job.tag_names)))
    rows.append(("attempts", f"{job.attempts} of {job.max_attempts}"))
    if job.worker:
        rows.append(("worker", job.worker))
    if job.status == JobStatus.RUNNING:
        rows.append(("progress", progress_text(job) or (job.progress_phase or "starting")))
    if job.cancel_requested and job.status == JobStatus.RUNNING:
        rows.append(("cancel", "requested; stops at its next step"))
    rows.append(("created", f"{job.created_at:%Y-%m-%d %H:%M:%S} UTC ({age(job.created_at)})"))
    if job.started_at:
        rows.append(("run time", duration(elapsed(job))))
    if job.samples_per_second:
        rows.append(("speed", f"{job.samples_per_second:,.0f} samples/s"))
    if job.error_message:
        rows.append(("error", f"[red]{job.error_type}: {job.error_message}[/]"))
    label, paths = published(job)
    rows += [(label, path) for path in paths]
    for key, value in rows:
        table.add_row(key, value)
    return table
