"""The notifications outbox: an event is written with the change that makes it happen, and
taken once, after commit, by the process that sends it (ftqueue/notify).

A job's terminal transition is fenced (store.lifecycle) and a sweep's end is a conditional
UPDATE of ``sweeps.ended_at`` (sweeps.trials), so each event is written once however many
workers, redeliveries and reapers race; ``claim`` hands each row to one sender.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ftqueue.core.states import Event, JobStatus
from ftqueue.settings import get_settings
from ftqueue.store.db import session_scope
from ftqueue.store.schema import Notification, utcnow

_JOB_EVENTS = {
    JobStatus.FAILED: Event.FAILED,
    JobStatus.SUCCEEDED: Event.SUCCEEDED,
    JobStatus.CANCELLED: Event.CANCELLED,
}


def wanted(event: Event) -> bool:
    """Whether this process was asked to notify ``event`` (FTQUEUE_NOTIFY, FTQUEUE_NOTIFY_ON)."""
    settings = get_settings()
    return bool(settings.notify) and event in settings.notify_on


def job_ended(session: Session, job_id: int, status: str) -> None:
    """In the transaction that ends a job: its event, if one is wanted (a pruned trial: none)."""
    event = _JOB_EVENTS.get(JobStatus(status))
    if event is not None and wanted(event):
        session.add(Notification(event=event, job_id=job_id, created_at=utcnow()))


def sweep_ended(session: Session, sweep_id: str, *, cancelled: bool) -> None:
    """In the transaction that marks a sweep ended: its event, if one is wanted."""
    event = Event.SWEEP_CANCELLED if cancelled else Event.SWEEP_DONE
    if wanted(event):
        session.add(Notification(event=event, sweep_id=sweep_id, created_at=utcnow()))


@dataclass(frozen=True)
class Pending:
    """A notification taken to send."""

    id: int
    event: Event
    job_id: int | None
    sweep_id: str | None


def claim(limit: int) -> list[Pending]:
    """Take up to ``limit`` notifications no process has taken, oldest first."""
    with session_scope() as session:
        # Read first: most calls find nothing, and a read takes no write lock.
        ids = list(
            session.scalars(
                select(Notification.id)
                .where(Notification.claimed_at.is_(None))
                .order_by(Notification.id)
                .limit(limit)
            )
        )
    if not ids:
        return []
    with session_scope(write=True) as session:
        # Conditional: of two processes taking the same row, one gets it back.
        rows = session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.claimed_at.is_(None))
            .values(claimed_at=utcnow())
            .returning(
                Notification.id, Notification.event, Notification.job_id, Notification.sweep_id
            )
            .execution_options(synchronize_session=False)
        ).all()
    return sorted((Pending(int(i), Event(e), j, s) for i, e, j, s in rows), key=lambda p: p.id)


def record_error(notification_id: int, error: str) -> None:
    """Keep why a notification could not be sent (secrets already redacted)."""
    with session_scope(write=True) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(error=error[:2000])
            .execution_options(synchronize_session=False)
        )
