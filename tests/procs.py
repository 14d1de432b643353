"""Real worker processes for integration tests: started with `ftqueue worker`, killed for real.

The worker and subprocess helpers are the pytest plugin's (ftqueue/testing); the rest reads
the test's database.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from sqlalchemy import func, select

from ftqueue import db
from ftqueue.models import Job
from ftqueue.states import TERMINAL
from ftqueue.testing.workers import WorkerProcess, child_env, wait_for

__all__ = [
    "WorkerProcess",
    "all_terminal",
    "child_env",
    "count_jobs",
    "statuses",
    "submit_command",
    "wait_for",
]


def statuses(job_ids: Iterable[int]) -> dict[int, str]:
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(list(job_ids))))
        return dict(rows.all())  # type: ignore[arg-type]


def all_terminal(job_ids: Iterable[int]) -> bool:
    ids = list(job_ids)
    found = statuses(ids)
    return len(found) == len(ids) and all(s in TERMINAL for s in found.values())


def count_jobs(**filters: object) -> int:
    with db.session_scope() as session:
        query = select(func.count()).select_from(Job)
        for key, value in filters.items():
            query = query.where(getattr(Job, key) == value)
        return int(session.scalar(query) or 0)


def submit_command(model: str, *extra: str) -> list[str]:
    """`ftqueue submit lora --json` on movie-snippets, as a subprocess command line."""
    return [sys.executable, "-m", "ftqueue", "submit", "lora", "--model", model,
            "--dataset", "movie-snippets", "--json", *extra]  # fmt: skip
