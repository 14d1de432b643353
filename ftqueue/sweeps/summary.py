"""One sweep's outcome from the database: its trials, the best configuration, and the train
time early stopping saved. `ftqueue report --sweep` renders it (ftqueue/report/sweep.py), and
a notification of the sweep's end says it in the same words.

The time a trial would have cost run to the end is its own train time per trained epoch
times its epochs: an estimate from the same trial, on the same worker, not a second run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftqueue.core.states import JobStatus
from ftqueue.core.text import duration
from ftqueue.store.schema import Job, Result, RungDecision, Sweep
from ftqueue.sweeps.plan import SweepPlan


@dataclass
class Trial:
    job_id: int
    trial: int | None
    status: str
    values: dict[str, Any]
    #: Validation accuracy per epoch trained.
    curve: dict[int, float]
    selected_epoch: int | None
    test_accuracy: float | None
    train_seconds: float | None
    epochs: int
    #: The rung it stopped at, when pruned.
    pruned_at: int | None = None

    @property
    def best_validation(self) -> float | None:
        return max(self.curve.values()) if self.curve else None

    @property
    def full_seconds(self) -> float | None:
        """Its train time had it run all its epochs (per-epoch time x epochs)."""
        if self.train_seconds is None or not self.curve:
            return None
        return self.train_seconds * self.epochs / max(self.curve)


@dataclass
class SweepReport:
    sweep_id: str
    method: str
    status: str
    max_jobs: int
    eta: int | None
    rungs: list[int]
    space: list[str]
    trials: list[Trial] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def best(self) -> Trial | None:
        """The finished trial with the best validation accuracy (test plays no part)."""
        done = [t for t in self.trials if t.status == JobStatus.SUCCEEDED and t.curve is not None]
        scored = [t for t in done if t.best_validation is not None]
        return max(scored, key=lambda t: (t.best_validation, -t.job_id), default=None)

    @property
    def spent_seconds(self) -> float:
        return sum(t.train_seconds or 0.0 for t in self.trials)

    @property
    def full_seconds(self) -> float:
        return sum(t.full_seconds or 0.0 for t in self.trials)

    @property
    def saved_seconds(self) -> float:
        """The train time early stopping saved: every trial run to its end, less the spent."""
        return max(0.0, self.full_seconds - self.spent_seconds)


def sweep_report(session: Session, sweep_id: str) -> SweepReport | None:
    """The report of a sweep made by `ftqueue sweep`, or None when there is no such row."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return None
    plan = SweepPlan.from_dict(dict(sweep.definition))
    names = [d.name for d in plan.space]
    jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id)))
    state = sweep.status
    if state == "active":
        pending = any(JobStatus(j.status).pending for j in jobs)
        state = "running" if pending or sweep.created < sweep.max_jobs else "done"
    report = SweepReport(
        sweep_id, sweep.method, state, sweep.max_jobs, sweep.eta, list(sweep.rungs or []), names
    )
    results = session.execute(
        select(Result.job_id, Result.split, Result.epoch, Result.accuracy).where(
            Result.job_id.in_([j.id for j in jobs])
        )
    ).all()
    pruned = {
        job_id: rung
        for job_id, rung in session.execute(
            select(RungDecision.job_id, RungDecision.rung).where(
                RungDecision.sweep_id == sweep_id, RungDecision.keep.is_(False)
            )
        )
    }
    for job in jobs:
        curve = {e: a for j, s, e, a in results if j == job.id and s == "validation"}
        tests = [(e, a) for j, s, e, a in results if j == job.id and s == "test"]
        report.trials.append(
            Trial(
                job_id=job.id,
                trial=job.trial,
                status=job.status,
                values={n: job.spec.get(n) for n in names},
                curve=dict(sorted(curve.items())),
                selected_epoch=job.selected_epoch,
                test_accuracy=tests[-1][1] if tests else None,
                train_seconds=job.train_seconds,
                epochs=int(job.spec.get("epochs") or 1),
                pruned_at=pruned.get(job.id),
            )
        )
    return report


def value_text(value: Any) -> str:
    """A searched value as a report cell or a message writes it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_lines(report: SweepReport) -> list[str]:
    """The sweep in a few lines: counts, the best configuration, the train time spent."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items()))
    stopping = (
        f"ASHA eta={report.eta} at epochs {','.join(map(str, report.rungs))}"
        if report.eta
        else "no early stopping"
    )
    lines = [
        f"sweep {report.sweep_id} ({report.method}, {stopping}, {report.status}): "
        f"{len(report.trials)} of {report.max_jobs} trials: {counts or 'none yet'}"
    ]
    best = report.best
    if best is not None:
        config = " ".join(f"{k}={value_text(v)}" for k, v in best.values.items())
        test = f", test {best.test_accuracy:.4f}" if best.test_accuracy is not None else ""
        lines.append(
            f"best: job {best.job_id}: {config}: validation {best.best_validation:.4f} "
            f"(epoch {best.selected_epoch}){test}"
        )
    full = report.full_seconds
    if full > 0:
        lines.append(
            f"train time {duration(report.spent_seconds)} of {duration(full)} had every trial "
            f"run to its last epoch ({100 * report.spent_seconds / full:.0f}%)"
        )
    return lines
