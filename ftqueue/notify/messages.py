"""What a notification says: a title and a few lines, read from the database when it is sent.

A sweep's message is `ftqueue report --sweep`'s summary (ftqueue/sweeps/summary.py), so the
best configuration and the time early stopping saved read the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ftqueue.core.states import Event
from ftqueue.core.text import clip, duration
from ftqueue.store.db import session_scope
from ftqueue.store.outbox import Pending
from ftqueue.store.schema import Job, Result
from ftqueue.sweeps import summary

#: Apprise's notify types, which receivers show as colours or icons.
_LEVELS = {
    Event.FAILED: "failure",
    Event.SUCCEEDED: "success",
    Event.CANCELLED: "warning",
    Event.SWEEP_DONE: "success",
    Event.SWEEP_CANCELLED: "warning",
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    #: ``info``, ``success``, ``warning`` or ``failure`` (Apprise's NotifyType values).
    level: str = "info"


def compose(pending: Pending) -> Message:
    """The message of one notification."""
    level = _LEVELS[pending.event]
    if pending.sweep_id is not None:
        return Message(*_sweep(pending.sweep_id, pending.event), level=level)
    assert pending.job_id is not None, "a notification is about a job or a sweep"
    return Message(*_job(pending.job_id, pending.event), level=level)


def _job(job_id: int, event: Event) -> tuple[str, str]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return f"ftqueue: job {job_id} {event}", f"job {job_id} {event} (its row is gone)"
        test = session.execute(
            select(Result.accuracy, Result.epoch)
            .where(Result.job_id == job_id, Result.split == "test")
            .order_by(Result.epoch.desc())
            .limit(1)
        ).one_or_none()
        named = f" {clip(job.name, 60)}" if job.name else ""
        lines = [f"job {job.id} ({job.kind}{named}) {job.status}"]
        if event == Event.FAILED:
            lines[0] += f": {job.error_type}: {clip(job.error_message or '', 500)}"
        elif test is not None:
            lines[0] += f": test accuracy {test.accuracy:.4f} (epoch {test.epoch})"
        lines.append(f"model {clip(job.model, 120)}, data {clip(job.dataset, 120)}")
        if job.sweep_id:
            lines.append(f"sweep {job.sweep_id}, trial {job.trial}")
        ran = f", train time {duration(job.train_seconds)}" if job.train_seconds else ""
        lines.append(f"attempt {job.attempts} of {job.max_attempts}{ran}")
        lines.append(f"ftqueue show {job.id}")
        return f"ftqueue: job {job.id} {job.status}", "\n".join(lines)


def _sweep(sweep_id: str, event: Event) -> tuple[str, str]:
    ended = "cancelled" if event == Event.SWEEP_CANCELLED else "done"
    with session_scope() as session:
        report = summary.sweep_report(session, sweep_id)
    title = f"ftqueue: sweep {sweep_id} {ended}"
    if report is None:
        return title, f"sweep {sweep_id} {ended} (its row is gone)"
    lines = summary.summary_lines(report)
    if report.best is None:
        lines.append("best: none (no trial succeeded)")
    if report.eta:
        share = report.saved_seconds / report.full_seconds if report.full_seconds else 0.0
        lines.append(
            f"early stopping saved {duration(report.saved_seconds)} of train time "
            f"({100 * share:.0f}%)"
        )
    lines.append(f"ftqueue report --sweep {sweep_id}")
    return title, "\n".join(lines)
