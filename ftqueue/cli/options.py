"""Click options made from spec fields: each flag's type, range, help and default come from
the field's ``Param`` (ftqueue/specs/fields.py), so the command line and the checks cannot drift.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import click

from ftqueue.cli.common import complete_jobs, json_option
from ftqueue.core.text import quote
from ftqueue.errors import SpecError
from ftqueue.kinds.registry import ADAPTER_FIELD
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec, Param, Spec, flag, spec_params

F = TypeVar("F", bound=Callable[..., Any])

_RANGE = re.compile(r"^([+-]?\d+)\.\.([+-]?\d+)$")
_DASHED = re.compile(r"^(\d+)\s*-\s*(\d+)$")
#: Past a database integer (19 digits) with room to quote the number a spec refuses.
_MAX_DIGITS = 100


class Grid(click.ParamType):
    """A comma list of numbers (``8,16,32``), or for integers a range (``0..4``).

    The values are kept as ranges and lists, never expanded here: ``0..1000000`` is one range
    object until the grid's size has been checked (see ``expand``).
    """

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = "list" if kind is float else "ints"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Axis):
            return value
        parts: list[Sequence[Any]] = []
        for part in str(value).split(","):
            part = part.strip()
            problem = self._parse(part, parts)
            if problem:
                self.fail(f"{quote(part, 100)} is not valid: {problem}", param, ctx)
        return Axis(parts)

    def _parse(self, part: str, parts: list[Sequence[Any]]) -> str | None:
        """Appends the values of one comma item; returns what is wrong with it, if anything."""
        example = "0..4 or 8,16,32" if self.kind is int else "1e-4,3e-4"
        digits = max((len(d) for d in re.findall(r"\d+", part)), default=0)
        if self.kind is int and digits > _MAX_DIGITS:
            # int() refuses past 4,300 digits with a ValueError; no setting comes near this.
            return f"a number of {digits:,} digits is past any value a setting takes"
        if self.kind is int:
            span = _RANGE.match(part)
            if span:
                lo, hi = int(span.group(1)), int(span.group(2))
                if hi < lo:
                    return f"a range goes up: {hi}..{lo}"
                parts.append(range(lo, hi + 1))
                return None
            dashed = _DASHED.match(part)
            if dashed:
                return f"a range is written with two dots: {dashed.group(1)}..{dashed.group(2)}"
            if ".." in part:
                return "a range is LOW..HIGH with whole numbers, e.g. 0..4"
        if self.kind is int and re.fullmatch(r"[+-]?\d+", part):
            parts.append([int(part)])  # exact: a float would round 20-digit numbers
            return None
        try:
            number = float(part)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            what = "whole numbers or ranges" if self.kind is int else "numbers"
            return f"give {what}, comma-separated (e.g. {example})"
        if self.kind is int and not number.is_integer():
            return f"give whole numbers, comma-separated (e.g. {example})"
        parts.append([int(number) if self.kind is int else number])
        return None


class Axis(Sequence[Any]):
    """The values of one grid flag: lists and ranges, iterated in order, never copied out."""

    def __init__(self, parts: Iterable[Sequence[Any]]) -> None:
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __bool__(self) -> bool:
        return any(self.parts)

    @property
    def size(self) -> int:
        """How many values, even past what ``len()`` can return (``0..10**20``)."""
        return sum(p.stop - p.start if isinstance(p, range) else len(p) for p in self.parts)

    def __iter__(self) -> Iterator[Any]:
        return itertools.chain.from_iterable(self.parts)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            raise TypeError("an Axis is indexed by int only")
        position = index + len(self) if index < 0 else index
        for part in self.parts:
            if 0 <= position < len(part):
                return part[position]
            position -= len(part)
        raise IndexError(index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Axis({self.parts!r})"


class JobGrid(Grid):
    """A comma list of job ids whose adapters a command uses; the shell completes the last
    one from the succeeded training runs in the database."""

    def __init__(self) -> None:
        super().__init__(int)
        self.name = "jobs"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[Any]:
        from click.shell_completion import CompletionItem

        done, _, last = incomplete.rpartition(",")
        prefix = f"{done}," if done else ""
        return [
            CompletionItem(prefix + item.value, help=item.help)
            for item in complete_jobs(last, runs_only=True)
        ]


INTS = Grid(int)
FLOATS = Grid(float)
JOBS = JobGrid()


def _default_text(f: dataclasses.Field[Any], p: Param) -> str | None:
    if p.default_text is not None:
        return p.default_text
    if f.default is dataclasses.MISSING or f.default is None:
        return None
    if isinstance(f.default, tuple):
        return ",".join(map(str, f.default))
    return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)


def _help(f: dataclasses.Field[Any], p: Param) -> str:
    text = p.help
    if p.kind in ("int", "float"):
        text += f" Allowed: {p.range_text()}."
    default = _default_text(f, p)
    return f"{text} [default: {default}]" if default is not None else text


def _option(f: dataclasses.Field[Any], p: Param) -> Callable[[F], F]:
    kwargs: dict[str, Any] = {"help": _help(f, p)}
    if f.name == ADAPTER_FIELD:
        kwargs["type"] = JOBS
    elif p.kind == "int":
        kwargs["type"] = INTS if p.grid else click.INT
    elif p.kind == "float":
        kwargs["type"] = FLOATS if p.grid else click.FLOAT
    elif p.kind == "choice":
        kwargs["type"] = click.Choice(p.choices)
    if f.default is dataclasses.MISSING:
        kwargs.update(required=True, metavar=f.name.split("_")[-1].upper())
    return click.option(flag(f.name), f.name, **kwargs)


def spec_options(
    spec_type: type[Spec], *, only: Iterable[str] = (), skip: Iterable[str] = ()
) -> Callable[[F], F]:
    """Add an option for every field of ``spec_type`` offered on the command line (or for
    those in ``only``). Grid fields take comma lists (metavar INTS or LIST).

    Options left out on the command line arrive as None, so the spec's own default applies.
    """
    wanted, skipped = set(only), set(skip)
    chosen = [
        (f, p)
        for f, p in spec_params(spec_type)
        if p.cli and f.name not in skipped and (not wanted or f.name in wanted)
    ]

    def decorate(func: F) -> F:
        for f, p in reversed(chosen):
            func = _option(f, p)(func)
        return func

    return decorate


data_options = spec_options(DataSpec)


def data_spec(kw: dict[str, Any]) -> DataSpec:
    """Pop the data options out of a command's keyword arguments."""
    values = {f.name: kw.pop(f.name) for f, p in spec_params(DataSpec) if p.cli}
    return DataSpec(**{k: v for k, v in values.items() if v is not None})


def queue_options(func: F) -> F:
    options = [
        click.option("--tag", "tags", multiple=True, help="Label the jobs (repeatable)."),
        click.option("--name", help="A name for the job(s)."),
        click.option("--sweep", help="Put the jobs in this sweep (default: a new id for a grid)."),
        click.option(
            "--force",
            is_flag=True,
            help="Run even if an identical job already succeeded or is pending.",
        ),
        click.option(
            "--gpu-class",
            metavar="CLASS",
            help="Run only on workers of this GPU class (`ftqueue worker --class CLASS`, "
            "or the class their GPU's name gives: a100, h200 ...) [default: any worker].",
        ),
        click.option(
            "--priority",
            type=click.Choice(["high", "normal", "low"]),
            default="normal",
            show_default=True,
            help="Queued jobs of higher priority start first, on every queue they share.",
        ),
        click.option(
            "--strict",
            is_flag=True,
            help="Refuse a --gpu-class that no live worker serves, instead of queuing the "
            "jobs with a warning.",
        ),
        click.option(
            "--wait",
            is_flag=True,
            help="Follow the jobs with a progress bar until they end; the exit code "
            "says how (0 succeeded, 1 failed, 3 cancelled).",
        ),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


QUEUE_KEYS = (
    "tags",
    "name",
    "sweep",
    "force",
    "gpu_class",
    "priority",
    "strict",
    "wait",
    "as_json",
)


def pop_queue_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in QUEUE_KEYS}


def expand(
    fixed: dict[str, Any], grid: dict[str, Sequence[Any] | None]
) -> Iterator[dict[str, Any]]:
    """Every combination of the grid values given, each merged into the fixed arguments.

    The size of the grid (the product of the axis lengths) is checked against FTQUEUE_MAX_GRID
    before anything is built, and the combinations are made one at a time as they are read.
    """
    axes = {k: v for k, v in grid.items() if v}
    sizes = {k: v.size if isinstance(v, Axis) else len(v) for k, v in axes.items()}
    total = math.prod(sizes.values())
    limit = get_settings().max_grid
    if total > limit:
        shape = " x ".join(f"{n:,} {flag(k)}" for k, n in sizes.items())
        raise SpecError(
            f"this grid is {total:,} jobs ({shape}), over the limit of {limit:,}: "
            "check the ranges, or raise FTQUEUE_MAX_GRID",
            param=flag(max(sizes, key=lambda k: sizes[k])),
        )
    return (
        {**fixed, **dict(zip(axes, combo, strict=True))} for combo in _product(list(axes.values()))
    )


def _product(axes: list[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    """itertools.product's order, without its copying every axis into a tuple first."""
    if not axes:
        yield ()
        return
    for value in axes[0]:
        for rest in _product(axes[1:]):
            yield (value, *rest)


def split_grid(
    spec_type: type[Spec], kw: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Sequence[Any] | None]]:
    """The remaining spec options of a command, as fixed values and grid axes."""
    fixed: dict[str, Any] = {}
    grid: dict[str, Sequence[Any] | None] = {}
    for f, p in spec_params(spec_type):
        if f.name not in kw:
            continue
        value = kw.pop(f.name)
        if p.grid:
            grid[f.name] = value
        else:
            fixed[f.name] = value
    return fixed, grid


def build_specs(spec_type: type[Spec], rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """One spec per row, built as it is read; options left out (None) take the spec's default.

    A grid's rows differ in a few values: each is made from the row before it with
    ``Spec.replace``, which checks only what differs (checking every field of every spec
    cost a 10,000-job grid half a second), and the rules across fields.
    """
    last: Spec | None = None
    last_row: dict[str, Any] = {}
    for raw in rows:
        row = {k: v for k, v in raw.items() if v is not None}
        if last is None or row.keys() != last_row.keys():
            last = spec_type(**row)
        else:
            changes = {k: v for k, v in row.items() if v is not last_row[k] and v != last_row[k]}
            last = last.replace(**changes) if changes else last
        last_row = row
        yield last
