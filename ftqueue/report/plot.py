"""The report as a PNG: accuracy per configuration with error bars, validation curves per epoch.

matplotlib is imported on first use, with the Agg backend: no display, and no cost to the
commands that do not plot.
"""

from __future__ import annotations

import io
from typing import Any

from ftqueue.report.build import Report
from ftqueue.report.options import CONFIG_COLUMNS
from ftqueue.report.query import ADAPTER, CurvePoint, Group

#: Most (model, dataset, split) panels in one figure; past that the figure is unreadable.
MAX_PANELS = 8
CURVES_PER_PANEL = 5


def _labels(report: Report, groups: list[Group]) -> list[str]:
    """Name each bar by what differs between the bars, not by the whole configuration."""
    group_by = report.options.group_by
    configs = [report.config(g) for g in groups]
    names = group_by or tuple(
        k for k in CONFIG_COLUMNS if len({repr(c.get(k)) for c in configs}) > 1
    )
    labels = []
    for g, config in zip(groups, configs, strict=True):
        parts = []
        for name in names:
            value = config.get(name)
            value = ",".join(value) if isinstance(value, list) else value
            parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        label = " ".join(parts) or "configuration"
        labels.append(label + (" (adapter)" if g.source == "adapter" else ""))
    return labels


def plot_png(
    report: Report, curves: dict[tuple[str, str, tuple[Any, ...]], list[CurvePoint]]
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = {(r.model, r.dataset, r.split): r.base for r in report.rows}
    panels = [w for w in dict.fromkeys(bases) if report.ranked.get(w)][:MAX_PANELS]
    top = report.options.plot_top
    fig, axes = plt.subplots(
        max(1, len(panels)), 2, figsize=(14, 1.2 + 3.4 * max(1, len(panels))), squeeze=False
    )
    if not panels:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no LoRA results match", ha="center", va="center")
            ax.set_axis_off()
    for (bars, lines), where in zip(axes, panels, strict=False):
        model, dataset, split = where
        groups = report.ranked[where][:top]
        labels = _labels(report, groups)
        y = list(range(len(groups)))[::-1]
        bars.barh(
            y,
            [g.accuracy.mean for g in groups],
            xerr=[g.accuracy.std or 0.0 for g in groups],
            color=["#dd8452" if g.source == ADAPTER else "#4c72b0" for g in groups],
            capsize=3,
        )
        bars.set_yticks(y, [f"{label} (n={g.n})" for label, g in zip(labels, groups, strict=True)])
        bars.tick_params(axis="y", labelsize=8)
        base = bases[where]
        if base is not None:
            bars.axvline(base.accuracy.mean, color="black", linestyle="--", label="base model")
            if base.accuracy.std:
                lo, hi = (
                    base.accuracy.mean - base.accuracy.std,
                    base.accuracy.mean + base.accuracy.std,
                )
                bars.axvspan(lo, hi, color="grey", alpha=0.2)
            bars.legend(loc="lower right", fontsize=8)
        # Zoom on the bars' range: differences of a point matter, the distance from 0 does not.
        lows = [g.accuracy.mean - (g.accuracy.std or 0.0) for g in groups]
        if base is not None:
            lows.append(base.accuracy.mean - (base.accuracy.std or 0.0))
        bars.set_xlim(left=max(0.0, min(lows) - 0.05))
        bars.set_xlabel(f"{split} accuracy (mean ± std over seeds)")
        bars.set_title(f"{model} on {dataset}", fontsize=10)
        _curves(lines, curves, model, dataset, groups, labels)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def _curves(
    ax: Any,
    curves: dict[tuple[str, str, tuple[Any, ...]], list[CurvePoint]],
    model: str,
    dataset: str,
    groups: list[Group],
    labels: list[str],
) -> None:
    drawn = 0
    for group, label in zip(groups, labels, strict=True):
        points = curves.get((model, dataset, group.key)) if group.source != ADAPTER else None
        if not points or drawn >= CURVES_PER_PANEL:
            continue
        epochs = [p.epoch for p in points]
        means = [p.accuracy.mean for p in points]
        spread = [p.accuracy.std or 0.0 for p in points]
        ax.plot(epochs, means, marker="o", label=label)
        lo = [m - s for m, s in zip(means, spread, strict=True)]
        hi = [m + s for m, s in zip(means, spread, strict=True)]
        ax.fill_between(epochs, lo, hi, alpha=0.15)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no validation results per epoch", ha="center", va="center")
        ax.set_axis_off()
        return
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{model} on {dataset}: validation accuracy per epoch", fontsize=10)
    ax.legend(fontsize=7)
