"""Early stopping across the queue: asynchronous successive halving (ASHA) decided in SQL.

A sweep with early stopping names its validation metric and goal (``metric``/``goal``, by
default accuracy, higher is better), ``eta`` and rungs: points in training, in epochs
(fractions allowed: ``0.5`` is half-way through the first epoch) or in optimizer steps, where
the training loop evaluates on validation and asks for a verdict.

The rule: a trial that reaches a rung records its value there (an arrival). A verdict needs
at least ``eta`` arrivals at the rung, the trial's own included; then the trial continues
only if it ranks in the top ``max(1, n // eta)`` of the ``n`` arrivals at that rung so far,
trials that ended (finished, pruned or failed) included, ties going to the trial being
judged. With fewer arrivals the trial goes on for now, its verdict pending, and asks again
at each of its later rungs and epoch ends (but the last); when enough trials have arrived by
then, it is judged on the value it had at that rung, and stops if it is out. So no arrival
is waved through unjudged: the first trial at a rung is ranked once ``eta`` have reached it
(a trial that ends first needs no verdict). A trial is judged by its own attempt, in one transaction
holding the sweep row's lock, so two trials at a rung at once are taken one after the other,
each seeing the other. Each (trial, rung) holds one arrival and at most one verdict: a later
attempt of the job (after a worker died, or a re-delivered message) reads them instead of
arriving or deciding again, so a trial gets one answer per rung whatever happens to workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ftqueue.core.objective import Objective, RungPoints, position_text
from ftqueue.core.states import JobStatus
from ftqueue.errors import JobSuperseded
from ftqueue.store import lifecycle
from ftqueue.store.db import session_scope
from ftqueue.store.schema import Job, RungDecision, Sweep, utcnow


@dataclass(frozen=True)
class Policy:
    """A sweep's early-stopping rule, as the worker running one of its trials holds it."""

    sweep_id: str
    eta: int
    rungs: tuple[float, ...]
    unit: str = "epoch"
    objective: Objective = field(default_factory=Objective)

    @property
    def points(self) -> RungPoints:
        return RungPoints(self.unit, self.rungs)


def keep_count(reached: int, eta: int) -> int:
    """How many of the trials that reached a rung continue past it."""
    return max(1, reached // eta)


def verdict(value: float, seen: list[float], eta: int, objective: Objective) -> tuple[int, bool]:
    """The rank of ``value`` among the values ``seen`` at a rung (itself included), and
    whether it continues; only asked with at least ``eta`` of them."""
    rank = 1 + sum(1 for v in seen if objective.better(v, value))
    return rank, rank <= keep_count(len(seen), eta)


def policy_of(job_id: int) -> Policy | None:
    """The early-stopping rule of the job's sweep, or None (no sweep, or none asked for)."""
    with session_scope() as session:
        row = session.execute(
            select(Sweep.id, Sweep.eta, Sweep.rungs, Sweep.definition)
            .join(Job, Job.sweep_id == Sweep.id)
            .where(Job.id == job_id)
        ).one_or_none()
    if row is None or row.eta is None or not row.rungs:
        return None
    definition = dict(row.definition or {})
    # Sweeps made before metric, goal and rung units: accuracy, max, epochs.
    objective = Objective(definition.get("metric", "accuracy"), definition.get("goal", "max"))
    unit = str(definition.get("rung_unit", "epoch"))
    return Policy(row.id, int(row.eta), tuple(row.rungs), unit, objective)


def decide(claim: lifecycle.Claim, policy: Policy, rung: float | None, value: float | None) -> bool:
    """Whether the claimed trial goes on: its pending verdicts at earlier rungs first, then its
    arrival at ``rung`` with validation value ``value`` (None, None: only the pending ones).

    JobSuperseded when the attempt no longer holds its job (it must stop, deciding nothing).
    """
    with session_scope(write=True) as session:
        # Orders every decision of this sweep (SQLite: the write lock taken at BEGIN does).
        session.scalars(select(Sweep.id).where(Sweep.id == policy.sweep_id).with_for_update()).one()
        if lifecycle.holding(session, claim) is None:
            raise JobSuperseded(f"job {claim.job_id} was taken over by another attempt")
        mine = {
            float(d.rung): d
            for d in session.scalars(
                select(RungDecision).where(
                    RungDecision.sweep_id == policy.sweep_id, RungDecision.job_id == claim.job_id
                )
            )
        }
        if any(d.keep is False for d in mine.values()):
            return False  # an earlier attempt was pruned here and died before it stopped
        for position in sorted(mine):
            row = mine[position]
            if row.keep is None and not _judge(session, claim, policy, row):
                return False
        if rung is None or value is None:
            return True
        earlier = mine.get(float(rung))
        if earlier is not None:
            return earlier.keep is not False
        arrival = 1 + _arrivals(session, policy.sweep_id, rung)
        row = RungDecision(
            sweep_id=policy.sweep_id,
            job_id=claim.job_id,
            rung=float(rung),
            attempt=claim.attempt,
            value=value,
            arrival=arrival,
        )
        session.add(row)
        session.flush()
        if arrival < policy.eta:
            metric = policy.objective.metric
            lifecycle.add_event(
                session,
                claim,
                JobStatus.RUNNING,
                f"at rung {position_text(rung)}: validation {metric} {value:.4f}, arrival "
                f"{arrival} of the {policy.eta} a verdict needs: continues until then",
            )
            return True
        return _judge(session, claim, policy, row)


def _arrivals(session: Session, sweep_id: str, rung: float) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(RungDecision)
            .where(RungDecision.sweep_id == sweep_id, RungDecision.rung == float(rung))
        )
        or 0
    )


def _judge(session: Session, claim: lifecycle.Claim, policy: Policy, row: RungDecision) -> bool:
    """The verdict on a pending arrival, once ``eta`` trials have reached its rung."""
    seen = list(
        session.scalars(
            select(RungDecision.value).where(
                RungDecision.sweep_id == policy.sweep_id, RungDecision.rung == row.rung
            )
        )
    )
    if len(seen) < policy.eta:
        return True
    rank, keep = verdict(row.value, seen, policy.eta, policy.objective)
    row.keep, row.rank, row.out_of, row.decided_at = keep, rank, len(seen), utcnow()
    kept = keep_count(len(seen), policy.eta)
    late = "" if row.arrival == len(seen) else f" (verdict taken at arrival {len(seen)})"
    lifecycle.add_event(
        session,
        claim,
        JobStatus.RUNNING,
        f"rung {position_text(row.rung)}: validation {policy.objective.metric} "
        f"{row.value:.4f}, rank {rank} of {len(seen)} (top {kept} continue){late}: "
        f"{'continues' if keep else 'pruned'}",
    )
    return keep
