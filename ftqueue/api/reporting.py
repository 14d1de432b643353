"""`report`: the base model against its LoRA runs, or a sweep's trials, ready to render."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftqueue.store import db

if TYPE_CHECKING:
    from ftqueue.report import Report
    from ftqueue.report.sweep import SweepReport


@dataclass(frozen=True)
class Reported:
    """A report to render: the sweep's own (``sweep``) or the comparison (``table`` with the
    validation ``curves`` a drawing needs), and the checked output paths asked for."""

    table: Report | None = None
    sweep: SweepReport | None = None
    curves: dict[Any, Any] = field(default_factory=dict)
    plot: Path | None = None
    html: Path | None = None


def report(
    *,
    models: Sequence[str] = (),
    datasets: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    tags: Sequence[str] = (),
    users: Sequence[str] = (),
    statuses: Sequence[str] = ("succeeded",),
    splits: Sequence[str] = ("test",),
    since: str | None = None,
    until: str | None = None,
    where: Sequence[str] = (),
    group_by: Sequence[str] = (),
    select_by: str = "validation",
    sort: str | None = None,
    descending: bool | None = None,
    plot_top: int | None = None,
    plot: Path | None = None,
    html: Path | None = None,
) -> Reported:
    """The report the filters ask for; one sweep alone (``sweeps``, no other filter or
    grouping) gets its own.

    Filters are text as typed (times, ``COLUMN OP VALUE``, comma lists); ``plot`` and ``html``
    are checked writable, and the plot's format known, before any query.
    """
    from ftqueue.inputs.pinning import stored_dataset, stored_model
    from ftqueue.report import ReportOptions, build_report, validation_curves
    from ftqueue.report.options import check_output
    from ftqueue.report.plot import image_format

    # Local files and directories are stored as absolute paths: match them however named.
    opts = ReportOptions.from_text(
        models=tuple(map(stored_model, models)),
        datasets=tuple(map(stored_dataset, datasets)),
        sweeps=tuple(sweeps),
        tags=tuple(tags),
        users=tuple(users),
        statuses=tuple(statuses),
        splits=tuple(splits),
        since=since,
        until=until,
        where=where,
        group_by=group_by,
        select_by=select_by,
        sort=sort,
        descending=descending,
        plot_top=plot_top,
    )
    plot_file = check_output(plot, "--plot")
    html_file = check_output(html, "--html")
    drawing = plot_file is not None or html_file is not None
    if plot_file is not None:
        image_format(plot_file)  # an unknown suffix is refused before any work
    db.ensure_ready()
    if opts.sweeps:
        _check_sweeps(opts.sweeps)
    if len(opts.sweeps) == 1:
        found = sweep_report(sweep_id=opts.sweeps[0])
        if found is not None:
            given = {
                "--model": bool(models),
                "--dataset": bool(datasets),
                "--tag": bool(tags),
                "--user": bool(users),
                "--status": tuple(statuses) != ("succeeded",),
                "--split": tuple(splits) != ("test",),
                "--since": since is not None,
                "--until": until is not None,
                "--where": bool(where),
                "--group-by": bool(group_by),
                "--select-by": select_by != "validation",
                "--sort": sort is not None,
                "--desc/--asc": descending is not None,
                "--top": plot_top is not None,
            }
            _refuse_for_sweep(found.sweep_id, [flag for flag, on in given.items() if on])
            return Reported(sweep=found, plot=plot_file, html=html_file)
    with db.session_scope() as session:
        table = build_report(session, opts, plotting=drawing)
        curves = validation_curves(session, opts, opts.group_by) if drawing else {}
    return Reported(table=table, curves=curves, plot=plot_file, html=html_file)


def _check_sweeps(names: Sequence[str]) -> None:
    """Refuse a --sweep that no sweep and no job has, naming the latest ones."""
    from ftqueue.core.text import quote
    from ftqueue.errors import FilterError
    from ftqueue.report.query import recent_sweeps, unknown_sweeps

    with db.session_scope() as session:
        unknown = unknown_sweeps(session, names)
        if not unknown:
            return
        recent = recent_sweeps(session)
    known = f"the latest: {', '.join(map(quote, recent))}" if recent else "there are none yet"
    raise FilterError(
        f"--sweep {quote(unknown[0])}: no sweep has this name ({known}); "
        "`ftqueue list --sweep NAME` lists a sweep's jobs",
        param="--sweep",
    )


def _refuse_for_sweep(sweep_id: str, flags: Sequence[str]) -> None:
    """Options of the comparison that a sweep's own report (one row per trial) has no use for."""
    from ftqueue.core.text import quote
    from ftqueue.errors import FilterError

    if flags:
        raise FilterError(
            f"{flags[0]} does not apply to the report of sweep {quote(sweep_id)}, which lists "
            f"its trials (one row each, chosen by validation at the kept epoch): drop {flags[0]}",
            param=flags[0],
        )


def sweep_report(*, sweep_id: str) -> SweepReport | None:
    """The report of a sweep started by `ftqueue sweep`: trials, pruned ones, time saved;
    None when no sweep has this id."""
    from ftqueue.report import sweep

    db.ensure_ready()
    with db.session_scope() as session:
        return sweep.sweep_report(session, sweep_id)
