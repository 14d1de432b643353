"""The report's SQL: runs grouped by configuration (or chosen hyper-parameters) per split.

The database does the heavy part (one GROUP BY over results joined to jobs), returning sums
from which Python derives means and standard deviations for a few thousand groups at most.
Every value from the user is a bound parameter; column names and operators come from the
whitelists in ``options``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Float,
    Select,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.orm import Session, aliased

from ftqueue.core.confidence import wilson
from ftqueue.kinds import ADAPTER_FIELD, Role, with_role
from ftqueue.report.options import HYPERPARAMS, OPERATORS, Column, Condition, ReportOptions
from ftqueue.store.schema import Job, JobTag, ReportSummary, Result, Sweep
from ftqueue.store.summary import KEPT_FIRST

#: ``Group.source`` of the base line; runs have their kind's name, adapter evaluations ADAPTER.
BASE = "base"
ADAPTER = "adapter"


@dataclass(slots=True)
class Stat:
    """Mean and sample standard deviation (None for a single run) of one metric."""

    mean: float
    std: float | None
    lo: float
    hi: float

    @classmethod
    def from_sums(cls, n: int, total: float, squares: float, lo: float, hi: float) -> Stat:
        mean = total / n
        if n < 2:
            return cls(mean, None, lo, hi)
        if lo == hi:  # identical runs: exactly 0, not the rounding noise of the sums below
            return cls(mean, 0.0, lo, hi)
        # Sum of squares minus n*mean^2 loses a few digits to cancellation; metrics here are
        # O(1) with spreads above 1e-6, which leaves far more precision than is ever shown.
        variance = max(0.0, (squares - total * total / n) / (n - 1))
        return cls(mean, math.sqrt(variance), lo, hi)


@dataclass(slots=True)
class Group:
    """Runs sharing a configuration (or the --group-by values) on one model, dataset, split."""

    model: str
    dataset: str
    split: str
    #: ``base`` (a bare model), a run kind's name (a training run, ``lora``) or ``adapter``
    #: (an adapter evaluated).
    source: str
    key: tuple[Any, ...]
    n: int
    accuracy: Stat
    loss: Stat
    train_seconds: float | None
    trainable_share: float | None
    first_job: int
    #: Rows of the split behind each run's accuracy (the fewest, when runs differ).
    examples: int | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of the mean accuracy on ``examples`` rows."""
        if not self.examples:
            return None
        return wilson(self.accuracy.mean, self.examples)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _typed(value: Any, column: Column) -> ColumnElement[Any]:
    if column.kind == "number":
        return value.as_float()
    if column.kind == "modules":
        # SQLite returns a JSON list without spaces, PostgreSQL as stored; make them agree.
        return func.replace(value.as_string(), " ", "")
    return value.as_string()


def field(
    spec: ColumnElement[Any], column: Column, used: ColumnElement[Any] | None = None
) -> ColumnElement[Any]:
    """A hyper-parameter of a run, typed the same way on SQLite and PostgreSQL: the value it
    trained with (``used``: its ``trained_with``, where recorded), else its spec's, else the
    field's value when a spec leaves it out."""
    top = len(column.path) == 1
    value = _typed(spec[column.path[0] if top else column.path], column)
    choices = [value]
    if used is not None and top:
        choices.insert(0, _typed(used[column.name], column))
    if column.absent is not None:
        choices.append(literal(column.absent))
    return choices[0] if len(choices) == 1 else func.coalesce(*choices)


def modules_text(modules: Sequence[str]) -> str:
    """target_modules the way ``field`` renders them, for comparing and grouping."""
    return "[" + ",".join(f'"{m}"' for m in modules) + "]"


def tune(session: Session) -> None:
    """Settings for one analytic read on PostgreSQL, for this transaction only.

    JIT compilation costs about half a second, more than the query it would speed up, and
    the default 4 MB of work memory sends the sorts of 100,000 rows to disk.
    """
    if _dialect(session) == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))


def _condition(
    spec: ColumnElement[Any], used: ColumnElement[Any], cond: Condition
) -> ColumnElement[bool]:
    column = HYPERPARAMS[cond.column]
    value = cond.value
    if column.kind == "modules":
        assert isinstance(value, tuple)
        value = modules_text(value)
    # The operator functions build SQL expressions from columns; the value becomes a parameter.
    compare: Any = OPERATORS[cond.op]
    return compare(field(spec, column, used), value)


def _kept_metrics(splits: Sequence[str], jobs: Select[Any] | None) -> Subquery:
    """Per job, accuracy, loss and rows at the kept epoch of each split, side by side (a0, l0,
    e0, a1...).

    A LoRA run records validation after every epoch and keeps one (``jobs.selected_epoch``,
    the epoch whose adapter it saved and tested): the report reads that epoch's results, and
    the last epoch's where a job kept none (evaluations, runs recorded before it was kept).
    One row per job keeps the configuration key, the costly part, to one computation per job.
    """
    later = aliased(Result, name="later")

    def order(result: Any) -> ColumnElement[Any]:
        # The kept epoch above every other, then the later the better: one EXISTS, as cheap
        # as the plain "no later epoch" it replaces (a job has a few rows per split).
        return case((result.epoch == Job.selected_epoch, KEPT_FIRST), else_=result.epoch)

    superseded = (
        select(later.id)
        .where(
            later.job_id == Result.job_id,
            later.split == Result.split,
            order(later) > order(Result),
        )
        .exists()
    )
    columns = []
    for i, split in enumerate(splits):
        on_split = Result.split == split
        columns.append(func.max(case((on_split, Result.accuracy))).label(f"a{i}"))
        columns.append(func.max(case((on_split, Result.loss))).label(f"l{i}"))
        columns.append(func.max(case((on_split, Result.n_examples))).label(f"e{i}"))
    query = (
        select(Result.job_id, *columns)
        .join(Job, Job.id == Result.job_id)
        .where(Result.split.in_(splits), ~superseded)
    )
    if jobs is not None:
        query = query.where(Result.job_id.in_(jobs))
    return query.group_by(Result.job_id).subquery("metrics")


def _adapter_ref() -> ColumnElement[Any]:
    """The run an evaluation names (its spec's adapter_job), NULL for other jobs.

    Only evaluations name an adapter; not parsing the spec of every run saves time.
    """
    return case((Job.kind.in_(with_role(Role.EVALUATION)), Job.spec[ADAPTER_FIELD].as_integer()))


def _runs(
    session: Session,
    opts: ReportOptions,
    *,
    side: str,
    group_by: Sequence[str],
    splits: Sequence[str] = (),
) -> Select[Any]:
    """One row per run: its group key, and with ``splits`` its kept epoch's metrics on each.

    ``side`` is ``base`` (evaluations of a bare model) or ``runs`` (training runs and
    adapter evaluations, whose configuration is the adapter's training spec).
    """
    evaluations, runs = with_role(Role.EVALUATION), with_role(Role.RUN)
    adapter_ref = _adapter_ref()
    conditions: list[ColumnElement[bool]] = []
    if opts.models:
        conditions.append(Job.model.in_(opts.models))
    if opts.datasets:
        conditions.append(Job.dataset.in_(opts.datasets))
    if opts.statuses:
        conditions.append(Job.status.in_(opts.statuses))
    spec: ColumnElement[Any]
    used: ColumnElement[Any]
    config: ColumnElement[Any]
    trainable: ColumnElement[Any]
    total: ColumnElement[Any]
    seconds: ColumnElement[Any]
    query = select().select_from(Job)
    if side == BASE:
        spec = Job.spec.expression
        used = Job.trained_with.expression
        config = Job.config_hash.expression
        conditions += [Job.kind.in_(evaluations), adapter_ref.is_(None)]
        source: ColumnElement[str] = literal(BASE)
        trainable, total = Job.trainable_params.expression, Job.total_params.expression
        seconds = Job.train_seconds.expression
    else:
        # Only the jobs some evaluation names: joining all jobs would hash every spec.
        evaluated = select(adapter_ref).where(Job.kind.in_(evaluations)).scalar_subquery()
        adapter = aliased(Job, select(Job).where(Job.id.in_(evaluated)).subquery(), "adapter")
        query = query.outerjoin(adapter, adapter.id == adapter_ref)
        spec = func.coalesce(adapter.spec, Job.spec, type_=JSON)
        used = type_coerce(
            case((adapter.id.is_not(None), adapter.trained_with), else_=Job.trained_with), JSON
        )
        config = func.coalesce(adapter.config_hash, Job.config_hash)
        conditions.append(Job.kind.in_(runs) | adapter_ref.is_not(None))
        source = case((Job.kind.in_(runs), Job.kind), else_=ADAPTER)
        # An adapter evaluation costs what training the adapter cost.
        trainable = func.coalesce(adapter.trainable_params, Job.trainable_params)
        total = func.coalesce(adapter.total_params, Job.total_params)
        seconds = func.coalesce(adapter.train_seconds, Job.train_seconds)
        conditions += _lora_filters(opts, spec, used)
    if group_by:
        keys = [
            field(spec, HYPERPARAMS[name], used).label(f"k{i}") for i, name in enumerate(group_by)
        ]
    else:
        keys = [config.label("k0")]
    metrics: list[ColumnElement[Any]] = []
    if splits:
        measured = select(Job.id).where(Job.kind.in_(evaluations)) if side == BASE else None
        final = _kept_metrics(splits, measured)
        query = query.join(final, final.c.job_id == Job.id)
        metrics = [c for c in final.c if c.name != "job_id"]
    return query.add_columns(
        Job.id.label("job_id"),
        Job.model.label("model"),
        Job.dataset.label("dataset"),
        source.label("source"),
        *keys,
        *metrics,
        seconds.label("train_seconds"),
        (cast(trainable, Float) / cast(func.nullif(total, 0), Float)).label("share"),
    ).where(*conditions)


def _lora_filters(
    opts: ReportOptions, spec: ColumnElement[Any], used: ColumnElement[Any]
) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if opts.sweeps:
        out.append(Job.sweep_id.in_(opts.sweeps))
    for tag in opts.tags:
        out.append(Job.id.in_(select(JobTag.job_id).where(JobTag.tag == tag)))
    if opts.users:
        out.append(Job.submitted_by.in_(opts.users))
    if opts.since:
        out.append(Job.created_at >= opts.since)
    if opts.until:
        out.append(Job.created_at < opts.until)
    out += [_condition(spec, used, cond) for cond in opts.spec_conditions]
    return out


@dataclass(slots=True, frozen=True)
class Sums:
    """Sum, sum of squares, minimum and maximum of one metric over a group's runs."""

    total: float
    squares: float
    lo: float
    hi: float

    def stat(self, n: int) -> Stat:
        return Stat.from_sums(n, self.total, self.squares, self.lo, self.hi)


@dataclass(slots=True, frozen=True)
class SplitSums:
    """What the database sums up for one group on one split."""

    n: int
    accuracy: Sums
    loss: Sums
    #: Means over the runs measured on the split.
    train_seconds: float | None
    share: float | None
    first_job: int
    examples: int | None

    #: The order ``configs`` selects the aggregates in: n, 4 accuracy sums, 4 loss sums, rest.
    WIDTH = 13

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> SplitSums:
        n, *acc = values[:5]
        return cls(
            n=int(n),
            accuracy=Sums(*(float(v) for v in acc)),
            loss=Sums(*(float(v) for v in values[5:9])),
            train_seconds=None if values[9] is None else float(values[9]),
            share=None if values[10] is None else float(values[10]),
            first_job=int(values[11]),
            examples=None if values[12] is None else int(values[12]),
        )


@dataclass(slots=True, eq=False)
class Config:
    """A configuration (or --group-by combination) of a model on a dataset: its sums per split.

    Thousands of these come back at scale and only a few are shown, so the statistics of a
    split are worked out on demand by ``group``.
    """

    model: str
    dataset: str
    source: str
    key: tuple[Any, ...]
    sums: dict[str, SplitSums]

    def accuracy(self, split: str) -> float:
        sums = self.sums[split]
        return sums.accuracy.total / sums.n

    def loss(self, split: str) -> float:
        sums = self.sums[split]
        return sums.loss.total / sums.n

    def first_job(self, split: str) -> int:
        return self.sums[split].first_job

    def examples(self, split: str) -> int | None:
        return self.sums[split].examples

    def group(self, split: str) -> Group:
        sums = self.sums[split]
        return Group(
            model=self.model,
            dataset=self.dataset,
            split=split,
            source=self.source,
            key=self.key,
            n=sums.n,
            accuracy=sums.accuracy.stat(sums.n),
            loss=sums.loss.stat(sums.n),
            train_seconds=sums.train_seconds,
            trainable_share=sums.share,
            first_job=sums.first_job,
            examples=sums.examples,
        )


def configs(
    session: Session,
    opts: ReportOptions,
    *,
    side: str,
    splits: Sequence[str],
    group_by: Sequence[str] = (),
) -> list[Config]:
    """Runs aggregated per (model, dataset, source, key), with sums for each split."""
    runs = _runs(session, opts, side=side, splits=splits, group_by=group_by).subquery("runs")
    c = runs.c
    keys = [c[f"k{i}"] for i in range(max(1, len(group_by)))]
    dims = [c.model, c.dataset, c.source, *keys]
    aggregates: list[ColumnElement[Any]] = []
    for i in range(len(splits)):
        acc, loss = c[f"a{i}"], c[f"l{i}"]
        measured = acc.is_not(None)
        aggregates.append(func.count(acc))
        for m in (acc, loss):
            aggregates += [func.sum(m), func.sum(m * m), func.min(m), func.max(m)]
        aggregates += [
            func.avg(case((measured, c.train_seconds))),
            func.avg(case((measured, c.share))),
            func.min(case((measured, c.job_id))),
            func.min(c[f"e{i}"]),
        ]
    width, per_split = len(dims), SplitSums.WIDTH
    query = select(*dims, *aggregates).group_by(*dims)
    out = []
    for row in session.connection().execute(query).all():
        sums = {}
        for i, split in enumerate(splits):
            start = width + i * per_split
            if row[start]:  # runs measured on this split
                sums[split] = SplitSums.from_row(row[start : start + per_split])
        out.append(Config(row[0], row[1], row[2], tuple(row[3:width]), sums))
    return out


def summarised(opts: ReportOptions) -> bool:
    """Whether ``report_summary`` can answer ``configs`` for ``opts``: the default report,
    perhaps narrowed to models and datasets. Other filters and --group-by need every run."""
    narrowed = (opts.sweeps, opts.tags, opts.users, opts.since, opts.until, opts.spec_conditions)
    return (
        not opts.full_query
        and not opts.group_by
        and tuple(opts.statuses) == ("succeeded",)
        and not any(narrowed)
    )


def summary_configs(
    session: Session, opts: ReportOptions, *, side: str, splits: Sequence[str]
) -> list[Config]:
    """What ``configs`` returns (without --group-by), from ``report_summary``: a few rows per
    configuration instead of every result (see ``summarised``)."""
    s = ReportSummary
    evaluations, runs = with_role(Role.EVALUATION), with_role(Role.RUN)
    conditions: list[ColumnElement[bool]] = [s.split.in_(splits)]
    if side == BASE:
        conditions += [s.kind.in_(evaluations), s.adapter.is_(False)]
        source: ColumnElement[str] = literal(BASE)
    else:
        conditions.append(s.kind.in_(runs) | (s.kind.in_(evaluations) & s.adapter.is_(True)))
        source = case((s.kind.in_(runs), s.kind), else_=ADAPTER)
    if opts.models:
        conditions.append(s.model.in_(opts.models))
    if opts.datasets:
        conditions.append(s.dataset.in_(opts.datasets))
    dims = [s.model, s.dataset, source.label("source"), s.config, s.split]
    query = (
        select(
            *dims,
            func.sum(s.n),
            func.sum(s.acc_sum),
            func.sum(s.acc_squares),
            func.min(s.acc_min),
            func.max(s.acc_max),
            func.sum(s.loss_sum),
            func.sum(s.loss_squares),
            func.min(s.loss_min),
            func.max(s.loss_max),
            func.sum(s.seconds_sum),
            func.sum(s.seconds_n),
            func.sum(s.share_sum),
            func.sum(s.share_n),
            func.min(s.first_job),
            func.min(s.examples_min),
        )
        .where(*conditions)
        .group_by(*dims)
    )
    found: dict[tuple[Any, ...], Config] = {}
    for row in session.connection().execute(query):
        model, dataset, src, key, split, n = row[:6]
        seconds, seconds_n, share, share_n = row[14:18]
        sums = SplitSums(
            n=int(n),
            accuracy=Sums(*(float(v) for v in row[6:10])),
            loss=Sums(*(float(v) for v in row[10:14])),
            train_seconds=float(seconds) / int(seconds_n) if seconds_n else None,
            share=float(share) / int(share_n) if share_n else None,
            first_job=int(row[18]),
            examples=None if row[19] is None else int(row[19]),
        )
        where = (model, dataset, src, key)
        config = found.setdefault(where, Config(model, dataset, src, (key,), {}))
        config.sums[split] = sums
    return list(found.values())


def config_specs(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The configuration spec of each job: its own, or for an adapter evaluation the adapter's,
    with the values it trained with in place of those the spec left to the device."""
    adapter = aliased(Job, name="adapter")
    adapter_ref = _adapter_ref()
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 500):
        query = (
            select(Job.id, Job.spec, Job.trained_with, adapter.spec, adapter.trained_with)
            .outerjoin(adapter, adapter.id == adapter_ref)
            .where(Job.id.in_(job_ids[start : start + 500]))
        )
        for job_id, spec, used, adapter_spec, adapter_used in session.execute(query):
            if adapter_spec is not None:
                spec, used = adapter_spec, adapter_used
            out[job_id] = {**spec, **(used or {})}
    return out


@dataclass(frozen=True)
class CurvePoint:
    epoch: int
    n: int
    accuracy: Stat


def validation_curves(
    session: Session, opts: ReportOptions, group_by: Sequence[str] = ()
) -> dict[tuple[str, str, tuple[Any, ...]], list[CurvePoint]]:
    """Validation accuracy after each epoch of training runs, per (model, dataset, key)."""
    runs = _runs(session, opts, side="runs", group_by=group_by).subquery("runs")
    c = runs.c
    keys = [c[f"k{i}"] for i in range(max(1, len(group_by)))]
    dims = [c.model, c.dataset, *keys, Result.epoch]
    acc = Result.accuracy
    query = (
        select(
            *dims, func.count(), func.sum(acc), func.sum(acc * acc), func.min(acc), func.max(acc)
        )
        .join(Result, and_(Result.job_id == c.job_id, Result.split == "validation"))
        .where(c.source.in_(with_role(Role.RUN)))
        .group_by(*dims)
        .order_by(Result.epoch)
    )
    curves: dict[tuple[str, str, tuple[Any, ...]], list[CurvePoint]] = {}
    width = len(keys)
    for row in session.execute(query):
        n, total, squares, lo, hi = row[3 + width :]
        point = CurvePoint(row[2 + width], n, Stat.from_sums(n, total, squares, lo, hi))
        curves.setdefault((row[0], row[1], tuple(row[2 : 2 + width])), []).append(point)
    return curves


def dataset_names(session: Session, datasets: Sequence[str]) -> dict[str, str]:
    """The --dataset-name given to jobs on each of these datasets (the latest job's)."""
    name = Job.spec[("data", "dataset_name")].as_string()
    out: dict[str, str] = {}
    if not datasets:
        return out
    for start in range(0, len(datasets), 500):
        query = (
            select(Job.dataset, name)
            .where(Job.dataset.in_(datasets[start : start + 500]), name.is_not(None))
            .order_by(Job.id)
        )
        out.update({dataset: label for dataset, label in session.execute(query) if label})
    return out


def unknown_sweeps(session: Session, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that neither a sweep row nor any job's sweep id has."""
    known = set(session.scalars(select(Sweep.id).where(Sweep.id.in_(names))))
    known |= set(session.scalars(select(Job.sweep_id).where(Job.sweep_id.in_(names)).distinct()))
    return [name for name in names if name not in known]


def recent_sweeps(session: Session, limit: int = 5) -> list[str]:
    """The sweep ids of the latest jobs, newest first."""
    latest = func.max(Job.id)
    query = (
        select(Job.sweep_id)
        .where(Job.sweep_id.is_not(None))
        .group_by(Job.sweep_id)
        .order_by(latest.desc())
        .limit(limit)
    )
    return [name for name in session.scalars(query) if name]
