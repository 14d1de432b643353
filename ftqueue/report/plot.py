"""The report as an image: accuracy per configuration (bars), validation curves per epoch.

A plot never drops a configuration silently: each panel says how many of how many it shows,
orders its bars by the accuracy it draws, names that split, and writes each value on its bar.
matplotlib is imported on first use, with the Agg backend: no display, and no cost to the
commands that do not plot.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from ftqueue.core.text import printable, quote
from ftqueue.errors import FilterError
from ftqueue.report.build import Report
from ftqueue.report.options import CONFIG_COLUMNS
from ftqueue.report.query import ADAPTER, CurvePoint, Group

#: Image types by file suffix, as matplotlib names them.
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}
#: Most (model, dataset, split) panels in one figure; past that the figure is unreadable.
MAX_PANELS = 8
#: Curves drawn in colour, with a legend entry and a spread band; the others are thin grey.
HIGHLIGHT = 5
#: Characters per line of a bar's label and of a title (the panels are about 7 inches wide).
LABEL_WIDTH = 40
TITLE_WIDTH = 62
RUN_COLOR, ADAPTER_COLOR, OTHER_COLOR = "#4c72b0", "#dd8452", "#b0b0b0"

Curves = dict[tuple[str, str, tuple[Any, ...]], list[CurvePoint]]


def image_format(path: Path) -> str:
    """matplotlib's name for the image type a file suffix asks for, or FilterError."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise FilterError(
            f"--plot {quote(str(path))}: "
            f"{f'{suffix} is not an image type ftqueue draws' if suffix else 'no suffix'}: "
            f"end the file name in {', '.join(list(FORMATS)[:-1])} or {list(FORMATS)[-1]}",
            param="--plot",
        )
    return FORMATS[suffix]


def _labels(report: Report, groups: list[Group]) -> list[str]:
    """Name each bar by what differs between the bars, not by the whole configuration."""
    group_by = report.options.group_by
    configs = [report.config(g) for g in groups]
    names = group_by or tuple(
        k for k in CONFIG_COLUMNS if len({repr(c.get(k)) for c in configs}) > 1
    )
    if not names:  # one configuration: name it by its main values
        names = ("r", "alpha", "lr")
    labels = []
    for g, config in zip(groups, configs, strict=True):
        parts = []
        for name in names:
            value = config.get(name)
            value = ",".join(value) if isinstance(value, list) else value
            parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        label = " ".join(parts) or "configuration"
        labels.append(label + (" (adapter)" if g.source == ADAPTER else ""))
    return labels


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def figure(report: Report, curves: Curves) -> Any:
    """The matplotlib Figure: one row per (model, dataset, split), bars left, curves right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = {(r.model, r.dataset, r.split): r.base for r in report.rows}
    every = [w for w in dict.fromkeys(bases) if report.ranked.get(w)]
    panels = every[:MAX_PANELS]
    shown = {where: report.plotted(where) for where in panels}
    # A row is as tall as its bars need: 20 labelled bars do not fit in the height of 3.
    heights = [max(3.4, 1.9 + 0.34 * len(shown[w][0])) for w in panels] or [3.0]
    fig = plt.figure(figsize=(14, 0.4 + sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=(1.15, 1))
    if not panels:
        ax = fig.add_subplot(grid[0, :])
        ax.text(0.5, 0.5, "no LoRA results match", ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = report.names()
    if len(every) > len(panels):
        fig.suptitle(
            f"{len(panels)} of {len(every)} (model, dataset, split) rows shown: narrow the "
            "report with --model, --dataset or --split to see the others",
            fontsize=11,
        )
    for row, where in enumerate(panels):
        groups, total = shown[where]
        bars, lines = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        chosen = report.chosen.get(where)
        labels = [
            ("★ " if g.key == chosen else "") + label
            for g, label in zip(groups, _labels(report, groups), strict=True)
        ]
        # Names are user text: no control characters, and no `$` read as mathtext.
        title = printable(f"{names[where[0]]} on {names[where[1]]}").replace("$", r"\$")
        count = (
            f"{len(groups)} of {total} shown"
            if len(groups) < total
            else "the only configuration"
            if total == 1
            else f"all {total} configurations"
        )
        _bars(bars, report, where, groups, count, labels, bases[where], title)
        _curves(lines, curves, where, groups, labels, title, count)
    return fig


def _bars(
    ax: Any,
    report: Report,
    where: tuple[str, str, str],
    groups: list[Group],
    count: str,
    labels: list[str],
    base: Group | None,
    title: str,
) -> None:
    split = where[2]
    chosen = report.chosen.get(where)
    select_by = report.options.select_by
    y = list(range(len(groups)))[::-1]  # best at the top
    means = [g.accuracy.mean for g in groups]
    spread = [g.accuracy.std or 0.0 for g in groups]
    ax.barh(
        y,
        means,
        xerr=spread,
        color=[ADAPTER_COLOR if g.source == ADAPTER else RUN_COLOR for g in groups],
        edgecolor=["black" if g.key == chosen else "none" for g in groups],
        linewidth=1.5,
        capsize=3,
    )
    ticks = [
        _wrap(f"{label} (n={g.n})", LABEL_WIDTH) for label, g in zip(labels, groups, strict=True)
    ]
    ax.set_yticks(y, ticks)
    ax.tick_params(axis="y", labelsize=8)
    lows = [m - s for m, s in zip(means, spread, strict=True)]
    highs = [m + s for m, s in zip(means, spread, strict=True)]
    for g, top, at in zip(groups, highs, y, strict=True):
        std = g.accuracy.std
        value = f"{g.accuracy.mean:.4f}" + ("" if std is None else f" ± {std:.4f}")
        ax.annotate(
            value,
            (top, at),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            gid="value",
        )
    base_text = ""
    if base is not None:
        ax.axvline(base.accuracy.mean, color="black", linestyle="--", linewidth=1)
        if base.accuracy.std:
            std = base.accuracy.std
            ax.axvspan(base.accuracy.mean - std, base.accuracy.mean + std, color="grey", alpha=0.2)
        lows.append(base.accuracy.mean - (base.accuracy.std or 0.0))
        base_text = f"; dashed: base model {base.accuracy.mean:.4f}"
    # Zoom on the bars' range (a point of accuracy matters, the distance from 0 does not),
    # with room on the right for the values written after the bars.
    left = max(0.0, min(lows) - 0.02)
    right = max(highs + lows)
    ax.set_xlim(left, right + 0.32 * max(right - left, 0.01))
    ax.set_xlabel(f"{split} accuracy, mean ± std over seeds{base_text}", fontsize=9)
    order = f", best first by {split} accuracy" if len(groups) > 1 else ""
    star = ""
    if chosen is not None:
        star = f"; ★ the report's choice (by {report.chosen_by.get(where, select_by)})"
    ax.set_title(_wrap(f"{title}: {count}{order}{star}", TITLE_WIDTH), fontsize=10, loc="left")


def _curves(
    ax: Any,
    curves: Curves,
    where: tuple[str, str, str],
    groups: list[Group],
    labels: list[str],
    title: str,
    count: str,
) -> None:
    model, dataset, _ = where
    drawn: list[tuple[Group, str, list[CurvePoint]]] = []
    for group, label in zip(groups, labels, strict=True):
        points = curves.get((model, dataset, group.key)) if group.source != ADAPTER else None
        if points:
            drawn.append((group, label, points))
    if not drawn:
        ax.text(0.5, 0.5, "no validation results per epoch", ha="center", va="center")
        ax.set_axis_off()
        return
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    entries: list[tuple[int, Any, str]] = []
    # Grey first, so that the highlighted curves lie on top of them.
    for rank in range(len(drawn) - 1, -1, -1):
        group, label, points = drawn[rank]
        epochs = [p.epoch for p in points]
        means = [p.accuracy.mean for p in points]
        if rank >= HIGHLIGHT:
            [line] = ax.plot(epochs, means, color=OTHER_COLOR, linewidth=0.8, zorder=1)
            if rank == HIGHLIGHT:
                others = len(drawn) - HIGHLIGHT
                entries.append((rank, line, f"{others} other{'s' if others > 1 else ''}"))
            continue
        color = colors[rank % len(colors)]
        [line] = ax.plot(epochs, means, marker="o", color=color, zorder=3)
        entries.append((rank, line, _wrap(label, LABEL_WIDTH)))
        spread = [p.accuracy.std or 0.0 for p in points]
        lo = [m - s for m, s in zip(means, spread, strict=True)]
        hi = [m + s for m, s in zip(means, spread, strict=True)]
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.12, linewidth=0, zorder=2)
    epochs = sorted({p.epoch for _, _, points in drawn for p in points})
    if len(epochs) <= 12:
        ax.set_xticks(epochs)  # whole epochs, also when there is only one
        ax.set_xlim(epochs[0] - 0.25, epochs[-1] + 0.25)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("validation accuracy", fontsize=9)
    others = len(drawn) - HIGHLIGHT
    which = (
        f"the best {HIGHLIGHT} in colour, {others} other{'s' if others > 1 else ''} grey"
        if others > 0
        else "mean ± std over seeds"
    )
    ax.set_title(
        _wrap(f"{title}: validation accuracy per epoch of {count} ({which})", TITLE_WIDTH),
        fontsize=10,
        loc="left",
    )
    entries.sort(key=lambda e: e[0])  # best first, the grey ones last
    ax.legend([e[1] for e in entries], [e[2] for e in entries], fontsize=7, loc="best")


def render(fig: Any, fmt: str) -> bytes:
    """The figure as the bytes of an image file of type ``fmt`` (see FORMATS)."""
    out = io.BytesIO()
    options: dict[str, Any] = {"pil_kwargs": {"quality": 90}} if fmt == "jpeg" else {}
    fig.savefig(out, format=fmt, dpi=100, **options)
    return out.getvalue()


def close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_png(report: Report, curves: Curves) -> bytes:
    fig = figure(report, curves)
    try:
        return render(fig, "png")
    finally:
        close(fig)
