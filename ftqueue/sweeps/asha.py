"""Early stopping across the queue: asynchronous successive halving (ASHA) decided in SQL.

A sweep with early stopping names rungs (epochs) and ``eta``. A trial that reaches a rung
continues only if its validation accuracy ranks in the top ``max(1, n // eta)`` of the ``n``
trials that have reached that rung so far, itself included (Optuna's SuccessiveHalvingPruner
rule; the first trial at a rung always continues). The worker whose job reaches the rung
decides, in one transaction holding the sweep row's lock, so two trials that reach a rung at
once are ranked one after the other, each seeing the other. The verdict is stored per (trial,
rung): a later attempt of the job (after a worker died, or a re-delivered message) reads it
instead of deciding again, so a trial gets one answer per rung whatever happens to workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

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
    rungs: tuple[int, ...]


def keep_count(reached: int, eta: int) -> int:
    """How many of the trials that reached a rung continue past it."""
    return max(1, reached // eta)


def policy_of(job_id: int) -> Policy | None:
    """The early-stopping rule of the job's sweep, or None (no sweep, or none asked for)."""
    with session_scope() as session:
        row = session.execute(
            select(Sweep.id, Sweep.eta, Sweep.rungs)
            .join(Job, Job.sweep_id == Sweep.id)
            .where(Job.id == job_id)
        ).one_or_none()
    if row is None or row.eta is None or not row.rungs:
        return None
    return Policy(row.id, int(row.eta), tuple(int(r) for r in row.rungs))


def decide(claim: lifecycle.Claim, policy: Policy, rung: int, value: float) -> bool:
    """Whether the claimed trial continues past ``rung`` with validation accuracy ``value``.

    JobSuperseded when the attempt no longer holds its job (it must stop, deciding nothing).
    """
    with session_scope(write=True) as session:
        # Orders every decision of this sweep (SQLite: the write lock taken at BEGIN does).
        session.scalars(select(Sweep.id).where(Sweep.id == policy.sweep_id).with_for_update()).one()
        if lifecycle.holding(session, claim) is None:
            raise JobSuperseded(f"job {claim.job_id} was taken over by another attempt")
        earlier = session.get(RungDecision, (policy.sweep_id, claim.job_id, rung))
        if earlier is not None:
            return bool(earlier.keep)
        others = list(
            session.scalars(
                select(RungDecision.value).where(
                    RungDecision.sweep_id == policy.sweep_id, RungDecision.rung == rung
                )
            )
        )
        rank = 1 + sum(1 for v in others if v > value)
        reached = len(others) + 1
        kept = keep_count(reached, policy.eta)
        keep = rank <= kept
        session.add(
            RungDecision(
                sweep_id=policy.sweep_id,
                job_id=claim.job_id,
                rung=rung,
                attempt=claim.attempt,
                value=value,
                keep=keep,
                rank=rank,
                out_of=reached,
                decided_at=utcnow(),
            )
        )
        verdict = "continues" if keep else "pruned"
        lifecycle.add_event(
            session,
            claim,
            JobStatus.RUNNING,
            f"rung {rung}: validation accuracy {value:.4f}, rank {rank} of {reached} "
            f"(top {kept} continue): {verdict}",
        )
        return keep
