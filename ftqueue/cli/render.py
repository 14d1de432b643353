"""Rich renderings of jobs for the terminal, from their JSON form (``api.job``, ``api.jobs``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ftqueue import kinds
from ftqueue.core.states import JobStatus
from ftqueue.core.tables import KEEP, Column, FitTable
from ftqueue.core.text import age, display_names, duration, literal

#: A job as ``api.job`` and ``api.jobs`` give it (and `--json` prints it).
Job = dict[str, Any]

STATUS_STYLE: dict[str, str] = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "magenta",
    JobStatus.PRUNED: "blue",
}


def dataset_name_of(spec: Any) -> str | None:
    """The --dataset-name a job's spec was given, if any."""
    data = spec.get("data") if isinstance(spec, dict) else None
    name = data.get("dataset_name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def when(value: str | None) -> dt.datetime | None:
    """A time of a job's JSON form (ISO 8601) as a datetime."""
    return dt.datetime.fromisoformat(value) if value is not None else None


def elapsed(job: Job) -> float | None:
    started = when(job["started_at"])
    if started is None:
        return None
    end = when(job["finished_at"]) or utcnow()
    return (end - started).total_seconds()


def progress_text(job: Job) -> str:
    p = job["progress"]
    if job["status"] != JobStatus.RUNNING or not p["total"]:
        return ""
    pct = 100.0 * (p["step"] or 0) / p["total"]
    loss = f" loss {p['loss']:.3f}" if p["loss"] is not None else ""
    epoch = f"ep {p['epoch']} " if p["epoch"] else ""
    return f"{epoch}{pct:.0f}%{loss}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def workers_text(count: int) -> str:
    return "no live worker" if not count else f"{count} live worker{'s' if count > 1 else ''}"


def worker_command(gpu_class: str | None) -> str:
    """The command that starts a worker for a queue of this GPU class (None: shared)."""
    return f"ftqueue worker --class {gpu_class}" if gpu_class else "ftqueue worker"


def queue_text(job: Job, *, short: bool = False) -> str:
    """A queued job's place in its queue and who consumes it; empty for other jobs."""
    q = job.get("queue")
    if not q:
        return ""
    place = f"{ordinal(q['position'])} of {q['depth']}" if q["position"] else f"{q['depth']} queued"
    if short:
        # A class queue is named: the kind column says only which shared queue it would be.
        where = f" in {q['name']}" if job.get("gpu_class") else ""
        return f"{place}{where}, {workers_text(q['live_workers'])}"
    count = q["live_workers"]
    if not count:
        who = f"no live worker consumes it: start one with `{worker_command(job.get('gpu_class'))}`"
    else:
        who = f"{workers_text(count)} consume{'s' if count == 1 else ''} it"
    return f"{q['name']}: {place} queued; {who}"


def lost_text(job: Job) -> str:
    """``lost? last heartbeat 2m10s ago`` for a running job whose lease lapsed; else empty."""
    if job["status"] != JobStatus.RUNNING or not job.get("lost"):
        return ""
    return f"lost? last heartbeat {duration(job.get('heartbeat_age'))} ago"


def beat_text(job: Job) -> str:
    """A running job's heartbeat age (``3.2s``); empty for other jobs."""
    if job["status"] != JobStatus.RUNNING or job.get("heartbeat_age") is None:
        return ""
    return duration(job["heartbeat_age"])


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


#: Hidden in this order (lowest first) while the table is wider than the terminal: the least
#: needed first. id, kind, status, model and dataset always stay.
_PRIORITY = {"age": 1, "try": 2, "sweep": 3, "tags": 4, "beat": 5, "time": 6, "progress": 7}
#: Free text: broken at separators (commas, spaces, slashes) when the room is short.
_WRAP = ("model", "dataset", "tags", "progress", "sweep")
#: The look of the list-like tables: right padding only, with the box's blank separator, so
#: two spaces between columns.
PLAIN: dict[str, Any] = {"header_style": "bold", "padding": (0, 1, 0, 0), "pad_edge": False}


def plain_box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD


def jobs_table(jobs: list[Job], *, width: int | None = None, title: str | None = None) -> Any:
    """One line per job where the terminal allows: no column is squeezed into ``succ…``.

    Columns no job fills are left out and local paths show by their name. When the table is
    wider than the terminal (or ``width``) the least needed columns go (see _PRIORITY), and
    then only the free-text columns wrap, at separators.
    """
    given = {j["dataset"]: name for j in jobs if (name := dataset_name_of(j["spec"]))}
    names = display_names([*(j["model"] for j in jobs), *(j["dataset"] for j in jobs)], given)
    now = utcnow()
    rows = [
        {
            "id": str(job["id"]),
            "kind": job["kind"],
            "status": status_text(job["status"]),
            "model": literal(names[job["model"]]),
            "dataset": literal(names[job["dataset"]]),
            "sweep": literal(job["sweep_id"] or ""),
            "tags": literal(",".join(job["tags"])),
            "try": f"{job['attempts']}/{job['max_attempts']}",
            "progress": lost_text(job) or progress_text(job) or queue_text(job, short=True),
            # A lost job's run time would only grow: its last heartbeat says more.
            "beat": "" if lost_text(job) else beat_text(job),
            "time": "" if lost_text(job) else duration(elapsed(job)),
            "age": duration((now - _created(job)).total_seconds()),
        }
        for job in jobs
    ]
    columns = (
        [
            c
            for c in rows[0]
            if c in ("id", "kind", "status", "model", "dataset") or any(r[c] for r in rows)
        ]
        if rows
        else []
    )
    return FitTable(
        [
            Column(
                name,
                priority=_PRIORITY.get(name, KEEP),
                justify="right" if name in ("id", "try", "beat", "time", "age") else "left",
                wrap=name in _WRAP,
            )
            for name in columns
        ],
        [[row[c] for c in columns] for row in rows],
        title=title,
        width=width,
        one_line=True,
        box=plain_box(),
        **PLAIN,
    )


def _created(job: Job) -> dt.datetime:
    created = when(job["created_at"])
    assert created is not None, "every job has a creation time"
    return created


def published(job: Job) -> tuple[str, list[str]]:
    """What a job published, as its kind names it, and the paths to show."""
    kind = kinds.get(job["kind"])
    return (kind.output_label if kind is not None else "output"), job["output_files"]


def job_details(job: Job) -> Any:
    """One job's key facts; ``job`` is its detailed JSON form (``api.job(id, detail=True)``)."""
    # User data (names, paths, tags, errors) goes in as literal Text; the rest is markup.
    rows: list[tuple[str, Any]] = [
        ("job", f"{job['id']} ({job['kind']})"),
        ("status", status_text(job["status"])),
        ("model", literal(job["model"])),
        ("dataset", literal(job["dataset"])),
    ]
    if job["name"]:
        rows.append(("name", literal(job["name"])))
    if job["sweep_id"]:
        trial = f" (trial {job['trial']})" if job["trial"] is not None else ""
        rows.append(("sweep", literal(f"{job['sweep_id']}{trial}")))
    if job["selected_epoch"] is not None:
        pruned = (job["stats"] or {}).get("pruned_at")
        why = f"pruned at epoch {pruned}; " if pruned else ""
        rows.append(("selected epoch", f"{job['selected_epoch']} ({why}its adapter is kept)"))
    if job["tags"]:
        rows.append(("tags", literal(", ".join(job["tags"]))))
    if job.get("user"):
        rows.append(("user", literal(job["user"])))
    # Where it may run and how soon: said only when not every worker, or not in turn.
    if job.get("gpu_class"):
        rows.append(("GPU class", literal(f"{job['gpu_class']} (its workers only)")))
    if job.get("priority") not in (None, "normal"):
        rows.append(("priority", job["priority"]))
    rows.append(("attempts", f"{job['attempts']} of {job['max_attempts']}"))
    if job["worker"]:
        rows.append(("worker", literal(job["worker"])))
    if job.get("queue"):
        rows.append(("queue", literal(queue_text(job))))
    if job["status"] == JobStatus.RUNNING:
        phase = job["progress"]["phase"]
        rows.append(("progress", progress_text(job) or (phase or "starting")))
        if lost_text(job):
            rows.append(("heartbeat", f"[red]{lost_text(job)}[/]"))
        elif beat_text(job):
            rows.append(("heartbeat", f"{beat_text(job)} ago"))
    if job["cancel_requested"] and job["status"] == JobStatus.RUNNING:
        rows.append(("cancel", "requested; stops at its next step"))
    created = _created(job)
    rows.append(("created", f"{created:%Y-%m-%d %H:%M:%S} UTC ({age(created)})"))
    if job["started_at"] and not lost_text(job):
        rows.append(("run time", duration(elapsed(job))))
    if job["samples_per_second"]:
        rows.append(("speed", f"{job['samples_per_second']:,.0f} samples/s"))
    if job["error_message"]:
        rows.append(("error", literal(f"{job['error_type']}: {job['error_message']}", "red")))
    label, paths = published(job)
    rows += [(label, literal(path)) for path in paths]
    if "://" in (job.get("output_path") or ""):
        # On an object store: stock tools (peft, pandas) load a local copy.
        rows.append(("fetch", f"ftqueue fetch {job['id']} DIR, then load DIR"))
    return key_values(rows, show_header=False, box=None, pad_edge=False)


def key_values(rows: list[tuple[str, Any]], *, title: Any = None, **options: Any) -> Any:
    """A two-column table of names and values; the values wrap at separators."""
    return FitTable(
        [Column("", style="bold"), Column("", wrap=True)],
        [list(row) for row in rows],
        title=title,
        **options,
    )
