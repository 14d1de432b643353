"""What the command line shows of jobs besides their JSON: how they ended, shell completions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftqueue.kinds import rows
from ftqueue.store import db, reads

if TYPE_CHECKING:
    from ftqueue.store.schema import Job


@dataclass(frozen=True)
class Ending:
    """How a job ended: its status, error, headline measurement and what it published."""

    id: int
    kind: str
    status: str
    error: str | None
    #: The last test result, else the last of any split (split, accuracy, macro_f1, loss).
    result: dict[str, Any] | None
    #: What it published, as its kind names it, and the paths; None when nothing.
    output: tuple[str, list[str]] | None


def endings(*, job_ids: Sequence[int]) -> list[Ending]:
    """How each of the jobs ended (or where it is), in the order given; missing ones left out."""
    states = reads.job_states(job_ids)
    results = reads.final_results(job_ids)
    outputs = rows.outputs_of(job_ids)
    out = []
    for jid in job_ids:
        s = states.get(jid)
        if s is None:
            continue
        r = results.get(jid)
        result = (
            {"split": r.split, "accuracy": r.accuracy, "macro_f1": r.macro_f1, "loss": r.loss}
            if r
            else None
        )
        out.append(Ending(jid, s.kind, s.status, s.error, result, outputs.get(jid)))
    return out


def describe(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """The JSON form of jobs already read, such as a submission's new ones."""
    return [rows.job_summary(job) for job in jobs]


def completions(*, runs_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """The newest jobs' id, kind, status, model and dataset, for the shell to offer; only
    succeeded training runs (those with an adapter) with ``runs_only``."""
    from ftqueue import kinds

    with db.session_scope() as session:
        jobs = reads.list_jobs(
            session,
            statuses=("succeeded",) if runs_only else (),
            job_kinds=kinds.with_role(kinds.Role.RUN) if runs_only else (),
            limit=limit,
        )
        return [
            {"id": j.id, "kind": j.kind, "status": j.status, "model": j.model, "dataset": j.dataset}
            for j in jobs
        ]


def end_eager(*, reason: str) -> list[int]:
    """End the jobs this eager process runs, because it is stopping; returns their ids."""
    from ftqueue.queue import eager

    return eager.end_own(reason)
