"""Submitting jobs in SQL: queued rows, their tags and first events, as multi-row INSERTs."""

from __future__ import annotations

import datetime as dt
import json
import operator
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from ftqueue.core.states import JobStatus
from ftqueue.specs import config_hash
from ftqueue.store.schema import Job, JobTag, UTCDateTime, utcnow


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
    #: The spec's configuration hash, when the caller has made it already.
    config_hash: str | None = None
    #: The GPU class it must run on (None: any worker).
    gpu_class: str | None = None
    #: Its Celery priority level (core/states.py PRIORITY_LEVELS; 3 is normal).
    priority: int = 3
    #: Who submitted it.
    submitted_by: str | None = None
    #: ``spec`` as the JSON text to store, when the caller has made it already.
    spec_text: str | None = None


def new_task_id() -> str:
    return str(uuid.uuid4())


def new_task_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, what ``str(uuid.uuid4())`` gives, at a
    third of its cost: one read of the random source for all of them."""
    raw = os.urandom(16 * count).hex()
    out = []
    for i in range(0, 32 * count, 32):
        h = raw[i : i + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return out


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
    if not wanted:
        return []
    # What every row of one submit shares, sent once (_SAME); each row holds what differs.
    same: dict[str, Any] = {
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "cancel_requested": False,
        "created_at": now,
        "queued_at": now,
        "worker": held_by,
        "lease_expires_at": lease,
    }
    rows: list[dict[str, Any]] = []
    task_ids = new_task_ids(len(wanted))
    for new, task_id in zip(wanted, task_ids, strict=True):
        rows.append(
            {
                "kind": new.kind,
                "spec": new.spec,
                "spec_hash": new.spec_hash,
                "config_hash": new.config_hash or config_hash(new.spec),
                "model": new.model,
                "dataset": new.dataset,
                "sweep_id": new.sweep_id,
                "trial": new.trial,
                "name": new.name,
                "output_dir": new.output_dir,
                "task_id": task_id,
                "gpu_class": new.gpu_class,
                "priority": new.priority,
                "submitted_by": new.submitted_by,
            }
        )
    postgres = session.get_bind().dialect.name == "postgresql"
    insert_rows = _insert_json if postgres else _insert_sqlite
    texts = [json.dumps(new.spec) if new.spec_text is None else new.spec_text for new in wanted]
    id_of = insert_rows(session, rows, texts, same)
    configure_mappers()  # what the constructor would have done on the first Job of a process
    created = []
    tag_rows = []
    for row, new in zip(rows, wanted, strict=True):
        job_id = id_of[row["task_id"]]
        names = list(dict.fromkeys(new.tags))
        tag_rows += [{"job_id": job_id, "tag": t} for t in names]
        tags = [JobTag(job_id=job_id, tag=t) for t in names]
        created.append(_detached_job(job_id, same, row, tags))
    ids = [job.id for job in created]
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
        # One JSON array each, as for the jobs (see _insert_json_each).
        session.execute(
            text(
                "INSERT INTO job_events (job_id, status, attempt, detail, at) "
                "SELECT value, :status, 0, :detail, :at FROM json_each(:ids)"
            ).bindparams(bindparam("at", type_=UTCDateTime())),
            {"ids": json.dumps(ids), **events},
        )
        if tag_rows:
            session.execute(
                text(
                    "INSERT INTO job_tags (job_id, tag) "
                    "SELECT value ->> 0, value ->> 1 FROM json_each(:rows)"
                ),
                {"rows": json.dumps([[t["job_id"], t["tag"]] for t in tag_rows])},
            )
    return created


def _insert_sqlite(
    session: Session, rows: list[dict[str, Any]], texts: list[str], same: dict[str, Any]
) -> dict[str, int]:
    """Insert job rows on SQLite with the driver's ``executemany`` of one prepared INSERT.

    Returns each row's id by its task id. The write transaction holds SQLite's only write
    lock, so the rows inserted here are exactly those above the largest id before them;
    each id is matched to its row by the row's unique task id. SQLAlchemy's multi-row VALUES
    paged 10,000 rows into 30 statements and bound 19 values a row in Python (0.7 s), and
    one ``INSERT ... SELECT FROM json_each`` of a JSON array took twice the time of this
    (the array encoded, then each value of each row parsed out of it again). Each spec is
    stored as its own JSON text.
    """
    dialect = session.get_bind().dialect
    constants = []
    for c in _SAME:
        value = same[c]
        if c in _TIME_COLUMNS:
            value = _bind_time(value, dialect)
        constants.append(value)
    values = [(text, *_PICK(row), *constants) for row, text in zip(rows, texts, strict=True)]
    columns = _COLUMNS + _SAME
    connection = session.connection()
    before = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM jobs").scalar_one()
    connection.exec_driver_sql(
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        values,
    )
    found = connection.exec_driver_sql("SELECT task_id, id FROM jobs WHERE id > ?", (before,)).all()
    # Ours are all there (this transaction wrote them); as many rows means nobody else's.
    if len(found) != len(rows):
        raise RuntimeError("the jobs above the largest id are not only the rows written here")
    return {task_id: job_id for task_id, job_id in found}


def _bind_time(value: dt.datetime | None, dialect: Any) -> Any:
    """A timestamp as the ORM would bind it (UTCDateTime's processing, then the dialect's)."""
    process = UTCDateTime().bind_processor(dialect)
    return process(value) if process is not None else value


#: The columns of new job rows that differ from row to row, sent for each row: the spec's
#: JSON text first, then these values of the row ...
_VARYING = ("kind", "spec_hash", "config_hash", "model", "dataset", "sweep_id", "trial", "name",
            "output_dir", "task_id", "gpu_class", "priority", "submitted_by")  # fmt: skip
_COLUMNS = ("spec", *_VARYING)
#: A row's varying values as a tuple, in one C call.
_PICK = operator.itemgetter(*_VARYING)
#: The SQL type of each varying column that is not text.
_COLUMN_TYPES = {"spec": "jsonb", "trial": "integer", "priority": "integer"}
#: ... and those every row of one submit shares, sent once.
_SAME = ("status", "attempts", "max_attempts", "cancel_requested", "created_at", "queued_at",
         "worker", "lease_expires_at")  # fmt: skip


_TIME_COLUMNS = ("created_at", "queued_at", "lease_expires_at")
# As the ORM would bind them: timezone-aware UTC timestamps.
_TIMES = tuple(bindparam(c, type_=UTCDateTime()) for c in _TIME_COLUMNS)


def _insert_json(
    session: Session, rows: list[dict[str, Any]], texts: list[str], same: dict[str, Any]
) -> dict[str, int]:
    """The same on PostgreSQL, as one INSERT ... SELECT over the elements of one JSON array of
    rows: a short statement with one text parameter, encoded in C.

    A multi-row VALUES list of 10,000 rows has 180,000 placeholders, which psycopg parses in
    Python page by page (3 s of a 10,000-job submit). An array parameter per column
    (``unnest``) was one parameter each, but psycopg writes array literals in Python and
    escapes each string with a regular expression, the largest part of a PostgreSQL submit's
    CPU beyond SQLite's.
    """
    document = json.dumps([(text, *_PICK(row)) for row, text in zip(rows, texts, strict=True)])
    fields = ", ".join(
        f"CAST(e ->> {i} AS {_COLUMN_TYPES.get(c, 'varchar')})" for i, c in enumerate(_COLUMNS)
    )
    constants = ", ".join(f":{c}" for c in _SAME)
    statement = text(
        f"INSERT INTO jobs ({', '.join(_COLUMNS + _SAME)}) SELECT {fields}, {constants} "
        "FROM json_array_elements(CAST(:rows AS json)) AS e RETURNING task_id, id"
    ).bindparams(*_TIMES)
    params = {c: same[c] for c in _SAME} | {"rows": document}
    return {task_id: job_id for task_id, job_id in session.execute(statement, params)}


def _detached_job(
    job_id: int, same: dict[str, Any], row: dict[str, Any], tags: list[JobTag]
) -> Job:
    """A Job holding what was just inserted, outside any session, its tags loaded.

    Built without the ORM's attribute events: through the constructor they cost more than
    the INSERT itself for a 10,000-job grid. The tags are set before the columns, while
    the instance holds nothing else: marking them loaded then costs a tenth as much.
    """
    job: Job = manager_of_class(Job).new_instance()
    set_committed_value(job, "tags", tags)
    job.__dict__.update(same)
    job.__dict__.update(row, id=job_id)
    return job
