"""A sweep after its start: its state, and `ftqueue sweep --extend` and `--resume`.

Both change the sweep row under its lock, then fill its free slots as a worker would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select

from ftqueue.core.states import JobStatus
from ftqueue.errors import SpecError
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.store import db, reads, recovery
from ftqueue.store.schema import Job, Sweep, utcnow
from ftqueue.sweeps import methods, trials

#: How a trial ends when its process died: ``--resume`` runs it again.
_LOST = ("WorkerLost", "Interrupted")


def state(sweep: Sweep, pending: bool) -> str:
    """What a person is told about a sweep: running, done, cancelled, broken or interrupted
    (its eager process died: ``--resume`` continues it)."""
    if sweep.status != trials.ACTIVE:
        return sweep.status
    if interrupted(sweep):
        return "interrupted"
    return "running" if pending or sweep.created < sweep.max_jobs else "done"


def interrupted(sweep: Sweep) -> bool:
    """An eager sweep whose process stopped renewing its lease before the sweep ended."""
    lease = sweep.lease_expires_at
    return (
        sweep.holder is not None
        and sweep.ended_at is None
        and (lease is None or lease < utcnow())
        and sweep.holder != eager.holder()
    )


def known(sweep_id: str, flag: str) -> Sweep:
    """The sweep row, or one line (exit 2) saying there is none."""
    sweep = reads.sweep_row(sweep_id)
    if sweep is None:
        raise SpecError(
            f"no sweep {sweep_id!r}: `ftqueue list --sweep ID` and `ftqueue report --sweep ID` "
            "take the id `ftqueue sweep` printed",
            param=flag,
        )
    return sweep


@dataclass
class Continued:
    """What `--extend` or `--resume` did: trials queued again, and new ones."""

    sweep_id: str
    requeued: list[Job] = field(default_factory=list)
    created: list[Job] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return self.requeued + self.created


def extend(sweep_id: str, count: int) -> Continued:
    """``count`` more trials from the sweep's method and space (the same Optuna study)."""
    if count < 1:
        raise SpecError("--trials must be 1 or more: how many trials to add", param="--trials")
    eager.settle()
    sweep = known(sweep_id, "--extend")
    now = state(sweep, pending=True)
    if now in ("cancelled", "broken", "interrupted"):
        raise SpecError(
            f"sweep {sweep_id!r} is {now}: `ftqueue sweep --resume {sweep_id}` continues it, "
            "then --extend adds trials",
            param="--extend",
        )
    plan = trials.plan_of(sweep)
    size = methods.lookup(sweep.method).size(plan.space)
    if size is not None and sweep.max_jobs + count > size:
        left = size - sweep.max_jobs
        more = f"--trials {left} at most" if left else "it has no other trial to add"
        raise SpecError(
            f"sweep {sweep_id!r} ({sweep.method}) has {size} distinct trials and {sweep.max_jobs} "
            f"in its budget: {more}",
            param="--trials",
        )
    cap = get_settings().max_grid
    if sweep.max_jobs + count > cap:
        raise SpecError(
            f"sweep {sweep_id!r} would have {sweep.max_jobs + count:,} trials, more than "
            f"FTQUEUE_MAX_GRID ({cap:,}): add fewer, or raise FTQUEUE_MAX_GRID",
            param="--trials",
        )
    enqueue_ready()
    with db.session_scope(write=True) as session:
        locked = _lock(session, sweep_id)
        locked.max_jobs += count
        locked.definition = dict(locked.definition) | {"max_jobs": locked.max_jobs}
        locked.ended_at = None
        _hold(locked)
    return Continued(sweep_id, created=trials.fill(sweep_id))


def resume(sweep_id: str) -> Continued:
    """Continue a cancelled, broken or interrupted sweep: the trials that did not run (to an
    end) are queued again, with their values, and the free slots filled as before."""
    eager.settle()  # the trials of a dead eager process end first
    sweep = known(sweep_id, "--resume")
    with db.session_scope() as session:
        pending = bool(
            session.scalar(
                select(Job.id).where(
                    Job.sweep_id == sweep_id,
                    Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                )
            )
        )
    now = state(sweep, pending)
    if now in ("running", "done"):
        raise SpecError(
            f"sweep {sweep_id!r} is {now}: nothing to resume (`ftqueue sweep --follow "
            f"{sweep_id}` follows it; `--extend {sweep_id} --trials N` adds trials)",
            param="--resume",
        )
    enqueue_ready()
    settings = get_settings()
    method = methods.lookup(sweep.method)
    try:
        method.open_trials(sweep_id)
    except KeyError as exc:  # the study is gone: there is nothing to continue from
        raise SpecError(
            f"sweep {sweep_id!r} cannot resume: its {sweep.method} study is missing ({exc}); "
            "start a new sweep from its file",
            param="--resume",
        ) from None
    with db.session_scope(write=True) as session:
        locked = _lock(session, sweep_id)
        rows = list(
            session.scalars(
                select(Job)
                .where(
                    Job.sweep_id == sweep_id,
                    or_(
                        Job.status == JobStatus.CANCELLED,
                        and_(Job.status == JobStatus.FAILED, Job.error_type.in_(_LOST)),
                    ),
                )
                .order_by(Job.id)
            )
        )
        numbers = method.reopen(sweep_id, [j.trial for j in rows if j.trial is not None])
        locked.status = trials.ACTIVE
        locked.problem = None
        locked.ended_at = None
        holder, lease = _hold(locked)
        for job in rows:
            if job.trial is not None:
                job.trial = numbers.get(job.trial, job.trial)
            recovery.requeue_ended(
                session,
                job,
                detail=f"re-queued: sweep {sweep_id} resumed",
                max_attempts=settings.max_attempts,
                held_by=holder,
                lease_expires_at=lease,
            )
        session.flush()
        for job in rows:
            session.expunge(job)
    if rows and not settings.eager:
        from ftqueue.queue import broker

        broker.publish(rows)
    return Continued(sweep_id, requeued=rows, created=trials.fill(sweep_id))


def enqueue_ready() -> None:
    from ftqueue.submit import enqueue

    enqueue.ready()


def _lock(session: Any, sweep_id: str) -> Sweep:
    return session.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).one()


def _hold(sweep: Sweep) -> tuple[str | None, Any]:
    """An eager process holds the sweep it continues; with workers, the reaper fills it."""
    if get_settings().eager:
        sweep.holder, sweep.lease_expires_at = eager.holder(), trials.lease_end()
    else:
        sweep.holder, sweep.lease_expires_at = None, None
    return sweep.holder, sweep.lease_expires_at
