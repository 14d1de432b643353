"""`ftqueue report --sweep ID` for a sweep started from a sweep file: its trials, the pruned
ones, the best configuration, and the train time early stopping saved, as a table, JSON, CSV
or a plot. The numbers come from ftqueue/sweeps/summary.py, which notifications share.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from ftqueue.core.states import JobStatus
from ftqueue.core.text import duration, literal
from ftqueue.sweeps.summary import SweepReport, Trial, summary_lines, sweep_report
from ftqueue.sweeps.summary import value_text as _value

__all__ = [
    "SweepReport",
    "Trial",
    "plot_png",
    "rich_table",
    "summary_lines",
    "sweep_report",
    "to_csv",
    "to_dict",
    "to_json",
]


def rich_table(report: SweepReport) -> Any:
    from rich.table import Table

    table = Table(title=literal(f"sweep {report.sweep_id}"), header_style="bold")
    table.add_column("job", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("status", no_wrap=True)
    for name in report.space:
        table.add_column(literal(name))  # sweep-file keys and values are user text
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
            *[literal(_value(t.values.get(n))) for n in report.space],
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
             *[literal(_value(t.values.get(n))) for n in report.space],
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
