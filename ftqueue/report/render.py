"""Report renderings: a terminal table, Markdown, CSV, JSON and a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any

from ftqueue.core.text import duration, literal, printable
from ftqueue.report.build import Report, ReportRow
from ftqueue.report.query import ADAPTER, Group

#: What the configuration column shows; CSV and JSON carry every hyper-parameter.
SHOWN = ("r", "alpha", "dropout", "target_modules", "lr", "head_lr", "epochs", "batch_size")
BASE, LORA, CONFIG = "base acc / loss", "LoRA acc / loss", "best LoRA configuration"
NUMERIC = (BASE, LORA, "Δ points", "trainable", "train time")
MIN_WIDTH = {"model": 8, "dataset": 8, "split": 5, CONFIG: 16}


def describe(report: Report) -> str:
    """One sentence saying what the rows are, for titles and captions."""
    opts = report.options
    spread = "mean ± sample std over seeds (n runs)"
    if opts.group_by:
        return f"LoRA runs grouped by {', '.join(opts.group_by)}; {spread}."
    return (
        f"Base model vs its best LoRA configuration (by mean final-epoch {opts.select_by} "
        f"accuracy); {spread}."
    )


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _metrics(group: Group | None) -> list[str]:
    """Accuracy ± std on one line, loss and n on the next."""
    if group is None:
        return [""]
    acc = group.accuracy
    first = f"{acc.mean:.4f}" if acc.std is None else f"{acc.mean:.4f} ± {acc.std:.4f}"
    return [first, f"loss {group.loss.mean:.4f}, n={group.n}"]


def _config(row: ReportRow, select_by: str) -> list[str]:
    if row.lora is None:
        return ["(no LoRA runs)"]
    names = {"target_modules": "modules"}
    # An empty value is a default left to the device the job ran on (lora.DEVICE_DEFAULTS).
    lines = [" ".join(f"{names.get(k, k)}={_value(row.config.get(k)) or 'device'}" for k in SHOWN)]
    if row.lora.source == ADAPTER:
        lines.append(f"adapter trained on {row.trained_on}")
    if row.selected_by != select_by:
        lines.append(f"chosen by {row.selected_by}: no {select_by} results")
    return lines


def cells(report: Report) -> tuple[list[str], list[list[list[str]]]]:
    """Headers, and each cell as its lines: shared by the terminal, Markdown and HTML."""
    group_by = report.options.group_by
    # Adapter evaluations form their own groups; say which rows they are when there are any.
    sources = ["runs"] if any(r.lora and r.lora.source == ADAPTER for r in report.rows) else []
    if group_by:
        headers = ["model", "dataset", "split", *group_by, *sources, LORA, "Δ points", BASE]
    else:
        headers = ["model", "dataset", "split", BASE, CONFIG, LORA, "Δ points"]
    headers += ["trainable", "train time"]
    names = report.names()
    rows = []
    for row in report.rows:
        lora = row.lora
        share = lora.trainable_share if lora else None
        cell = {
            "model": [names[row.model]],
            "dataset": [names[row.dataset]],
            "split": [row.split],
            BASE: _metrics(row.base),
            LORA: _metrics(lora),
            "Δ points": ["" if row.delta_points is None else f"{row.delta_points:+.2f}"],
            "trainable": ["" if share is None else f"{100 * share:.3g}%"],
            "train time": [duration(lora.train_seconds) if lora else ""],
            CONFIG: _config(row, report.options.select_by),
            "runs": [("adapter eval" if lora.source == ADAPTER else "training") if lora else ""],
        }
        cell.update({name: [_value(row.config.get(name))] for name in group_by})
        rows.append([cell[h] for h in headers])
    return headers, rows


#: Narrow terminals: these columns stacked into one cell each, their lines one under another.
STACKED = {
    "model": ("model\ndataset\nsplit", ("model", "dataset", "split")),
    "trainable": ("trainable\ntime", ("trainable", "train time")),
}
#: Headers of the narrow layout, on two lines so that they are no wider than their numbers.
NARROW = {BASE: "base\nacc / loss", LORA: "LoRA\nacc / loss", "Δ points": "Δ\npoints"}
#: The columns of the narrow layout that wrap, and the share of the free width each gets.
FREE = {STACKED["model"][0]: 0.35, CONFIG: 0.65}


def _stack(
    headers: list[str], rows: list[list[list[str]]]
) -> tuple[list[str], list[list[list[str]]]]:
    """The same cells in fewer, narrower columns: model, dataset and split in one, the cost in
    one, and a metric's mean, spread, loss and n each on a line of its own."""
    merged = {part for _, parts in STACKED.values() for part in parts} - set(STACKED)
    kept = [h for h in headers if h not in merged]
    out_rows = []
    for row in rows:
        by_name = dict(zip(headers, row, strict=True))
        stacked = []
        for header in kept:
            lines = by_name[header]
            if header in STACKED:
                lines = [line for part in STACKED[header][1] for line in by_name[part]]
            elif header in (BASE, LORA):
                text = "\n".join(lines).replace(" ± ", "\n± ").replace(", n=", "\nn=")
                lines = text.split("\n")
            stacked.append(lines)
        out_rows.append(stacked)
    names = [STACKED[h][0] if h in STACKED else NARROW.get(h, h) for h in kept]
    return names, out_rows


#: The free-text columns of the full layout, and the share of the free width each gets.
FREE_WIDE = {CONFIG: 0.7, "dataset": 0.3}
#: The full layout only where its configuration column gets at least this many characters.
WIDE_CONFIG = 30


def _widths(
    headers: list[str], rows: list[list[list[str]]], width: int, free_share: dict[str, float]
) -> list[int]:
    """Column widths that add up to ``width`` with the borders: every other column as wide
    as its longest line, the free-text columns sharing what is left."""
    from rich.cells import cell_len

    natural = [
        max(cell_len(line) for line in [*header.split("\n"), *(ln for r in rows for ln in r[i])])
        for i, header in enumerate(headers)
    ]
    # Each column has a border on its left and one space of padding on either side.
    fixed = sum(n for h, n in zip(headers, natural, strict=True) if h not in free_share)
    free = width - 1 - 3 * len(headers) - fixed
    out = []
    for header, length in zip(headers, natural, strict=True):
        share = free_share.get(header)
        out.append(length if share is None else max(8, min(length, int(free * share))))
    # What one free column does not need, another may take.
    spare = free - sum(w for h, w in zip(headers, out, strict=True) if h in free_share)
    for i, header in enumerate(headers):
        if header in free_share and spare > 0:
            grow = min(spare, natural[i] - out[i])
            out[i] += grow
            spare -= grow
    return out


def rich_table(report: Report, width: int | None = None) -> Any:
    """The report for a terminal ``width`` columns wide (None: as wide as it needs).

    The full layout where its configuration column can be given room, else the columns
    stacked (see ``_stack``); either way with widths that fit (see ``_widths``): no column
    cut off, no number broken across lines.
    """
    headers, rows = cells(report)
    if width is None:
        return _table(report, headers, rows)
    widths = _widths(headers, rows, width, FREE_WIDE)
    config = widths[headers.index(CONFIG)] if CONFIG in headers else WIDE_CONFIG
    if sum(widths) + 1 + 3 * len(headers) <= width and config >= WIDE_CONFIG:
        return _table(report, headers, rows, widths=widths)
    narrow, stacked = _stack(headers, rows)
    return _table(report, narrow, stacked, widths=_widths(narrow, stacked, width, FREE))


def _table(
    report: Report,
    headers: list[str],
    rows: list[list[list[str]]],
    *,
    widths: list[int] | None = None,
) -> Any:
    from rich.table import Table

    table = Table(title=describe(report), header_style="bold", title_justify="left")
    for i, header in enumerate(headers):
        right = header in NUMERIC or header in report.options.group_by
        right = right or header in NARROW.values() or header == STACKED["trainable"][0]
        # Let rich share the width, but never squeeze a column below a readable minimum.
        table.add_column(
            header,
            justify="right" if right else "left",
            overflow="fold",
            min_width=None if widths else MIN_WIDTH.get(header),
            width=widths[i] if widths else None,
        )
    for row in rows:
        # Model names and paths are free text: literal, so they print as they are.
        table.add_row(*(literal("\n".join(lines)) for lines in row))
    return table


def markdown_cell(value: str) -> str:
    """A value as one Markdown table cell: on one line, no raw HTML, pipes and backticks
    escaped, so a name can neither end the cell nor inject markup into the page."""
    text = " ".join(printable(value).splitlines())
    text = html.escape(text, quote=False)
    # Backslashes first: a name ending in one must not escape the pipe that closes its cell.
    text = text.replace("\\", "\\\\")
    return text.replace("|", "\\|").replace("`", "\\`")


def to_markdown(report: Report) -> str:
    headers, rows = cells(report)

    def line(values: list[str]) -> str:
        return "| " + " | ".join(markdown_cell(v) for v in values) + " |"

    rule = ["---:" if h in NUMERIC or h in report.options.group_by else "---" for h in headers]
    body = [line(["; ".join(lines) for lines in row]) for row in rows]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *body]) + "\n"


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=report.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.flat_rows())  # floats written by repr: they read back exactly
    return out.getvalue()


def to_json(report: Report) -> str:
    return json.dumps(report.flat_rows(), indent=2)


def _html(value: str) -> str:
    return html.escape(printable(value))


def to_html(report: Report, png: bytes | None) -> str:
    """One page with no outside references: the table, and the plot as a data URL."""
    headers, rows = cells(report)
    head = "".join(f"<th>{_html(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{'<br>'.join(map(_html, c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    image = ""
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        image = f'<img alt="accuracy per configuration" src="data:image/png;base64,{data}">'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ftqueue report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; margin-top: 1.5em; }}
</style></head><body>
<h1>ftqueue report</h1>
<p>{html.escape(describe(report))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{image}
</body></html>
"""
