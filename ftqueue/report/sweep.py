"""`ftqueue report --sweep ID` for a sweep started from a sweep file: its trials, the pruned
ones, the best configuration, and the train time early stopping saved.

The time a trial would have cost run to the end is its own train time per trained epoch
times its epochs: an estimate from the same trial, on the same worker, not a second run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftqueue.core.states import JobStatus
from ftqueue.core.text import duration
from ftqueue.store.schema import Job, Result, RungDecision, Sweep
from ftqueue.sweeps.sweepfile import SweepPlan


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


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_lines(report: SweepReport) -> list[str]:
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
        config = " ".join(f"{k}={_value(v)}" for k, v in best.values.items())
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


def rich_table(report: SweepReport) -> Any:
    from rich.table import Table

    table = Table(title=f"sweep {report.sweep_id}", header_style="bold")
    table.add_column("job", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("status", no_wrap=True)
    for name in report.space:
        table.add_column(name)
    table.add_column("val. by epoch")
    table.add_column("best (ep)", no_wrap=True)
    table.add_column("test", justify="right")
    table.add_column("train", justify="right")
    best = report.best
    for t in report.trials:
        curve = " ".join(f"{a:.3f}" for a in t.curve.values())
        top = (
            f"{t.best_validation:.4f} ({t.selected_epoch})" if t.best_validation is not None else ""
        )
        mark = "[bold]" if best is not None and t.job_id == best.job_id else ""
        table.add_row(
            f"{mark}{t.job_id}",
            "" if t.trial is None else str(t.trial),
            t.status + (f" @{t.pruned_at}" if t.pruned_at else ""),
            *[_value(t.values.get(n)) for n in report.space],
            curve,
            top,
            "" if t.test_accuracy is None else f"{t.test_accuracy:.4f}",
            duration(t.train_seconds),
        )
    return table


def to_dict(report: SweepReport) -> dict[str, Any]:
    best = report.best
    return {
        "sweep_id": report.sweep_id,
        "method": report.method,
        "status": report.status,
        "eta": report.eta,
        "rungs": report.rungs,
        "counts": report.counts,
        "best_job": best.job_id if best else None,
        "train_seconds": report.spent_seconds,
        "train_seconds_run_to_end": report.full_seconds,
        "trials": [
            asdict(t) | {"best_validation": t.best_validation, "full_seconds": t.full_seconds}
            for t in report.trials
        ],
    }


def to_json(report: SweepReport) -> str:
    return json.dumps(to_dict(report), indent=2, default=str)


def to_csv(report: SweepReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "trial", "status", "pruned_at", *report.space, "best_validation",
                     "selected_epoch", "test_accuracy", "train_seconds"])  # fmt: skip
    for t in report.trials:
        writer.writerow(
            [t.job_id, t.trial, t.status, t.pruned_at or "",
             *[_value(t.values.get(n)) for n in report.space],
             t.best_validation, t.selected_epoch, t.test_accuracy, t.train_seconds]
        )  # fmt: skip
    return out.getvalue()


def plot_png(report: SweepReport) -> bytes:
    """Validation accuracy per epoch for each trial: pruned ones dashed, rungs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    best = report.best
    for t in report.trials:
        if not t.curve:
            continue
        epochs, values = list(t.curve), list(t.curve.values())
        is_best = best is not None and t.job_id == best.job_id
        style = "--" if t.status == JobStatus.PRUNED else "-"
        ax.plot(
            epochs,
            values,
            style,
            marker="o",
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.6,
            label=f"job {t.job_id} (best)" if is_best else None,
        )
    last = max((max(t.curve) for t in report.trials if t.curve), default=1)
    ax.set_xticks(range(1, last + 1))
    for rung in report.rungs:
        ax.axvline(rung, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("epoch (dotted lines: rungs)")
    ax.set_ylabel("validation accuracy")
    counts = report.counts
    ax.set_title(
        f"sweep {report.sweep_id}: {len(report.trials)} trials, "
        f"{counts.get(JobStatus.PRUNED, 0)} pruned (dashed)"
    )
    if best is not None:
        ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
