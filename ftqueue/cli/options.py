"""Click options made from spec fields: each flag's type, range, help and default come from
the field's ``Param`` (ftqueue/specs.py), so the command line and the checks cannot drift.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from ftqueue.cli.common import json_option
from ftqueue.specs import DataSpec, Param, Spec, flag, spec_params

F = TypeVar("F", bound=Callable[..., Any])

#: A grid larger than this is refused before it is built (a typo like 0..10000 x 1..1000).
GRID_SPAN_LIMIT = 10_000


class Grid(click.ParamType):
    """A comma list of numbers (``8,16,32``), or for integers a range (``0..4``)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = "list" if kind is float else "ints"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        items: list[Any] = []
        for part in str(value).split(","):
            part = part.strip()
            try:
                if self.kind is int and ".." in part:
                    lo, hi = (int(x) for x in part.split("..", 1))
                    if hi < lo or hi - lo > GRID_SPAN_LIMIT:
                        raise ValueError
                    items.extend(range(lo, hi + 1))
                elif self.kind is int:
                    number = float(part)
                    if not math.isfinite(number) or not number.is_integer():
                        raise ValueError
                    items.append(int(number))
                else:
                    items.append(float(part))
            except ValueError:
                what = "whole numbers" if self.kind is int else "numbers"
                self.fail(
                    f"{part!r} is not valid: give {what}, comma-separated (e.g. "
                    f"{'8,16,32' if self.kind is int else '1e-4,3e-4'})",
                    param,
                    ctx,
                )
        return items


INTS = Grid(int)
FLOATS = Grid(float)


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
    if p.kind == "int":
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


QUEUE_KEYS = ("tags", "name", "sweep", "force", "wait", "as_json")


def pop_queue_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in QUEUE_KEYS}


def expand(fixed: dict[str, Any], grid: dict[str, list[Any] | None]) -> list[dict[str, Any]]:
    """Every combination of the grid values given, each merged into the fixed arguments."""
    axes = {k: v for k, v in grid.items() if v}
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**fixed, **dict(zip(axes, combo, strict=True))} for combo in combos]


def split_grid(
    spec_type: type[Spec], kw: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[Any] | None]]:
    """The remaining spec options of a command, as fixed values and grid axes."""
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any] | None] = {}
    for f, p in spec_params(spec_type):
        if f.name not in kw:
            continue
        value = kw.pop(f.name)
        if p.grid:
            grid[f.name] = value
        else:
            fixed[f.name] = value
    return fixed, grid


def build_specs(spec_type: type[Spec], rows: list[dict[str, Any]]) -> list[Any]:
    """One spec per row; options left out (None) take the spec's default."""
    return [spec_type(**{k: v for k, v in row.items() if v is not None}) for row in rows]
