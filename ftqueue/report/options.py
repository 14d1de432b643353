"""What a report may be asked for: whitelisted columns, operators and sort keys, parsed from text.

Nothing here builds SQL: a condition is a (column, operator, value) triple whose column and
operator come from the tables below, and whose value is later bound as a parameter.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftqueue.core.states import STATUSES
from ftqueue.core.text import quote
from ftqueue.errors import FilterError
from ftqueue.kinds import Role, all_kinds
from ftqueue.specs import SPLITS, DataSpec, Param, spec_params

SELECT_BY = ("validation", "test")
#: Most bars in one panel of a plot even without --top: past that the labels cannot be read.
PLOT_MAX = 40


@dataclass(frozen=True)
class Column:
    """A hyper-parameter read from a job's spec JSON: its path there and how to compare it."""

    name: str
    path: tuple[str, ...]
    #: ``number`` (compared as a float), ``text``, or ``modules`` (a list, compared whole).
    kind: str
    #: The value of a run whose spec leaves the field out (see ``Param.omit_default``).
    absent: Any = None


def _column(name: str, path: tuple[str, ...], param: Param, default: Any = None) -> Column:
    kinds = {"int": "number", "float": "number", "modules": "modules"}
    absent = default if param.omit_default else None
    return Column(name, path, kinds.get(param.kind, "text"), absent)


def _hyperparams() -> dict[str, Column]:
    """The hyper-parameters of every run kind's spec (fields marked ``hyper``), then the
    training subset size, then the seed: the columns a configuration is described by."""
    columns: dict[str, Column] = {}
    for kind in all_kinds():
        if kind.role != Role.RUN:
            continue
        for f, p in spec_params(kind.spec_type):
            if p.hyper:
                columns.setdefault(f.name, _column(f.name, (f.name,), p, f.default))
    seed = columns.pop("seed", None)
    subset = next(p for f, p in spec_params(DataSpec) if f.name == "train_samples")
    columns["train_samples"] = _column("train_samples", ("data", "train_samples"), subset)
    if seed is not None:
        columns["seed"] = seed
    return columns


HYPERPARAMS: dict[str, Column] = _hyperparams()
#: What a configuration shows: every hyper-parameter but the seed, which it averages over.
CONFIG_COLUMNS = tuple(name for name in HYPERPARAMS if name != "seed")

#: Metrics of a report row, filtered and sorted after aggregation (they are means over runs).
METRICS = (
    "accuracy",
    "accuracy_std",
    "loss",
    "loss_std",
    "n",
    "accuracy_low",
    "accuracy_high",
    "delta_points",
    "base_accuracy",
    "base_loss",
    "base_n",
    "trainable_share",
    "train_seconds",
)
ALIASES = {"delta": "delta_points", "train_time": "train_seconds", "std": "accuracy_std"}
#: Higher is better for these, so they sort descending unless --asc is given.
DESCENDING = (
    "accuracy", "accuracy_low", "accuracy_high", "base_accuracy", "delta_points", "n", "base_n"
)  # fmt: skip

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Two-character operators first, so that `r<=8` is not read as `r < "=8"`.
_OP_ORDER = sorted(OPERATORS, key=len, reverse=True)
_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(.*?)\s*$", re.S)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _canonical(name: str) -> str:
    return ALIASES.get(name, name)


def where_columns() -> list[str]:
    return [*HYPERPARAMS, *METRICS, *ALIASES]


@dataclass(frozen=True)
class Condition:
    """``column OP value`` from --where; on a hyper-parameter or on a row metric."""

    column: str
    op: str
    value: float | str | tuple[str, ...]

    @property
    def on_spec(self) -> bool:
        return self.column in HYPERPARAMS

    def matches(self, actual: Any) -> bool:
        """Apply to a row's value; a missing value never matches."""
        return actual is not None and OPERATORS[self.op](actual, self.value)

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _NAME.match(text)
        name = _canonical(match.group(1)) if match else ""
        if not match or name not in (*HYPERPARAMS, *METRICS):
            raise FilterError(
                f"--where {quote(text)}: unknown column; use one of {', '.join(where_columns())}, "
                "as in --where 'r>=16'",
                param="--where",
            )
        rest = match.group(2)
        op = next((o for o in _OP_ORDER if rest.startswith(o)), None)
        raw = rest[len(op) :].strip() if op else ""
        if op is None or not raw:
            raise FilterError(
                f"--where {quote(text)}: expected COLUMN OP VALUE with OP one of "
                f"{' '.join(OPERATORS)}, as in --where 'lr<=0.001'",
                param="--where",
            )
        kind = HYPERPARAMS[name].kind if name in HYPERPARAMS else "number"
        if kind != "number" and op not in ("=", "!="):
            raise FilterError(
                f"--where {quote(text)}: {name} is text; compare it with = or !=", param="--where"
            )
        if kind == "modules":
            return cls(name, op, tuple(m.strip() for m in raw.split(",")))
        if kind == "text":
            return cls(name, op, raw)
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise FilterError(
                f"--where {quote(text)}: {name} is a number; got {quote(raw)}", param="--where"
            ) from None
        return cls(name, op, number)


def parse_time(text: str, flag: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO date/time (UTC unless it says otherwise) or an age such as 30m, 12h, 2d, 1w."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        try:
            delta = dt.timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
            return (now or dt.datetime.now(dt.UTC)) - delta
        except OverflowError:
            raise FilterError(
                f"{flag} {quote(text)} reaches before the year 1: give an age of at most a few "
                "thousand years (e.g. 52w), or a date",
                param=flag,
            ) from None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(
            f"{flag} {quote(text)} is not a time: use an ISO date or time such as 2025-05-01 or "
            "2025-05-01T13:00, or an age such as 30m, 12h, 2d, 1w",
            param=flag,
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def check_output(path: str | Path | None, flag: str) -> Path | None:
    """Refuse, before any work, an output path that cannot be written."""
    if path is None:
        return None
    target = Path(path).expanduser()
    parent = target.parent.resolve()
    problem = None
    if target.is_dir():
        problem = "is a directory"
    elif not parent.is_dir():
        problem = f"is in {parent}, which is not an existing directory"
    elif not os.access(parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        problem = "is not writable"
    if problem:
        raise FilterError(
            f"{flag} {quote(str(path))} {problem}: give a file path in a writable directory",
            param=flag,
        )
    return target


def _names(values: Iterable[str]) -> list[str]:
    """Comma-separated and repeated option values as one de-duplicated list."""
    out: list[str] = []
    for value in values:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return list(dict.fromkeys(out))


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """A validated report request. Filters on sweep, tag, user, time and hyper-parameters pick the
    LoRA runs; the base model is always compared with all its evaluations that match
    ``models``, ``datasets`` and ``statuses``."""

    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: Only LoRA runs these users submitted (jobs.submitted_by).
    users: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ("succeeded",)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    splits: tuple[str, ...] = ("test",)
    where: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    select_by: str = "validation"
    sort: str | None = None
    descending: bool | None = None
    #: Most configurations per panel that a plot shows (None: all of them, up to PLOT_MAX).
    plot_top: int | None = None
    #: Aggregate every result even where the report summary could answer (for comparisons).
    full_query: bool = False

    def __post_init__(self) -> None:
        self._check("--status", self.statuses, STATUSES)
        self._check("--split", self.splits, SPLITS)
        self._check("--select-by", (self.select_by,), SELECT_BY)
        self._check("--group-by", self.group_by, tuple(HYPERPARAMS))
        if self.sort is not None:
            object.__setattr__(self, "sort", _canonical(self.sort))
            self._check("--sort", (self.sort,), self.sort_keys, self.sort_keys + tuple(ALIASES))
        if self.since and self.until and self.since >= self.until:
            raise FilterError(
                f"--since {self.since:%Y-%m-%d %H:%M} is not before --until "
                f"{self.until:%Y-%m-%d %H:%M}: swap them",
                param="--since",
            )

    @staticmethod
    def _check(
        flag: str, values: Sequence[str], allowed: Sequence[str], shown: Sequence[str] = ()
    ) -> None:
        for value in values:
            if value not in allowed:
                raise FilterError(
                    f"{flag} {quote(value)} is not known: use one of {', '.join(shown or allowed)}",
                    param=flag,
                )

    @classmethod
    def from_text(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        where: Sequence[str] = (),
        group_by: Sequence[str] = (),
        **rest: Any,
    ) -> ReportOptions:
        """Build from CLI strings: times, --where expressions and comma-separated names."""
        return cls(
            since=parse_time(since, "--since") if since else None,
            until=parse_time(until, "--until") if until else None,
            where=tuple(Condition.parse(w) for w in where),
            group_by=tuple(_names(group_by)),
            **rest,
        )

    @property
    def sort_keys(self) -> tuple[str, ...]:
        """Row metrics, model and dataset, and the hyper-parameters the rows carry."""
        params = self.group_by or CONFIG_COLUMNS
        return ("model", "dataset", "split", *METRICS, *params)

    @property
    def spec_conditions(self) -> list[Condition]:
        return [c for c in self.where if c.on_spec]

    @property
    def metric_conditions(self) -> list[Condition]:
        return [c for c in self.where if not c.on_spec]

    @property
    def picks_lora_runs(self) -> bool:
        """True when a filter narrows the LoRA runs, so rows without any are left out."""
        return bool(
            self.sweeps
            or self.tags
            or self.users
            or self.since
            or self.until
            or self.spec_conditions
        )

    @property
    def is_descending(self) -> bool:
        if self.descending is not None:
            return self.descending
        return self.sort in DESCENDING
