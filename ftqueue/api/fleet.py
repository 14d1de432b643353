"""The fleet: live workers, queue depths and who consumes them, running jobs' heartbeats.

``workers`` is `ftqueue workers`, ``top`` one frame of `ftqueue top`; ``annotate`` adds a
queued job's place in its queue and a running job's heartbeat age to its JSON form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ftqueue.core.states import JobStatus
from ftqueue.kinds import registry, rows
from ftqueue.queue import broker
from ftqueue.store import db, reads
from ftqueue.store import workers as worker_rows
from ftqueue.store.schema import utcnow


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(since: dt.datetime | None, now: dt.datetime) -> float | None:
    return round(max(0.0, (now - since).total_seconds()), 1) if since is not None else None


def queue_of(kind: str) -> str:
    """The queue a kind's jobs go to (a kind no longer registered: its own name)."""
    found = registry.get(kind)
    return found.queue if found is not None else kind


def queue_name(kind: str, gpu_class: str | None) -> str:
    """The queue a job of this kind and GPU class waits in: ``lora``, ``lora.a100``."""
    return broker.queue_of(queue_of(kind), gpu_class)


def _job_json(job: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    lease = job["lease_expires_at"]
    return {
        "id": job["id"],
        "kind": job["kind"],
        "progress": {
            "phase": job["progress_phase"],
            "epoch": job["progress_epoch"],
            "step": job["progress_step"],
            "total": job["progress_total"],
        },
        "started_at": _iso(job["started_at"]),
        "heartbeat_age": _seconds(job["heartbeat_at"], now),
        "lost": lease is not None and lease < now,
    }


def _worker_json(view: worker_rows.WorkerView, now: dt.datetime) -> dict[str, Any]:
    row = view.row
    job = view.job
    return {
        "name": row["name"],
        "state": "live" if view.live else "gone",
        "host": row["host"],
        "pid": row["pid"],
        "supervisor_pid": row["supervisor_pid"],
        "gpu": row["gpu"],
        "gpu_name": row["gpu_name"],
        "gpu_memory_mb": row["gpu_memory_mb"],
        "queues": list(row["queues"] or []),
        "gpu_class": row.get("gpu_class"),
        "versions": {
            "ftqueue": row["ftqueue_version"],
            "torch": row["torch_version"],
            "transformers": row["transformers_version"],
        },
        "job": None if job is None else _job_json(job, now),
        "started_at": _iso(row["started_at"]),
        "last_seen_at": _iso(row["last_seen_at"]),
        "seen_ago": _seconds(row["last_seen_at"], now),
        "refresh_seconds": row["refresh_seconds"],
    }


def workers() -> list[dict[str, Any]]:
    """Every worker the workers table knows, live ones first (`ftqueue workers --json`)."""
    db.ensure_ready()
    now = utcnow()
    return [_worker_json(view, now) for view in worker_rows.list_workers(now)]


def live_consumers(queues: Iterable[str]) -> dict[str, int]:
    """How many live workers consume each of the queues (0 where none)."""
    db.ensure_ready()
    return worker_rows.live_consumers(list(queues))


def idle_queues(kinds: Iterable[str], *, gpu_class: str | None = None) -> list[str]:
    """The queues of these kinds' jobs (of ``gpu_class``: that class's queues) that no live
    worker consumes, in the order given."""
    queues = list(dict.fromkeys(queue_name(kind, gpu_class) for kind in kinds))
    if not queues:
        return []
    counts = live_consumers(queues)
    return [queue for queue in queues if not counts.get(queue)]


def _depths() -> dict[str, int]:
    """Queued jobs by queue name (kinds that share a queue are added up)."""
    depths: dict[str, int] = {}
    for (kind, gpu_class), count in reads.queue_depths().items():
        name = queue_name(kind, gpu_class)
        depths[name] = depths.get(name, 0) + count
    return depths


def annotate(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``queue`` (a queued job's position, its queue's depth and live consumers) and
    ``heartbeat_age`` and ``lost`` (a running job's) to jobs' JSON forms, in place.

    A queue is a kind's jobs of one GPU class, or of none; the position counts higher
    priorities first (see ``reads.queue_positions``).
    """
    now = utcnow()
    queued = [job for job in jobs if job["status"] == JobStatus.QUEUED]
    positions: dict[int, int] = {}
    depths: dict[str, int] = {}
    consumers: dict[str, int] = {}
    if queued:
        positions = reads.queue_positions([job["id"] for job in queued])
        depths = _depths()
        names = {queue_name(j["kind"], j.get("gpu_class")) for j in queued}
        consumers = worker_rows.live_consumers(sorted(names | set(depths)))
    for job in jobs:
        job["queue"] = None
        job["heartbeat_age"] = None
        job["lost"] = False
        if job["status"] == JobStatus.QUEUED:
            name = queue_name(job["kind"], job.get("gpu_class"))
            job["queue"] = {
                "name": name,
                "position": positions.get(job["id"]),
                "depth": depths.get(name, 0),
                "live_workers": consumers.get(name, 0),
            }
        elif job["status"] == JobStatus.RUNNING:
            beat = job["heartbeat_at"]
            job["heartbeat_age"] = _seconds(dt.datetime.fromisoformat(beat), now) if beat else None
            lease = job.get("lease_expires_at")
            job["lost"] = lease is not None and dt.datetime.fromisoformat(lease) < now
    return jobs


#: Failed jobs in one frame of `ftqueue top`.
RECENT_FAILURES = 5


def top() -> dict[str, Any]:
    """One frame of `ftqueue top`: workers, running jobs, queue depths, recent failures."""
    db.ensure_ready()
    now = utcnow()
    fleet = [_worker_json(view, now) for view in worker_rows.list_workers(now)]
    with db.session_scope() as session:
        running = [rows.job_summary(j) for j in reads.list_jobs(session, statuses=["running"])]
        failed = [
            rows.job_summary(j)
            for j in reads.list_jobs(session, statuses=["failed"], limit=RECENT_FAILURES)
        ]
    depths = _depths()
    names = list(dict.fromkeys([*registry.queues(), *sorted(depths)]))
    consumers = worker_rows.live_consumers(names)
    return {
        "at": now.isoformat(),
        "workers": fleet,
        "running": annotate(running),
        "queues": [
            {"name": q, "queued": depths.get(q, 0), "live_workers": consumers.get(q, 0)}
            for q in names
        ],
        "failures": failed,
    }
