"""Report renderings: a terminal table, Markdown, CSV, JSON and a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any

from ftqueue.core.confidence import interval_text
from ftqueue.core.tables import KEEP, Column, FitTable
from ftqueue.core.text import duration, literal, printable
from ftqueue.report.build import Report, ReportRow
from ftqueue.report.query import ADAPTER, Group

#: What the configuration column shows; CSV and JSON carry every hyper-parameter.
SHOWN = ("r", "alpha", "dropout", "target_modules", "lr", "head_lr", "epochs", "batch_size")
BASE, LORA, CONFIG = "base acc / loss", "LoRA acc / loss", "best LoRA configuration"
NUMERIC = (BASE, LORA, "Δ points", "trainable", "train time")


def describe(report: Report) -> str:
    """One sentence saying what the rows are, for titles and captions."""
    opts = report.options
    spread = "low-high: 95% interval on the split's rows; mean ± sample std over seeds (n runs)"
    if opts.group_by:
        return f"LoRA runs grouped by {', '.join(opts.group_by)}; {spread}."
    return (
        f"Base model vs its best LoRA configuration (by mean kept-epoch {opts.select_by} "
        f"accuracy; ties broken by more seeds, then smaller r, fewer modules, lower lr); "
        f"{spread}."
    )


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _metrics(group: Group | None) -> list[str]:
    """Accuracy ± std on one line, its 95% interval on the next, then loss and n."""
    if group is None:
        return [""]
    acc = group.accuracy
    first = f"{acc.mean:.4f}" if acc.std is None else f"{acc.mean:.4f} ± {acc.std:.4f}"
    interval = group.interval
    bounds = [] if interval is None else [interval_text(*interval)]
    return [first, *bounds, f"loss {group.loss.mean:.4f}, n={group.n}"]


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
    if row.tie is not None:
        others = f"{row.tie.others} other{'s' if row.tie.others > 1 else ''}"
        lines.append(f"tie: {others} inside its interval; chosen by {row.tie.rule}")
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
#: Free text, broken at separators when the room is short; the configuration column keeps
#: this many characters in the full layout (else the narrow one is used) and in the narrow one.
WRAP = {"model": 8, "dataset": 8, STACKED["model"][0]: 8}
CONFIG_WIDTH = {"full": 30, "narrow": 16}
#: Hidden first when even the narrow layout is too wide: the cost, then the difference
#: (base and LoRA accuracies stay, so it can be read off them); the others always stay.
PRIORITY = {"trainable": 1, "train time": 1, STACKED["trainable"][0]: 1, "Δ points": 2}
PRIORITY |= {NARROW["Δ points"]: 2, "runs": 3}


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


def _columns(report: Report, headers: list[str], layout: str) -> list[Column]:
    group_by = report.options.group_by
    out = []
    for header in headers:
        right = header in NUMERIC or header in group_by
        right = right or header in NARROW.values() or header == STACKED["trainable"][0]
        config = CONFIG_WIDTH[layout] if header == CONFIG else None
        out.append(
            Column(
                literal(header),  # group-by names are whitelisted, but a header is never markup
                priority=PRIORITY.get(header, KEEP),
                justify="right" if right else "left",
                wrap=config is not None or header in WRAP or header in group_by,
                min_width=config or WRAP.get(header, 0),
            )
        )
    return out


def rich_table(report: Report, width: int | None = None) -> Any:
    """The report for the console it is printed on (no wider than ``width`` when given).

    The full layout where its configuration column can be given room, else the columns
    stacked (see ``_stack``), then without the cost and the difference, then one block per
    row (see ``ftqueue.core.tables``): no column cut off, no number broken across lines.
    """
    headers, rows = cells(report)
    narrow, stacked = _stack(headers, rows)
    return FitTable(
        _columns(report, headers, "full"),
        _literal_rows(rows),
        alternatives=[(_columns(report, narrow, "narrow"), _literal_rows(stacked))],
        title=literal(describe(report)),
        title_style="italic",
        header_style="bold",
        width=width,
    )


def _literal_rows(rows: list[list[list[str]]]) -> list[list[Any]]:
    # Model names and paths are free text: literal, so they print as they are.
    return [[[literal(line) for line in lines] for lines in row] for row in rows]


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


def html_text(value: str) -> str:
    """User text as HTML: control sequences written out, markup escaped."""
    return html.escape(printable(value))


_html = html_text


def html_page(title: str, intro: str, table: str, image: str) -> str:
    """One self-contained page: ``title`` as plain text; ``intro``, ``table`` and ``image`` as
    HTML already escaped by the caller."""
    heading = html_text(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; margin-top: 1.5em; }}
</style></head><body>
<h1>{heading}</h1>
{intro}
{table}
{image}
</body></html>
"""


def png_img(png: bytes | None, alt: str) -> str:
    """The plot as an ``<img>`` with a data URL (no outside reference), or nothing."""
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_html(report: Report, png: bytes | None) -> str:
    """One page with no outside references: the table, and the plot as a data URL."""
    headers, rows = cells(report)
    head = "".join(f"<th>{_html(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{'<br>'.join(map(_html, c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    intro = f"<p>{html.escape(describe(report))}</p>"
    return html_page("ftqueue report", intro, table, png_img(png, "accuracy per configuration"))
