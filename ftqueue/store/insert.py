"""Submitting jobs in SQL: queued rows, their tags and first events, as multi-row INSERTs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, text
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from ftqueue.core.states import JobStatus
from ftqueue.specs import config_hash
from ftqueue.store.schema import Job, JobEvent, JobTag, UTCDateTime, utcnow


@dataclass(frozen=True)
class NewJob:
    """What `submit` asks for: one row to insert."""

    kind: str
    spec: dict[str, Any]
    spec_hash: str
    model: str
    dataset: str
    tags: Sequence[str] = ()
    name: str | None = None
    sweep_id: str | None = None
    output_dir: str | None = None
    trial: int | None = None


def new_task_id() -> str:
    return str(uuid.uuid4())


def create_jobs(
    session: Session,
    jobs: Iterable[NewJob],
    *,
    max_attempts: int,
    held_by: str | None = None,
    lease_seconds: int | None = None,
) -> list[Job]:
    """Insert queued rows (each with the Celery task id it will be published under).

    ``held_by`` (an eager process, which runs the jobs itself) holds them under a lease from
    the start, so that they are ended, not left queued, if it dies before running them.
    The rows go in as multi-row INSERTs in the caller's transaction (a 10,000-job grid took
    seconds through the unit of work).
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds or 0) if held_by else None
    wanted = list(jobs)
    rows: list[dict[str, Any]] = []
    for new in wanted:
        rows.append(
            {
                "kind": new.kind,
                "status": JobStatus.QUEUED.value,
                "spec": new.spec,
                "spec_hash": new.spec_hash,
                "config_hash": config_hash(new.spec),
                "model": new.model,
                "dataset": new.dataset,
                "sweep_id": new.sweep_id,
                "trial": new.trial,
                "name": new.name,
                "output_dir": new.output_dir,
                "attempts": 0,
                "max_attempts": max_attempts,
                "cancel_requested": False,
                "task_id": new_task_id(),
                "created_at": now,
                "queued_at": now,
                "worker": held_by,
                "lease_expires_at": lease,
            }
        )
    if not rows:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    id_of = _insert_unnest(session, rows) if postgres else _insert_many(session, rows)
    configure_mappers()  # what the constructor would have done on the first Job of a process
    created = [_detached_job(id_of[row["task_id"]], row) for row in rows]
    ids = [job.id for job in created]
    tag_rows = []
    for job, new in zip(created, wanted, strict=True):
        names = list(dict.fromkeys(new.tags))
        tag_rows += [{"job_id": job.id, "tag": t} for t in names]
        # Set as loaded: a constructor would fire events per tag that cost more than the INSERT.
        set_committed_value(job, "tags", [JobTag(job_id=job.id, tag=t) for t in names])
    events = {"status": JobStatus.QUEUED.value, "detail": "submitted", "at": now}
    if postgres:
        session.execute(
            text(
                "INSERT INTO job_events (job_id, status, attempt, detail, at) "
                "SELECT unnest(CAST(:ids AS integer[])), :status, 0, :detail, :at"
            ),
            {"ids": ids, **events},
        )
        if tag_rows:
            session.execute(
                text(
                    "INSERT INTO job_tags (job_id, tag) SELECT * FROM "
                    "unnest(CAST(:ids AS integer[]), CAST(:tags AS varchar[]))"
                ),
                {"ids": [t["job_id"] for t in tag_rows], "tags": [t["tag"] for t in tag_rows]},
            )
    else:
        events_table, tags_table = (cast(Table, m.__table__) for m in (JobEvent, JobTag))
        session.execute(insert(events_table), [{"job_id": i, "attempt": 0, **events} for i in ids])
        if tag_rows:
            session.execute(insert(tags_table), tag_rows)
    return created


def _insert_many(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert job rows as multi-row INSERTs; returns each row's id by its task id.

    SQLAlchemy pages them within the backend's parameter limits; rows come back in no
    promised order (asking for one costs SQLite a statement per row), so each id is matched
    to its row by the row's unique task id.
    """
    table = cast(Table, Job.__table__)
    returning = insert(table).returning(table.c.task_id, table.c.id)
    return {task_id: job_id for task_id, job_id in session.execute(returning, rows)}


#: The columns of new job rows that differ from row to row, sent as one array each ...
_VARYING = ("kind", "spec", "spec_hash", "config_hash", "model", "dataset", "sweep_id", "trial",
            "name", "output_dir", "task_id")  # fmt: skip
#: The array type of each varying column that is not text.
_ARRAY_TYPES = {"spec": "json", "trial": "integer"}
#: ... and those every row of one submit shares, sent once.
_SAME = ("status", "attempts", "max_attempts", "cancel_requested", "created_at", "queued_at",
         "worker", "lease_expires_at")  # fmt: skip


def _insert_unnest(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """The same on PostgreSQL, as one INSERT ... SELECT FROM unnest(arrays): a short statement.

    A multi-row VALUES list of 10,000 rows has 180,000 placeholders, which psycopg parses in
    Python page by page (3 s of a 10,000-job submit); ten arrays are ten parameters.
    """
    first = rows[0]
    for c in _SAME:
        assert all(row[c] == first[c] for row in rows), c
    params: dict[str, Any] = {c: first[c] for c in _SAME}
    params.update({c: [row[c] for row in rows] for c in _VARYING})
    params["spec"] = [json.dumps(spec) for spec in params["spec"]]
    arrays = ", ".join(f"CAST(:{c} AS {_ARRAY_TYPES.get(c, 'varchar')}[])" for c in _VARYING)
    constants = ", ".join(f":{c}" for c in _SAME)
    statement = text(
        f"INSERT INTO jobs ({', '.join(_VARYING + _SAME)}) "
        f"SELECT u.*, {constants} FROM unnest({arrays}) AS u RETURNING task_id, id"
    ).bindparams(
        # As the ORM would bind them: timezone-aware UTC timestamps.
        bindparam("created_at", type_=UTCDateTime()),
        bindparam("queued_at", type_=UTCDateTime()),
        bindparam("lease_expires_at", type_=UTCDateTime()),
    )
    return {task_id: job_id for task_id, job_id in session.execute(statement, params)}


def _detached_job(job_id: int, row: dict[str, Any]) -> Job:
    """A Job holding what was just inserted, outside any session.

    Built without the ORM's attribute events: through the constructor they cost more than
    the INSERT itself for a 10,000-job grid.
    """
    job: Job = manager_of_class(Job).new_instance()
    job.__dict__.update(row, id=job_id)
    return job
