"""What attempts leave behind for every machine to read: their log lines and tracebacks."""

from __future__ import annotations

from dataclasses import dataclass

from ftqueue.core.states import JobStatus
from ftqueue.errors import FilterError
from ftqueue.store import db, logs, reads


@dataclass(frozen=True)
class LogPage:
    """One attempt's log after a point, and where the job is now."""

    job_id: int
    #: The attempt read (None: the job has not started).
    attempt: int | None
    #: Its log lines after ``after``, in order (each batch ends with a newline).
    text: str
    #: Pass as ``after`` to read only what comes next.
    next_after: int
    #: Batches dropped from the start of the attempt to keep its last 2 MB (0: none).
    dropped: int
    traceback: str | None
    status: JobStatus
    #: The job's latest attempt: above ``attempt`` once it was re-queued and started again.
    attempts: int

    @property
    def live(self) -> bool:
        """Whether the attempt read may still log: it is the job's latest, and not ended."""
        return not self.status.terminal and (self.attempt is None or self.attempt == self.attempts)


def logs_of(job_id: int, *, attempt: int | None = None, after: int = 0) -> LogPage:
    """An attempt's stored log after batch ``after`` (default: the latest attempt)."""
    db.ensure_ready()
    states = reads.job_states([job_id])
    if job_id not in states:
        with db.session_scope() as session:
            reads.get_job(session, job_id)  # raises JobNotFound, with what to do
    state = states[job_id]
    if attempt is not None and not 1 <= attempt <= max(state.attempts, 1):
        raise FilterError(
            f"job {job_id} has {state.attempts} attempt(s): give --attempt from 1 to "
            f"{max(state.attempts, 1)}, or leave it out for the latest.",
            param="--attempt",
        )
    chosen = attempt if attempt is not None else (state.attempts or None)
    if chosen is None:
        return LogPage(job_id, None, "", 0, 0, None, state.status, state.attempts)
    stored = logs.read(job_id, chosen, after=after)
    return LogPage(
        job_id=job_id,
        attempt=chosen,
        text="".join(stored.batches),
        next_after=stored.last_seq,
        dropped=stored.dropped,
        traceback=stored.traceback,
        status=state.status,
        attempts=state.attempts,
    )


def traceback_of(job_id: int) -> str | None:
    """The traceback of the job's latest failed attempt that stored one, or None."""
    found = logs.tracebacks(job_id)
    return found[max(found)] if found else None
