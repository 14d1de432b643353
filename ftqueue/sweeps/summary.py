"""One sweep's outcome from the database: its trials, the best configuration, and the train
time early stopping saved. `ftqueue report --sweep` renders it (ftqueue/report/sweep.py), and
a notification of the sweep's end says it in the same words.

The time a trial would have cost run to the end is its own train time per trained epoch
times its epochs: an estimate from the same trial, on the same worker, not a second run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftqueue import kinds
from ftqueue.core.confidence import interval_text, tie_key, tie_rule, wilson
from ftqueue.core.objective import Objective, stopping_text
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
    #: The sweep's validation metric per epoch trained.
    curve: dict[int, float]
    selected_epoch: int | None
    test_accuracy: float | None
    train_seconds: float | None
    epochs: int
    #: The rung it stopped at, when pruned.
    pruned_at: float | None = None
    #: Rows of the validation split behind each accuracy of ``curve``.
    validation_examples: int | None = None
    #: What the tie rule reads of its spec: r, target_modules, lr.
    shape: dict[str, Any] = field(default_factory=dict)
    #: The sweep's validation metric, and its goal: ``max`` (higher is better) or ``min``.
    metric: str = "accuracy"
    goal: str = "max"
    #: The share of its planned training examples it trained on (None: not recorded).
    trained_share: float | None = None

    @property
    def best_validation(self) -> float | None:
        """The best value of the sweep's validation metric over its epochs (not necessarily
        the kept epoch's)."""
        return Objective(goal=self.goal).best(self.curve.values())

    @property
    def kept_validation(self) -> float | None:
        """The validation metric at the epoch it kept (the last, where it kept none)."""
        if not self.curve:
            return None
        if self.selected_epoch in self.curve:
            return self.curve[self.selected_epoch]
        return self.curve[max(self.curve)]

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of ``kept_validation``, where that is an accuracy (a
        proportion of the rows); None for macro-F1 and loss."""
        kept = self.kept_validation
        if kept is None or not self.validation_examples or self.metric != "accuracy":
            return None
        return wilson(kept, self.validation_examples)

    @property
    def full_seconds(self) -> float | None:
        """Its train time had it run all its epochs: its time over the share of its examples
        it trained on (per-epoch time x epochs where that share is not recorded)."""
        if self.train_seconds is None:
            return None
        if self.trained_share:
            return self.train_seconds / self.trained_share
        if not self.curve:
            return None
        return self.train_seconds * self.epochs / max(self.curve)


@dataclass
class SweepReport:
    sweep_id: str
    method: str
    status: str
    max_jobs: int
    eta: int | None
    rungs: list[float]
    space: list[str]
    trials: list[Trial] = field(default_factory=list)
    #: What the sweep optimises: a validation metric, max or min (ftqueue/core/objective.py).
    metric: str = "accuracy"
    goal: str = "max"
    rung_unit: str = "epoch"

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def best(self) -> Trial | None:
        """The finished trial chosen by the sweep's validation metric at its kept epoch
        (toward its goal), with the tie rule (``confidence``) among those inside the top one's
        interval where the metric is an accuracy (a proportion); test plays no part."""
        return self.choice[0]

    @property
    def tie(self) -> tuple[int, str] | None:
        """How many other trials are inside the chosen one's interval, and the rule that chose."""
        return self.choice[1]

    @property
    def choice(self) -> tuple[Trial | None, tuple[int, str] | None]:
        done = [t for t in self.trials if t.status == JobStatus.SUCCEEDED]
        scored = [(t.kept_validation, t) for t in done if t.kept_validation is not None]
        if not scored:
            return None, None
        sign = 1.0 if self.goal == "max" else -1.0
        _, top = max(scored, key=lambda vt: (sign * vt[0], -vt[1].job_id))
        interval = top.interval
        if interval is None:
            return top, None
        tied = [(v, t) for v, t in scored if v >= interval[0]]
        if len(tied) < 2:
            return top, None
        keyed = sorted((tie_key(1, t.shape, v, t.job_id), t.job_id) for v, t in tied)
        winner = next(t for _, t in tied if t.job_id == keyed[0][1])
        return winner, (len(tied) - 1, tie_rule(keyed[0][0], keyed[1][0]))

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
    kind = kinds.get(plan.kind)
    fields = dataclasses.fields(kind.spec_type) if kind is not None else ()
    defaults = {f.name: f.default for f in fields}
    jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id)))
    from ftqueue.sweeps.continuing import state as state_of

    state = state_of(sweep, any(JobStatus(j.status).pending for j in jobs))
    if sweep.problem:
        state = f"{state}: {sweep.problem}"
    report = SweepReport(
        sweep_id,
        sweep.method,
        state,
        sweep.max_jobs,
        sweep.eta,
        list(sweep.rungs or []),
        names,
        metric=plan.metric,
        goal=plan.goal,
        rung_unit=plan.rung_unit,
    )
    results = session.execute(
        select(
            Result.job_id,
            Result.split,
            Result.epoch,
            Result.accuracy,
            getattr(Result, plan.metric),
            Result.n_examples,
        ).where(Result.job_id.in_([j.id for j in jobs]))
    ).all()
    pruned = {
        job_id: int(rung) if float(rung).is_integer() else rung
        for job_id, rung in session.execute(
            select(RungDecision.job_id, RungDecision.rung).where(
                RungDecision.sweep_id == sweep_id, RungDecision.keep.is_(False)
            )
        )
    }
    for job in jobs:
        curve = {e: v for j, s, e, _, v, _ in results if j == job.id and s == "validation"}
        rows = [n for j, s, _, _, _, n in results if j == job.id and s == "validation"]
        # Test is reported as accuracy whatever the sweep searched.
        tests = [(e, a) for j, s, e, a, _, _ in results if j == job.id and s == "test"]
        report.trials.append(
            Trial(
                job_id=job.id,
                trial=job.trial,
                status=job.status,
                values={n: _trained(job, n, defaults) for n in names},
                curve=dict(sorted(curve.items())),
                selected_epoch=job.selected_epoch,
                test_accuracy=tests[-1][1] if tests else None,
                train_seconds=job.train_seconds,
                epochs=int(_trained(job, "epochs", defaults) or 1),
                pruned_at=pruned.get(job.id),
                validation_examples=min(rows) if rows else None,
                shape={k: job.spec.get(k) for k in ("r", "target_modules", "lr")},
                metric=plan.metric,
                goal=plan.goal,
                trained_share=_share(job.stats or {}),
            )
        )
    return report


def _trained(job: Job, name: str, defaults: dict[str, Any]) -> Any:
    """What a trial trained with: as recorded, else its spec's value, else the field's default
    (a field the stored spec leaves out at its default, such as ``grad_accum`` 1)."""
    used = job.trained_with or {}
    if used.get(name) is not None:
        return used[name]
    if name in job.spec:
        return job.spec[name]
    default = defaults.get(name)
    return None if default is dataclasses.MISSING else default


def _share(stats: dict[str, Any]) -> float | None:
    seen, planned = stats.get("train_examples"), stats.get("planned_examples")
    return seen / planned if seen and planned else None


def value_text(value: Any) -> str:
    """A searched value as a report cell or a message writes it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_lines(report: SweepReport) -> list[str]:
    """The sweep in a few lines: counts, the best configuration, the train time spent."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items()))
    stopping = stopping_text(report.eta, report.rung_unit, report.rungs)
    lines = [
        f"sweep {report.sweep_id} ({report.method}, {stopping}, {report.status}): "
        f"{len(report.trials)} of {report.max_jobs} trials: {counts or 'none yet'}"
    ]
    best, tie = report.choice
    if best is not None and best.kept_validation is not None:
        config = " ".join(f"{k}={value_text(v)}" for k, v in best.values.items())
        test = f", test {best.test_accuracy:.4f}" if best.test_accuracy is not None else ""
        interval = f" (95% {interval_text(*best.interval)})" if best.interval else ""
        lines.append(
            f"best: job {best.job_id}: {config}: validation {report.metric} "
            f"{best.kept_validation:.4f}{interval} (epoch {best.selected_epoch}){test}"
        )
        if tie is not None:
            others = f"{tie[0]} other trial{'s' if tie[0] > 1 else ''}"
            lines.append(
                f"a tie: {others} inside its 95% interval; chosen by {tie[1]} "
                "(rule: more seeds, then smaller r, fewer target modules, lower lr)"
            )
    full = report.full_seconds
    if full > 0:
        lines.append(
            f"train time {duration(report.spent_seconds)} of {duration(full)} had every trial "
            f"run to its last epoch ({100 * report.spent_seconds / full:.0f}%)"
        )
    return lines
