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

from ftqueue.core.confidence import interval_text
from ftqueue.core.states import JobStatus
from ftqueue.core.tables import Column, FitTable
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
    "to_html",
    "to_json",
    "to_markdown",
]


#: Hidden first when the terminal is narrow (lowest first): the cost, the trial's number, the
#: curve (its kept value is in "kept (ep), 95%"), then the test accuracy. The job, its status, the
#: searched values and the best validation accuracy always stay.
PRIORITY = {"train": 1, "trial": 2, "val. by epoch": 3, "test": 4}


def rich_table(report: SweepReport, width: int | None = None) -> Any:
    """The trials, one a row, drawn to the terminal's width (see ``ftqueue.core.tables``)."""
    columns = [
        Column("job", justify="right"),
        Column("trial", priority=PRIORITY["trial"], justify="right"),
        Column("status"),
        # Sweep-file keys and values are user text; lists break after their commas.
        *(Column(literal(name), wrap=True) for name in report.space),
        Column(
            f"val. {report.metric} by epoch",
            priority=PRIORITY["val. by epoch"],
            wrap=True,
            min_width=5,
        ),
        Column("kept (ep), 95%"),
        Column("test", priority=PRIORITY["test"], justify="right"),
        Column("train", priority=PRIORITY["train"], justify="right"),
    ]
    best = report.best
    rows = []
    for t in report.trials:
        curve = " ".join(f"{a:.3f}" for a in t.curve.values())
        top = _kept(t)
        mark = "[bold]" if best is not None and t.job_id == best.job_id else ""
        rows.append(
            [
                f"{mark}{t.job_id}",
                "" if t.trial is None else str(t.trial),
                t.status + (f" @{t.pruned_at}" if t.pruned_at else ""),
                *[literal(_value(t.values.get(n))) for n in report.space],
                curve,
                top,
                "" if t.test_accuracy is None else f"{t.test_accuracy:.4f}",
                duration(t.train_seconds),
            ]
        )
    return FitTable(
        columns,
        rows,
        title=literal(f"sweep {report.sweep_id}"),
        header_style="bold",
        width=width,
    )


def _kept(t: Trial) -> str:
    """The kept epoch's validation accuracy, its epoch and its 95% interval, in one cell."""
    if t.kept_validation is None:
        return ""
    interval = f"\n{interval_text(*t.interval)}" if t.interval else ""
    return f"{t.kept_validation:.4f} ({t.selected_epoch}){interval}"


def to_dict(report: SweepReport) -> dict[str, Any]:
    best, tie = report.choice
    return {
        "sweep_id": report.sweep_id,
        "method": report.method,
        "status": report.status,
        "metric": report.metric,
        "goal": report.goal,
        "eta": report.eta,
        "rungs": report.rungs,
        "rung_unit": report.rung_unit,
        "counts": report.counts,
        "best_job": best.job_id if best else None,
        "tied_with": tie[0] if tie else 0,
        "tie_rule": tie[1] if tie else None,
        "train_seconds": report.spent_seconds,
        "train_seconds_run_to_end": report.full_seconds,
        "trials": [
            {k: v for k, v in asdict(t).items() if k != "shape"}
            | {
                "best_validation": t.best_validation,
                "kept_validation": t.kept_validation,
                "kept_low": t.interval[0] if t.interval else None,
                "kept_high": t.interval[1] if t.interval else None,
                "full_seconds": t.full_seconds,
            }
            for t in report.trials
        ],
    }


def to_json(report: SweepReport) -> str:
    return json.dumps(to_dict(report), indent=2, default=str)


def to_csv(report: SweepReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "trial", "status", "pruned_at", *report.space, "best_validation",
                     "selected_epoch", "kept_validation", "kept_low", "kept_high",
                     "test_accuracy", "train_seconds"])  # fmt: skip
    for t in report.trials:
        low, high = t.interval or (None, None)
        writer.writerow(
            [t.job_id, t.trial, t.status, t.pruned_at or "",
             *[literal(_value(t.values.get(n))) for n in report.space],
             t.best_validation, t.selected_epoch, t.kept_validation, low, high,
             t.test_accuracy, t.train_seconds]
        )  # fmt: skip
    return out.getvalue()


def cells(report: SweepReport) -> tuple[list[str], list[list[str]]]:
    """Headers and plain-text cells of the trials, for Markdown and HTML."""
    headers = ["job", "trial", "status", *report.space, "val. by epoch", "kept (ep), 95%",
               "test", "train"]  # fmt: skip
    best = report.best
    rows = []
    for t in report.trials:
        mark = " (best)" if best is not None and t.job_id == best.job_id else ""
        rows.append(
            [f"{t.job_id}{mark}", "" if t.trial is None else str(t.trial),
             t.status + (f" @{t.pruned_at}" if t.pruned_at else ""),
             *[_value(t.values.get(n)) for n in report.space],
             " ".join(f"{a:.3f}" for a in t.curve.values()), _kept(t).replace("\n", " "),
             "" if t.test_accuracy is None else f"{t.test_accuracy:.4f}",
             duration(t.train_seconds)]
        )  # fmt: skip
    return headers, rows


def to_markdown(report: SweepReport) -> str:
    """The trials as a Markdown table, the summary lines under it; every cell escaped."""
    from ftqueue.report.render import markdown_cell

    headers, rows = cells(report)

    def line(values: list[str]) -> str:
        return "| " + " | ".join(markdown_cell(v) for v in values) + " |"

    rule = "|" + "|".join("---" for _ in headers) + "|"
    summary = [f"- {markdown_cell(text)}" for text in summary_lines(report)]
    return "\n".join([line(headers), rule, *map(line, rows), "", *summary]) + "\n"


def to_html(report: SweepReport, png: bytes | None) -> str:
    """One page with no outside references: summary, trials, and the plot as a data URL."""
    from ftqueue.report.render import html_page, html_text, png_img

    headers, rows = cells(report)
    head = "".join(f"<th>{html_text(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    summary = "".join(f"<li>{html_text(text)}</li>" for text in summary_lines(report))
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    image = png_img(png, f"validation {report.metric} per epoch")
    return html_page(f"ftqueue sweep {report.sweep_id}", f"<ul>{summary}</ul>", table, image)


def plot_png(report: SweepReport) -> bytes:
    """The sweep's validation metric per epoch for each trial: pruned ones dashed, rungs
    marked (those in epochs)."""
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
    for rung in report.rungs if report.rung_unit == "epoch" else ():
        ax.axvline(rung, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("epoch (dotted lines: rungs)" if report.rung_unit == "epoch" else "epoch")
    better = "higher" if report.goal == "max" else "lower"
    ax.set_ylabel(f"validation {report.metric} ({better} is better)")
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
