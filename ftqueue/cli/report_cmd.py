"""`ftqueue report` (base model against its LoRA runs) and `ftqueue show` (one job, all of it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ftqueue.cli.common import JOB_ID, console, echo_json, json_option
from ftqueue.cli.render import Job, job_details, key_values, when
from ftqueue.core.files import write_bytes_atomic
from ftqueue.core.states import STATUSES
from ftqueue.core.text import duration, literal, printable
from ftqueue.specs import SPLITS

if TYPE_CHECKING:
    from ftqueue.report.sweep import SweepReport


@click.command("report")
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable).")
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    help="Only LoRA runs of this sweep. One sweep alone (from `ftqueue sweep` or a submitted "
    "grid) gets its own report: trials, pruned ones, the best configuration, train time "
    "saved; with another filter or --group-by, the comparison of its runs.",
)
@click.option("--tag", "tags", multiple=True, help="Only LoRA runs with this tag (all must match).")
@click.option(
    "--user",
    "users",
    multiple=True,
    help="Only LoRA runs this user submitted (FTQUEUE_USER, or their login name; repeatable).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Count jobs in this status (repeatable)  [default: succeeded]",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only LoRA runs created since: 2025-05-01, 2025-05-01T13:00, or 30m/12h/2d/1w.",
)
@click.option("--until", metavar="WHEN", help="Only LoRA runs created before (same forms).")
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(SPLITS),
    help="Split to report (repeatable)  [default: test]",
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="EXPR",
    help="COLUMN OP VALUE, OP one of = != < <= > >=, on a hyper-parameter (r, alpha, "
    "dropout, lr, head_lr, epochs, batch_size, max_length, pooling, target_modules, "
    "seed, ...) or a row metric (accuracy, loss, delta, n, train_time, ...). "
    "Repeatable: all must hold.",
)
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    metavar="COLS",
    help="One row per distinct value of these hyper-parameters, e.g. r,lr.",
)
@click.option(
    "--select-by",
    type=click.Choice(("validation", "test")),
    default="validation",
    show_default=True,
    help="Split whose mean accuracy picks the best configuration.",
)
@click.option(
    "--sort",
    metavar="KEY",
    help="Sort rows by accuracy, loss, delta, n, train_time, trainable_share, "
    "base_accuracy, model, dataset or a hyper-parameter.",
)
@click.option(
    "--desc/--asc",
    "descending",
    default=None,
    help="Sort direction  [default: best first: descending for accuracy, delta and n]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "markdown", "csv", "json")),
    default="table",
    show_default=True,
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON, for scripts (same as --format json)."
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also draw accuracy per configuration and validation curves to this image "
    "(.png, .jpg, .svg or .pdf).",
)
@click.option(
    "--top",
    "plot_top",
    type=click.IntRange(1, 40),
    metavar="N",
    help="The plot shows the N best configurations per panel (and the one the table chose), "
    "saying 'N of M shown'  [default: all of them, up to 40]",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also write a self-contained HTML page with the table and the plot.",
)
def report_cmd(
    fmt: str,
    as_json: bool,
    plot: Path | None,
    html_path: Path | None,
    statuses: tuple[str, ...],
    splits: tuple[str, ...],
    **filters: Any,
) -> None:
    """Compare each base model with its LoRA runs: accuracy, loss, spread over seeds.

    One row per model, dataset and split: the base model (evaluate jobs without an adapter)
    and the best LoRA configuration. A configuration is a spec without its seed; its runs
    give the mean, the sample standard deviation and n. Each run counts at the epoch it kept
    (the epoch whose adapter it saved and tested: a later epoch replaces an earlier one only
    when its validation accuracy lies above the earlier one's 95% interval). The best
    configuration is chosen by mean validation accuracy at the kept epoch, so the test split
    plays no part in the choice (--select-by test overrides that). Accuracies carry a 95%
    Wilson interval on the rows of their split, low-high. Configurations whose accuracy
    lies inside the best one's interval are tied with it; the tie goes to more seeds, then
    the simpler configuration (smaller r, then fewer target modules, then lower lr), then the
    higher accuracy, and the report names the rule that chose. An adapter evaluated with
    `submit evaluate --adapter-job` counts as a LoRA run on the dataset it was evaluated on.
    Δ points is 100 x (LoRA accuracy - base accuracy). Filters on sweep, tag, user, time and
    hyper-parameters pick the LoRA runs; the base model is compared with all its
    evaluations. With one sweep started by `ftqueue sweep`, the report lists its trials:
    --format, --json, --plot and --html apply, other options are refused.

    \b
    Examples:
      ftqueue report
      ftqueue report --model minilm --split validation --split test --format markdown
      ftqueue report --sweep 7f3a9c --group-by r,lr --sort accuracy
      ftqueue report --sweep demo-sweep --plot rungs.png      # a `ftqueue sweep`
      ftqueue report --where 'r>=16' --where 'accuracy>0.8' --format csv > runs.csv
      ftqueue report --json | jq '.[0]'
      ftqueue report --since 2d --plot report.png --html report.html
      ftqueue report --user alice --user bob
      ftqueue report --group-by r,lr --plot grid.jpg --top 10
    """
    from ftqueue import api
    from ftqueue.report import render

    if as_json:
        if fmt not in ("table", "json"):
            raise click.BadParameter(
                f"conflicts with --format {fmt}: give one of them (--json is --format json)",
                param_hint="--json",
            )
        fmt = "json"
    reported = api.report(
        statuses=statuses or ("succeeded",),
        splits=splits or ("test",),
        plot=plot,
        html=html_path,
        **filters,
    )
    if reported.sweep is not None:
        _sweep_report(reported.sweep, fmt, reported.plot, reported.html)
        return
    report = reported.table
    assert report is not None, "a report that is no sweep's is a table"
    plot_file, html_file = reported.plot, reported.html
    drawing = plot_file is not None or html_file is not None
    if fmt == "json":
        click.echo(render.to_json(report))
    elif fmt == "csv":
        click.echo(render.to_csv(report), nl=False)
    elif not report.rows:
        click.echo("No results match. `ftqueue list --status succeeded` shows the finished jobs.")
    elif fmt == "markdown":
        click.echo(render.to_markdown(report), nl=False)
    else:
        out = console()
        out.print(render.rich_table(report, out.width))
    if not drawing:
        return
    from ftqueue.report import plot as plotting

    fig = plotting.figure(report, reported.curves)
    try:
        png = None
        if plot_file is not None:
            fmt = plotting.image_format(plot_file)
            image = plotting.render(fig, fmt)
            png = image if fmt == "png" else None
            write_bytes_atomic(plot_file, image)
            click.echo(f"wrote {printable(plot_file)}", err=True)
        if html_file is not None:
            page = render.to_html(report, png or plotting.render(fig, "png"))
            write_bytes_atomic(html_file, page.encode("utf-8"))
            click.echo(f"wrote {printable(html_file)}", err=True)
    finally:
        plotting.close(fig)


def _sweep_report(
    report: SweepReport, fmt: str, plot_file: Path | None, html_file: Path | None
) -> None:
    """Print the report of a sweep started by `ftqueue sweep`, and write its files."""
    from ftqueue.report import sweep

    if fmt == "json":
        click.echo(sweep.to_json(report))
    elif fmt == "csv":
        click.echo(sweep.to_csv(report), nl=False)
    elif fmt == "markdown":
        click.echo(sweep.to_markdown(report), nl=False)
    else:
        out = console()
        out.print(sweep.rich_table(report))
        for line in sweep.summary_lines(report):
            out.print(literal(line))
    png = sweep.plot_png(report) if plot_file or html_file else None
    if plot_file is not None and png is not None:
        write_bytes_atomic(plot_file, png)
        click.echo(f"wrote {printable(plot_file)}", err=True)
    if html_file is not None:
        write_bytes_atomic(html_file, sweep.to_html(report, png).encode("utf-8"))
        click.echo(f"wrote {printable(html_file)}", err=True)


@click.command("show")
@click.argument("job_id", type=JOB_ID)
@json_option
def show_cmd(job_id: int, as_json: bool) -> None:
    """Show everything about one job: spec, status history, results per epoch, timings, error.

    \b
    Examples:
      ftqueue show 12
      ftqueue show 12 --json | jq '.results[] | select(.split == "validation")'
    """
    from ftqueue import api

    job = api.job(job_id, detail=True)
    if as_json:
        echo_json(job)
        return
    out = console()
    out.print(job_details(job))
    for table in _show_tables(job):
        out.print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted keys (data.dataset, phase_seconds.train), values as text."""
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            out.append((prefix + key, ",".join(map(str, value))))
        elif isinstance(value, float):
            out.append((prefix + key, f"{value:.6g}"))
        else:
            out.append((prefix + key, "" if value is None else str(value)))
    return out


def _spec_rows(job: Job) -> list[tuple[str, str]]:
    """The spec, with the values the job trained with where it left them to the device, and
    those it recorded beyond the spec (a field the spec leaves out at its default)."""
    spec, used = job["spec"], job.get("trained_with") or {}
    rows = []
    for key, value in _flatten(spec):
        if spec.get(key, "") is None and used.get(key) is not None:
            value = f"{_flatten({key: used[key]})[0][1]} (chosen for the device)"
        rows.append((key, value))
    rows += _flatten({k: v for k, v in used.items() if k not in spec})
    return rows


def _show_tables(job: Job) -> list[Any]:
    from ftqueue.core.tables import KEEP, Column, FitTable

    tables = [_pairs("spec", _spec_rows(job))]
    if job["events"]:
        history = [
            [
                f"{when(e['at']):%Y-%m-%d %H:%M:%S}",
                e["status"],
                str(e["attempt"]),
                literal(e["worker"] or ""),
                literal(e["detail"] or ""),
            ]
            for e in job["events"]
        ]
        columns = [
            Column("at", wrap=True),  # the time goes under the date on a narrow terminal
            Column("status"),
            Column("attempt", priority=1, justify="right"),
            Column("worker", priority=2, wrap=True),
            Column("detail", wrap=True, min_width=20),
        ]
        tables.append(
            FitTable(
                columns, history, title="status history", title_justify="left", header_style="bold"
            )
        )
    if job["results"]:
        results = [
            [
                literal(r["split"]),
                str(r["epoch"]),
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                f"{r['loss']:.4f}",
                str(r["n_examples"]),
                str(r["attempt"]),
            ]
            for r in job["results"]
        ]
        priority = {"attempt": 1, "examples": 2, "macro F1": 3}
        columns = [
            Column(
                name,
                priority=priority.get(name, KEEP),
                justify="left" if name == "split" else "right",
                wrap=name == "split",
            )
            for name in ("split", "epoch", "accuracy", "macro F1", "loss", "examples", "attempt")
        ]
        tables.append(
            FitTable(columns, results, title="results", title_justify="left", header_style="bold")
        )
    timings = []
    queued, started, finished = (when(job[k]) for k in ("queued_at", "started_at", "finished_at"))
    if queued and started:
        timings.append(("queued for", duration((started - queued).total_seconds())))
    if job["train_seconds"] is not None:
        timings.append(("training", duration(job["train_seconds"])))
    if finished:
        timings.append(("finished", f"{finished:%Y-%m-%d %H:%M:%S} UTC"))
    trainable, total = job["trainable_params"], job["total_params"]
    if trainable and total:
        share = 100 * trainable / total
        timings.append(("trainable", f"{trainable:,} of {total:,} params ({share:.3g}%)"))
    if timings:
        tables.append(_pairs("timings", timings))
    if job["stats"]:
        tables.append(_pairs("stats", _flatten(job["stats"])))
    return tables


def _pairs(title: str, rows: list[tuple[str, str]]) -> Any:
    # Free text on both sides: no rich markup.
    return key_values(
        [(literal(k), literal(v)) for k, v in rows],
        title=title,
        title_justify="left",
        show_header=False,
    )
