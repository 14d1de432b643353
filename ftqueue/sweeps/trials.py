"""Sweeps in the queue: create one from a plan, fill its free slots with trials, cancel it.

There is no sweep process to lose. `ftqueue sweep` inserts the sweep row and its first
``max_parallel`` trials (``start_sweep``); from then on, whichever worker ends a trial
fills the freed slot (``after_trial``), and the reaper fills any slot left free by a worker
that died in between.
Each fill holds the sweep row's lock while it takes trial numbers, so two workers ending
trials at once never make the same trial, nor more than the budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update

from ftqueue.core.states import JobStatus, Priority
from ftqueue.errors import BrokerError, DatabaseError, SpecError, first_line
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.store import db, insert, outbox, reads
from ftqueue.store.schema import Job, Sweep, utcnow
from ftqueue.submit import enqueue, submission
from ftqueue.sweeps import mending, methods
from ftqueue.sweeps.plan import SweepPlan

log = logging.getLogger(__name__)

ACTIVE = "active"
CANCELLED = "cancelled"
#: The reaper could not fill it (``problem`` says why); it makes no more trials.
BROKEN = "broken"
_PENDING = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass
class StartedSweep:
    """What `ftqueue sweep` did: the sweep's id, its checked plan, the trials it queued."""

    sweep_id: str
    plan: SweepPlan
    created: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def start_sweep(plan: SweepPlan, *, strict: bool = False) -> StartedSweep:
    """Check a sweep's inputs, then write the sweep row with its first trials, all or nothing.

    The model and data are checked and pinned once, on the first trial; trials differ only in
    searched settings, so the pinned base holds for all. A grid's every trial is checked.
    What the method keeps (an Optuna study) is made first and dropped again when the row
    was not written; one left by a process killed in between is replaced by the next start
    under the same name. The row and its first trials are one transaction. ``strict``: a
    ``gpu_class`` that no live worker serves is refused before anything is written.
    """
    sweep_id = submission.check_label(plan.name or uuid.uuid4().hex[:8], "name")
    checker = submission.Checker()
    method = methods.lookup(plan.method)
    first, *others = method.values_to_check(plan)
    pinned = checker(plan.spec(first))
    searched = {d.name for d in plan.space} | {"kind"}
    base = {k: v for k, v in pinned.to_dict().items() if k not in searched}
    for values in others:
        checker(plan.spec(values))
    # The trials are the starter's, whichever worker creates them later.
    plan = SweepPlan.from_dict(plan.to_dict() | {"base": base, "user": get_settings().user})
    enqueue.ready()
    if strict and plan.gpu_class is not None and not get_settings().eager:
        submission.require_class_worker(plan.gpu_class, {plan.kind})
    with db.session_scope() as session:
        _check_new(session, sweep_id)
    method.start(sweep_id, plan)
    crash_at("sweep-method-started")
    try:
        created = enqueue.jobs(lambda session: _create(session, sweep_id, plan))
    except BaseException:
        with contextlib.suppress(Exception):
            if reads.sweep_row(sweep_id) is None:
                method.forget(sweep_id)
        raise
    return StartedSweep(sweep_id, plan, created, checker.notes)


def crash_at(point: str) -> None:
    """Fault injection for tests: FTQUEUE_TEST_KILL_AT=<point> kills this process there."""
    if os.environ.get("FTQUEUE_TEST_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _check_new(session: Any, sweep_id: str) -> None:
    """SpecError when the sweep id is taken (by a sweep row or by jobs of a submitted grid)."""
    if session.get(Sweep, sweep_id) is not None or session.scalar(
        select(func.count()).select_from(Job).where(Job.sweep_id == sweep_id)
    ):
        raise SpecError(
            f"sweep {sweep_id!r} already exists: give the sweep another name, or leave name "
            f"out for a new id (`ftqueue sweep --resume {sweep_id}` continues a stopped one)",
            param="name",
        )


def _create(session: Any, sweep_id: str, plan: SweepPlan) -> list[insert.NewJob]:
    """In the transaction that inserts the first trials: the sweep row, counted as made."""
    _check_new(session, sweep_id)
    held = get_settings().eager
    sweep = Sweep(
        id=sweep_id,
        kind=plan.kind,
        method=plan.method,
        definition=plan.to_dict(),
        max_jobs=plan.max_jobs,
        max_parallel=plan.max_parallel,
        created=0,
        eta=plan.eta,
        rungs=list(plan.rungs) if plan.eta else None,
        status=ACTIVE,
        holder=eager.holder() if held else None,
        lease_expires_at=lease_end() if held else None,
    )
    session.add(sweep)
    session.flush()
    crash_at("sweep-row-written")
    offer = methods.lookup(plan.method).propose(sweep_id, plan, plan.max_parallel)
    proposals = offer.take(0, min(plan.max_parallel, plan.max_jobs))
    offer.release()
    sweep.created = len(proposals)
    crash_at("sweep-trials-proposed")
    return [_new_job(sweep_id, plan, p) for p in proposals]


def lease_end() -> dt.datetime:
    """When the lease of an eager process taken now lapses."""
    return utcnow() + dt.timedelta(seconds=get_settings().lease_seconds)


def plan_of(sweep: Sweep) -> SweepPlan:
    return SweepPlan.from_dict(dict(sweep.definition))


def fill(sweep_id: str) -> list[Job]:
    """Queue trials into the sweep's free slots (none when cancelled or out of budget).

    The new jobs are published, or, in eager mode, held by this process to run itself.
    """
    sweep = reads.sweep_row(sweep_id)
    if sweep is None or sweep.status != ACTIVE:
        return []
    # Read first: the reaper calls this for every active sweep on every pass, and most find
    # no free slot; only a sweep with one takes the lock (on SQLite, the database's).
    wanted = _free_slots(sweep_id, sweep)
    if wanted <= 0:
        return []
    plan = plan_of(sweep)
    offer = methods.lookup(plan.method).propose(sweep_id, plan, wanted)
    try:
        return enqueue.jobs(lambda session: _take(session, sweep_id, plan, offer))
    finally:
        offer.release()


def _take(
    session: Any, sweep_id: str, plan: SweepPlan, offer: methods.Offer
) -> list[insert.NewJob]:
    """Under the sweep row's lock: the trials for the slots still free, counted as made."""
    sweep = session.scalars(
        select(Sweep).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if sweep is None or sweep.status != ACTIVE:
        return []
    proposals = offer.take(sweep.created, _free_slots(sweep_id, sweep, session))
    sweep.created += len(proposals)
    return [_new_job(sweep_id, plan, p) for p in proposals]


def _free_slots(sweep_id: str, sweep: Sweep, session: Any = None) -> int:
    """How many trials the sweep may start now: free parallel slots, within the budget."""
    query = (
        select(func.count())
        .select_from(Job)
        .where(Job.sweep_id == sweep_id, Job.status.in_(_PENDING))
    )
    if session is None:
        with db.session_scope() as own:
            pending = own.scalar(query)
    else:
        pending = session.scalar(query)
    return max(0, min(sweep.max_parallel - int(pending or 0), sweep.max_jobs - sweep.created))


def _new_job(sweep_id: str, plan: SweepPlan, proposal: methods.Proposal) -> insert.NewJob:
    spec = plan.spec(proposal.values)
    return insert.NewJob(
        kind=spec.kind,
        spec=spec.to_dict(),
        spec_hash=spec.spec_hash(),
        model=spec.model,
        dataset=spec.source(),
        tags=plan.tags,
        sweep_id=sweep_id,
        trial=proposal.number,
        output_dir=None,
        gpu_class=plan.gpu_class,
        priority=Priority(plan.priority).level,
        submitted_by=plan.user,
    )


def after_trial(job_id: int) -> list[Job]:
    """A trial ended: tell the sweep's method how, then fill the free slots."""
    with db.session_scope() as session:
        row = session.execute(
            select(Job.sweep_id, Job.trial, Job.status, Sweep.method, Sweep.status.label("state"))
            .join(Sweep, Sweep.id == Job.sweep_id)
            .where(Job.id == job_id)
        ).one_or_none()
    if row is None:
        return []
    if row.trial is not None and JobStatus(row.status).terminal:
        mending.tell(
            methods.lookup(row.method),
            row.sweep_id,
            row.state == CANCELLED,
            row.trial,
            row.status,
            job_id,
        )
    created = fill(row.sweep_id)
    if not created:
        end_if_finished(row.sweep_id)
    return created


def end_if_finished(sweep_id: str) -> bool:
    """Mark the sweep ended once its last trial ended; True for the one caller that did.

    One conditional UPDATE decides it, so of the workers ending its last trials, the reaper
    and `ftqueue cancel`, exactly one sees the sweep end (and writes its notification). Each
    caller checks after its own trial's end committed, so the last of them sees every end.
    """
    pending = select(Job.id).where(Job.sweep_id == Sweep.id, Job.status.in_(_PENDING)).exists()
    ending = (
        Sweep.id == sweep_id,
        Sweep.ended_at.is_(None),
        or_(Sweep.status.in_((CANCELLED, BROKEN)), Sweep.created >= Sweep.max_jobs),
        ~pending,
    )
    with db.session_scope() as session:
        # Read first: most trials are not a sweep's last, and a read takes no write lock.
        if session.scalar(select(Sweep.id).where(*ending)) is None:
            return False
    with db.session_scope(write=True) as session:
        status = session.execute(
            update(Sweep)
            .where(*ending)
            .values(ended_at=utcnow())
            .returning(Sweep.status)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if status is None:
            return False
        outbox.sweep_ended(session, sweep_id, cancelled=status == CANCELLED)
    _reconcile_quietly(sweep_id)  # trials cancelled while queued were never told
    return True


def _reconcile_quietly(sweep_id: str) -> None:
    try:
        mending.reconcile(sweep_id)
    except Exception as exc:  # said, not raised: the sweep's end stands either way
        log.warning("sweep %s: its method's trials not reconciled: %s", sweep_id, first_line(exc))


@dataclass
class Filled:
    """A reaper pass over the active sweeps: the trials it made, the sweeps it found broken."""

    created: list[Job] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)


def fill_all() -> Filled:
    """Fill every active sweep's free slots and mend its method's trials (the reaper's pass).

    One sweep that cannot be filled (its study gone, a trial it cannot write) is marked
    broken, with the reason, and the others are filled all the same. The results database
    away ends the pass; the broker or a study's storage away skips the sweep this pass. No
    one of them makes a sweep broken. Sweeps held by an eager process are its own to fill.
    """
    with db.session_scope() as session:
        active = list(
            session.scalars(
                select(Sweep.id)
                .where(Sweep.status == ACTIVE, Sweep.holder.is_(None))
                .order_by(Sweep.created_at, Sweep.id)
            )
        )
    done = Filled()
    for sweep_id in active:
        try:
            done.created += fill(sweep_id)
        except DatabaseError:
            raise  # the results database is away: no sweep can be filled this pass
        except Exception as exc:
            problem = f"{type(exc).__name__}: {first_line(exc)}"
            if _passing(exc):
                log.warning("sweep %s not filled this pass: %s", sweep_id, problem)
            else:
                log.warning("sweep %s is broken: %s", sweep_id, problem)
                if mark_broken(sweep_id, problem):
                    done.broken.append(sweep_id)
            continue
        _reconcile_quietly(sweep_id)
    return done


def _passing(exc: BaseException) -> bool:
    """A problem that may be gone on the next pass (the broker, a busy or unreachable study
    storage), which does not make a sweep broken."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (BrokerError, sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return type(exc).__name__ == "StorageInternalError"  # optuna's, without importing it


def mark_broken(sweep_id: str, problem: str) -> bool:
    """Mark an active sweep broken, with why; False when it was not active any more."""
    with db.session_scope(write=True) as session:
        changed = session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status == ACTIVE)
            .values(status=BROKEN, problem=problem[:2000])
            .execution_options(synchronize_session=False)
        )
        return bool(changed.rowcount)  # type: ignore[attr-defined]


def end_all() -> list[str]:
    """End the sweeps whose last trial ended unseen (its worker died just after): the reaper's."""
    with db.session_scope() as session:
        candidates = list(
            session.scalars(
                select(Sweep.id).where(
                    Sweep.ended_at.is_(None),
                    or_(Sweep.status.in_((CANCELLED, BROKEN)), Sweep.created >= Sweep.max_jobs),
                )
            )
        )
    return [sweep_id for sweep_id in candidates if end_if_finished(sweep_id)]


def stop(sweep_id: str) -> bool:
    """Make no more trials for the sweep; False when there is no such sweep row.

    `ftqueue cancel --sweep` calls this before it cancels the sweep's jobs, so a worker
    filling a slot at the same moment either made its trial before (and it gets cancelled) or
    sees the sweep stopped. A sweep with no trial left running ends here.
    """
    with db.session_scope(write=True) as session:
        sweep = session.scalars(
            select(Sweep).where(Sweep.id == sweep_id).with_for_update()
        ).one_or_none()
        if sweep is None:
            return False
        sweep.status = CANCELLED
    end_if_finished(sweep_id)
    return True


def job_statuses(sweep_id: str) -> dict[int, str]:
    """The status of every trial made so far, by job id."""
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.sweep_id == sweep_id))
        return {int(i): str(s) for i, s in rows}


def finished(sweep_id: str) -> bool:
    """No trial pending and none still to make (out of budget, or stopped)."""
    sweep = reads.sweep_row(sweep_id)
    statuses = job_statuses(sweep_id)
    if any(JobStatus(s).pending for s in statuses.values()):
        return False
    return sweep is None or sweep.status != ACTIVE or sweep.created >= sweep.max_jobs


def held_queued(sweep_id: str) -> list[Job]:
    """The sweep's queued trials held by this eager process, oldest first."""
    with db.session_scope() as session:
        jobs = list(
            session.scalars(
                select(Job)
                .where(
                    Job.sweep_id == sweep_id,
                    Job.status == JobStatus.QUEUED,
                    Job.worker == eager.holder(),
                )
                .order_by(Job.id)
            )
        )
        for job in jobs:
            session.expunge(job)
        return jobs
