"""The report as data: base model against its best LoRA configuration, or per chosen values."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from ftqueue.core.confidence import tie_key, tie_rule, wilson
from ftqueue.core.text import display_names
from ftqueue.report import query
from ftqueue.report.options import CONFIG_COLUMNS, HYPERPARAMS, PLOT_MAX, ReportOptions
from ftqueue.report.query import Config, Group

Where = tuple[str, str, str]  # model, dataset, split


@dataclass
class ReportRow:
    """One line of the report: a LoRA configuration (or group) against the base model."""

    model: str
    dataset: str
    split: str
    base: Group | None
    lora: Group | None
    #: Hyper-parameters: the whole configuration, or the --group-by values.
    config: dict[str, Any] = field(default_factory=dict)
    #: The split whose mean accuracy chose this configuration (None with --group-by).
    selected_by: str | None = None
    selection_accuracy: float | None = None
    trained_on: str | None = None
    #: Set when other configurations lie inside the chosen one's interval on ``selected_by``.
    tie: Tie | None = None

    @property
    def delta_points(self) -> float | None:
        if self.base is None or self.lora is None:
            return None
        return 100.0 * (self.lora.accuracy.mean - self.base.accuracy.mean)

    def flat(self, params: Iterable[str]) -> dict[str, Any]:
        """Plain values by column name, for CSV, JSON, --where and --sort."""
        base, lora = self.base, self.lora
        out: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "source": lora.source if lora else None,
            "base_accuracy": base.accuracy.mean if base else None,
            "base_accuracy_std": base.accuracy.std if base else None,
            "base_loss": base.loss.mean if base else None,
            "base_loss_std": base.loss.std if base else None,
            "base_n": base.n if base else None,
            "base_accuracy_low": _bound(base, 0),
            "base_accuracy_high": _bound(base, 1),
            "accuracy": lora.accuracy.mean if lora else None,
            "accuracy_std": lora.accuracy.std if lora else None,
            "loss": lora.loss.mean if lora else None,
            "loss_std": lora.loss.std if lora else None,
            "n": lora.n if lora else None,
            "accuracy_low": _bound(lora, 0),
            "accuracy_high": _bound(lora, 1),
            "examples": lora.examples if lora else None,
            "delta_points": self.delta_points,
            "trainable_share": lora.trainable_share if lora else None,
            "train_seconds": lora.train_seconds if lora else None,
            "first_job": lora.first_job if lora else None,
            "selected_by": self.selected_by,
            "selection_accuracy": self.selection_accuracy,
            "trained_on": self.trained_on,
            "tied_with": (self.tie.others if self.tie else 0) if self.selected_by else None,
            "tie_rule": self.tie.rule if self.tie else None,
        }
        for name in params:
            value = self.config.get(name)
            out[name] = ",".join(value) if isinstance(value, list) else value
        return out


@dataclass
class Report:
    options: ReportOptions
    rows: list[ReportRow]
    #: Every LoRA group of each (model, dataset, split): best first by the selection split,
    #: or in the order of the --group-by values (with --group-by, or for a plot).
    ranked: dict[Where, list[Group]]
    #: The hyper-parameters of the groups shown (rows, and the groups a plot draws).
    configs: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    #: The key of the configuration each row chose (not with --group-by): a plot keeps it.
    chosen: dict[Where, tuple[Any, ...]] = field(default_factory=dict)
    #: The split whose accuracy made that choice.
    chosen_by: dict[Where, str] = field(default_factory=dict)
    #: The --dataset-name jobs gave their dataset, by dataset.
    dataset_names: dict[str, str] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        """What tables and plots call each model and dataset (see ``text.display_names``)."""
        wheres = [(r.model, r.dataset) for r in self.rows] + [w[:2] for w in self.ranked]
        models = display_names(m for m, _ in wheres)
        return {**models, **display_names((d for _, d in wheres), self.dataset_names)}

    @property
    def params(self) -> tuple[str, ...]:
        """The hyper-parameter columns the rows carry."""
        return self.options.group_by or CONFIG_COLUMNS

    @property
    def columns(self) -> list[str]:
        """Flat columns in output order; what chose a configuration only where one was chosen."""
        names = list(ReportRow("", "", "", None, None).flat(self.params))
        if self.options.group_by:
            chosen = ("selected_by", "selection_accuracy", "trained_on", "tied_with", "tie_rule")
            names = [n for n in names if n not in chosen]
        return names

    def flat_rows(self) -> list[dict[str, Any]]:
        columns = self.columns
        return [{k: flat[k] for k in columns} for flat in (r.flat(self.params) for r in self.rows)]

    def config(self, group: Group) -> dict[str, Any]:
        return self.configs.get(group.key, {})

    def plotted(self, where: Where) -> tuple[list[Group], int]:
        """The groups a plot draws for ``where``, and how many there are in all.

        A plot shows the split's accuracy, so it orders by that, best first. With ``plot_top``
        it keeps the first N, but never drops the configuration the table chose (by the
        selection split): it takes the place of the last one.
        """
        groups = sorted(
            self.ranked.get(where, []),
            key=lambda g: (-g.accuracy.mean, g.loss.mean, g.first_job),
        )
        top = min(self.options.plot_top or PLOT_MAX, PLOT_MAX)
        if len(groups) <= top:
            return groups, len(groups)
        shown = groups[:top]
        chosen = self.chosen.get(where)
        if chosen is not None and all(g.key != chosen for g in shown):
            shown[-1] = next(g for g in groups if g.key == chosen)
        return shown, len(groups)


def _number(value: Any) -> Any:
    """3.0 -> 3 for display and JSON; other values unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _values(names: Iterable[str], values: Iterable[Any]) -> dict[str, Any]:
    """Hyper-parameter values as a user reads them: lists restored, 3.0 shown as 3."""
    out = {}
    for name, value in zip(names, values, strict=True):
        if HYPERPARAMS[name].kind == "modules" and isinstance(value, str):
            value = json.loads(value)
        out[name] = _number(value)
    return out


def _spec_values(spec: dict[str, Any]) -> dict[str, Any]:
    def lookup(path: tuple[str, ...]) -> Any:
        node: Any = spec
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def value(name: str) -> Any:
        found = lookup(HYPERPARAMS[name].path)
        return HYPERPARAMS[name].absent if found is None else found

    values = _values(CONFIG_COLUMNS, (value(n) for n in CONFIG_COLUMNS))
    return {**values, "trained_on": lookup(("data", "dataset"))}


def _by_pair(configs: list[Config]) -> dict[tuple[str, str], list[Config]]:
    out: dict[tuple[str, str], list[Config]] = defaultdict(list)
    for config in configs:
        out[(config.model, config.dataset)].append(config)
    return out


@dataclass(frozen=True)
class Tie:
    """Other configurations inside the chosen one's interval, and the rule that chose."""

    others: int
    #: One of ``confidence.TIE_RULES``.
    rule: str


def _bound(group: Group | None, side: int) -> float | None:
    interval = group.interval if group is not None else None
    return None if interval is None else interval[side]


def score(config: Config, split: str) -> float:
    """The value that ranks configurations on ``split``, higher better: the mean accuracy of
    its runs at the epoch each kept. The one place that says what "best" means."""
    return config.accuracy(split)


def rank(cands: list[Config], split: str, select_by: str) -> tuple[list[Config], str]:
    """Configurations measured on ``split``, best first, and the split that ranked them.

    Ranking by the kept epoch's validation accuracy keeps the test split unseen by the
    choice; when
    no configuration has validation results, the report split itself has to serve. Those
    without them go last, unranked.
    """
    have = [c for c in cands if split in c.sums]
    pool = [c for c in have if select_by in c.sums]
    by = select_by if pool else split
    if not pool:
        pool, rest = have, []
    else:
        rest = [c for c in have if select_by not in c.sums]
    ordered = sorted(pool, key=lambda c: (-score(c, by), c.loss(by), c.first_job(split)))
    return ordered + rest, by


def tied(ordered: list[Config], by: str) -> list[Config]:
    """The first configuration and every other whose score on ``by`` lies inside its 95%
    Wilson interval (on the rows of ``by``); fewer than two: no tie."""
    if len(ordered) < 2 or by not in ordered[0].sums:
        return []
    best = ordered[0]
    examples = best.examples(by)
    if not examples:
        return []
    low, _ = wilson(score(best, by), examples)
    found = [c for c in ordered if by in c.sums and score(c, by) >= low]
    return found if len(found) > 1 else []


def spec_jobs(tie: list[Config], by: str) -> list[int]:
    """The jobs whose specs the tie rule reads: only those with the most seeds, since fewer
    seeds lose before simplicity counts."""
    most = max((c.sums[by].n for c in tie), default=0)
    return [c.first_job(by) for c in tie if c.sums[by].n == most]


def settle(
    ordered: list[Config], by: str, tie: list[Config], specs: dict[int, dict[str, Any]]
) -> tuple[list[Config], Tie | None]:
    """The ranked configurations with the tie rule (``confidence.tie_key``) applied to the
    first place, and the tie; ``specs`` by job id, for ``spec_jobs``."""
    if not tie:
        return ordered, None
    keyed = sorted(
        (
            tie_key(c.sums[by].n, specs.get(c.first_job(by), {}), score(c, by), c.first_job(by)),
            i,
        )
        for i, c in enumerate(tie)
    )
    winner = tie[keyed[0][1]]
    rest = [c for c in ordered if c is not winner]
    return [winner, *rest], Tie(len(tie) - 1, tie_rule(keyed[0][0], keyed[1][0]))


def build_report(session: Session, opts: ReportOptions, *, plotting: bool = False) -> Report:
    """Aggregate the runs matching ``opts`` into report rows (see ``ReportOptions``); with
    ``plotting``, also the hyper-parameters of every group a plot draws."""
    query.tune(session)
    splits = tuple(dict.fromkeys((*opts.splits, opts.select_by)))
    lora_splits = opts.splits if opts.group_by else splits
    if query.summarised(opts):
        base = _by_pair(query.summary_configs(session, opts, side="base", splits=splits))
        lora = _by_pair(query.summary_configs(session, opts, side="runs", splits=lora_splits))
    else:
        base = _by_pair(query.configs(session, opts, side="base", splits=splits))
        lora = _by_pair(
            query.configs(session, opts, side="runs", splits=lora_splits, group_by=opts.group_by)
        )
    rows: list[ReportRow] = []
    ranked: dict[Where, list[Group]] = {}
    chosen: dict[Where, tuple[Any, ...]] = {}
    chosen_by: dict[Where, str] = {}
    pairs = set(lora) if opts.picks_lora_runs else set(lora) | set(base)
    choices: dict[Where, tuple[list[Config], str, list[Config]]] = {}
    if not opts.group_by:
        for model, dataset in pairs:
            for split in opts.splits:
                ordered, by = rank(lora.get((model, dataset), []), split, opts.select_by)
                choices[(model, dataset, split)] = (ordered, by, tied(ordered, by))
    # The specs every tie reads, in one query: a report may hold hundreds of ties.
    needed = {job for ordered, by, tie in choices.values() for job in spec_jobs(tie, by)}
    specs = query.config_specs(session, sorted(needed)) if needed else {}
    for model, dataset in sorted(pairs):
        for split in opts.splits:
            best_base, _ = rank(base.get((model, dataset), []), split, opts.select_by)
            base_group = best_base[0].group(split) if best_base else None
            cands = lora.get((model, dataset), [])
            if opts.group_by:
                # Rows per value combination read best in the order of the values (r=4, 8, 16).
                groups = sorted((c.group(split) for c in cands if split in c.sums), key=_key_order)
                ranked[(model, dataset, split)] = groups
                rows += [ReportRow(model, dataset, split, base_group, g) for g in groups]
                continue
            ordered, by, candidates = choices[(model, dataset, split)]
            ordered, tie = settle(ordered, by, candidates, specs)
            if plotting:  # thousands of configurations may come back; only a plot needs all
                ranked[(model, dataset, split)] = [c.group(split) for c in ordered]
            if ordered:
                best = ordered[0]
                chosen[(model, dataset, split)] = best.key
                chosen_by[(model, dataset, split)] = by
                row = ReportRow(model, dataset, split, base_group, best.group(split))
                row.selected_by, row.selection_accuracy = by, best.accuracy(by)
                row.tie = tie
                rows.append(row)
            elif base_group:
                rows.append(ReportRow(model, dataset, split, base_group, None))
    report = Report(opts, rows, ranked, chosen=chosen, chosen_by=chosen_by)
    report.configs = _configs(session, report, plotting=plotting)
    # Only local files are given names (hub ids and aliases are short already): reading
    # every job's spec for the others would cost a tenth of a large report.
    datasets = sorted(d for d in {r.dataset for r in rows} | {w[1] for w in ranked} if "/" in d)
    report.dataset_names = query.dataset_names(session, datasets)
    for row in rows:
        if row.lora is not None:
            config = dict(report.config(row.lora))
            row.trained_on = config.pop("trained_on", None)
            row.config = config
    report.rows = _sorted([r for r in rows if _passes(r, opts)], opts)
    return report


def _configs(
    session: Session, report: Report, *, plotting: bool
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Hyper-parameters of the groups on show, by group key.

    With --group-by the key holds them. A configuration's key is only good for telling
    configurations apart, so its values come from the spec of its first job.
    """
    shown = [r.lora for r in report.rows if r.lora is not None]
    if plotting:
        shown += [g for where in report.ranked for g in report.plotted(where)[0]]
    group_by = report.options.group_by
    if group_by:
        return {g.key: _values(group_by, g.key) for g in shown}
    specs = query.config_specs(session, sorted({g.first_job for g in shown}))
    return {g.key: _spec_values(specs[g.first_job]) for g in shown}


def _key_order(group: Group) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is None, 0 if v is None else v) for v in group.key)


def _passes(row: ReportRow, opts: ReportOptions) -> bool:
    if not opts.metric_conditions:
        return True
    flat = row.flat(())
    return all(cond.matches(flat[cond.column]) for cond in opts.metric_conditions)


def _sorted(rows: list[ReportRow], opts: ReportOptions) -> list[ReportRow]:
    if opts.sort is None:
        return rows  # already by model, dataset, split, then best first or by value
    params = opts.group_by or CONFIG_COLUMNS
    keyed = [(row.flat(params)[opts.sort], row) for row in rows]
    present = [(v, r) for v, r in keyed if v is not None]
    present.sort(key=lambda vr: vr[0], reverse=opts.is_descending)
    # Rows without the value go last, whichever the direction.
    return [r for _, r in present] + [r for v, r in keyed if v is None]
