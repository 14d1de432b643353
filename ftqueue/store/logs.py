"""Attempts' log lines and tracebacks: batches appended by the attempt, read by anyone."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select

from ftqueue.store.db import session_scope
from ftqueue.store.schema import AttemptLog, utcnow

LOG = "log"
TRACEBACK = "traceback"


def append(job_id: int, attempt: int, seq: int, text: str) -> None:
    """Store batch ``seq`` of an attempt's log lines."""
    with session_scope(write=True) as session:
        session.add(
            AttemptLog(job_id=job_id, attempt=attempt, stream=LOG, seq=seq, text=text, at=utcnow())
        )


def drop_through(job_id: int, attempt: int, seq: int) -> None:
    """Delete an attempt's log batches up to and including ``seq`` (the log's bound)."""
    with session_scope(write=True) as session:
        session.execute(
            delete(AttemptLog).where(
                AttemptLog.job_id == job_id,
                AttemptLog.attempt == attempt,
                AttemptLog.stream == LOG,
                AttemptLog.seq <= seq,
            )
        )


def record_traceback(job_id: int, attempt: int, text: str) -> None:
    """Keep a failed attempt's traceback (one per attempt; a second replaces the first)."""
    with session_scope(write=True) as session:
        row = session.get(AttemptLog, (job_id, attempt, TRACEBACK, 0))
        if row is None:
            session.add(
                AttemptLog(
                    job_id=job_id, attempt=attempt, stream=TRACEBACK, seq=0, text=text, at=utcnow()
                )
            )
        else:
            row.text, row.at = text, utcnow()


@dataclass
class AttemptLogs:
    """What is stored of one attempt's log after batch ``after``."""

    attempt: int
    #: Batches of lines, each ending with a newline.
    batches: list[str] = field(default_factory=list)
    #: The last batch read: the next read starts after it.
    last_seq: int = 0
    #: Batches dropped from the start to keep the bound (0: the log is whole).
    dropped: int = 0
    traceback: str | None = None


def latest_attempt(job_id: int) -> int | None:
    """The highest attempt with anything stored, or None."""
    with session_scope() as session:
        return session.scalar(
            select(func.max(AttemptLog.attempt)).where(AttemptLog.job_id == job_id)
        )


def read(job_id: int, attempt: int, *, after: int = 0) -> AttemptLogs:
    """An attempt's log batches after ``after``, in order, and its traceback if it has one."""
    with session_scope() as session:
        rows = session.execute(
            select(AttemptLog.stream, AttemptLog.seq, AttemptLog.text)
            .where(AttemptLog.job_id == job_id, AttemptLog.attempt == attempt)
            .where((AttemptLog.stream == TRACEBACK) | (AttemptLog.seq > after))
            .order_by(AttemptLog.stream, AttemptLog.seq)
        ).all()
    out = AttemptLogs(attempt=attempt, last_seq=after)
    for stream, seq, text in rows:
        if stream == TRACEBACK:
            out.traceback = text
            continue
        if not out.batches and after == 0 and seq > 1:
            out.dropped = seq - 1
        out.batches.append(text)
        out.last_seq = seq
    return out


def tracebacks(job_id: int) -> dict[int, str]:
    """A job's stored tracebacks, by attempt."""
    with session_scope() as session:
        rows = session.execute(
            select(AttemptLog.attempt, AttemptLog.text).where(
                AttemptLog.job_id == job_id, AttemptLog.stream == TRACEBACK
            )
        ).all()
    return {attempt: text for attempt, text in rows}
