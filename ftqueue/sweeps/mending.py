"""A sweep's method kept in step with its jobs: each trial told how it ended, once.

A trial its method proposed and was never told about (a process killed between the ask and
the commit, a trial cancelled while queued, a worker that died before telling) is told how
its job ended, or given back when it never ran, so that the study of a sweep with nothing
running holds no running trial. The reaper's pass does it for every active sweep, and the
process that sees a sweep end does it once more.
"""

from __future__ import annotations

from sqlalchemy import select

from ftqueue.core.states import JobStatus
from ftqueue.store import db, reads
from ftqueue.store.schema import Job, Result, Sweep
from ftqueue.sweeps import methods


def tell(
    method: methods.SweepMethod,
    sweep_id: str,
    sweep_cancelled: bool,
    trial: int,
    status: str,
    job_id: int,
) -> None:
    """Tell the method how a trial ended; one cancelled with its sweep is given back, not
    failed, for ``--resume`` to run."""
    if status == JobStatus.CANCELLED and sweep_cancelled:
        method.give_back(sweep_id, [trial])
    else:
        method.tell(sweep_id, trial, status, validation_curve(job_id))


def reconcile(sweep_id: str) -> int:
    """Tell the method how its untold trials ended, or give back those that never ran;
    returns how many. Under the sweep row's lock, so a fill between its ask and its commit
    is waited for, not mistaken for a proposal that was lost."""
    sweep = reads.sweep_row(sweep_id)
    if sweep is None:
        return 0
    method = methods.lookup(sweep.method)
    numbers = method.open_trials(sweep_id)
    if not numbers:
        return 0
    with db.session_scope(write=True) as session:
        locked = session.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).one()
        rows = session.execute(
            select(Job.id, Job.trial, Job.status).where(
                Job.sweep_id == sweep_id, Job.trial.in_(numbers)
            )
        ).all()
        by_trial = {row.trial: row for row in rows}
        lost = [n for n in numbers if n not in by_trial]
        if lost:
            method.give_back(sweep_id, lost)
        ended = [row for row in rows if JobStatus(row.status).terminal]
        for row in ended:
            tell(method, sweep_id, locked.status == "cancelled", row.trial, row.status, row.id)
    return len(lost) + len(ended)


def validation_curve(job_id: int) -> list[tuple[int, float]]:
    """(epoch, validation value of its sweep's metric) of a job, in epoch order."""
    with db.session_scope() as session:
        definition = session.scalar(
            select(Sweep.definition).join(Job, Job.sweep_id == Sweep.id).where(Job.id == job_id)
        )
        metric = getattr(Result, dict(definition or {}).get("metric", "accuracy"))
        rows = session.execute(
            select(Result.epoch, metric)
            .where(Result.job_id == job_id, Result.split == "validation")
            .order_by(Result.epoch)
        )
        return [(int(e), float(a)) for e, a in rows]
