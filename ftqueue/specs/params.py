"""Spec fields that declare their own checks: ``Param``, ``param(...)`` and the value checkers."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from ftqueue.core.text import quote
from ftqueue.errors import SpecError

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def flag(name: str) -> str:
    """The CLI flag for a spec field (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


ParamKind = Literal["int", "float", "choice", "modules", "text"]


@dataclass(frozen=True)
class Param:
    """How one spec field is checked, offered as a flag, and shown in reports."""

    kind: ParamKind
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    #: None is allowed (it means "decided later", e.g. per device).
    optional: bool = False
    #: What the help text says the default is, where the field's own default does not say it.
    default_text: str | None = None
    #: A comma list on the command line expands into one job per value.
    grid: bool = False
    #: A hyper-parameter: a column of reports, usable in --where and --group-by.
    hyper: bool = False
    #: Offered as a flag of `ftqueue submit` (the kind's command may add its own instead).
    cli: bool = True
    #: Left out of the stored spec while None, so that specs stored before the field existed
    #: keep their hash (and their place among the repeats of a configuration).
    omit_none: bool = False
    #: Left out of the stored spec while it has the field's default, for the same reason: a
    #: field added with a neutral default (``grad_accum`` 1) leaves old specs' hashes alone.
    omit_default: bool = False

    def range_text(self) -> str:
        """The allowed values the way the messages write them: ``1..1024``, ``(0, 1]``."""
        if self.kind == "int":
            lo = int(self.lo or 0)
            return f"{lo}..{int(self.hi)}" if self.hi is not None else f"{lo} or more"
        if self.kind == "float":
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{left}{self.lo:g}, {self.hi:g}{right}"
        if self.kind == "choice":
            return ", ".join(self.choices)
        return ""

    def check(self, name: str, value: Any) -> Any:
        """The normalised value (3.0 -> 3, " x " -> "x", list -> tuple), or SpecError."""
        if value is None and self.optional:
            return None
        if self.kind == "int":
            return _int(name, value, int(self.lo or 0), None if self.hi is None else int(self.hi))
        if self.kind == "float":
            assert self.lo is not None and self.hi is not None
            return _float(name, value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open)
        if self.kind == "choice":
            if value not in self.choices:
                raise SpecError(
                    f"{flag(name)} must be one of {self.range_text()}; got {quote(value)}",
                    param=flag(name),
                )
            return str(value)
        if self.kind == "modules":
            return _modules(value)
        return check_text(name, value)


def param(default: Any, kind: ParamKind, help: str, **options: Any) -> Any:
    """A spec field with its ``Param`` (see there for the options)."""
    return dataclasses.field(default=default, metadata={"param": Param(kind, help, **options)})


def required(kind: ParamKind, help: str, **options: Any) -> Any:
    """A spec field without a default."""
    return dataclasses.field(metadata={"param": Param(kind, help, **options)})


def field_param(cls: type, name: str) -> Param | None:
    for f in dataclasses.fields(cls):
        if f.name == name:
            found = f.metadata.get("param")
            return found if isinstance(found, Param) else None
    return None


_SPEC_PARAMS: dict[type, tuple[tuple[dataclasses.Field[Any], Param], ...]] = {}


def spec_params(cls: type) -> tuple[tuple[dataclasses.Field[Any], Param], ...]:
    """The fields of a spec class that carry a ``Param``, in declaration order.

    Kept per class: every spec's construction reads them (20,000 times in a 10,000-job grid).
    """
    found = _SPEC_PARAMS.get(cls)
    if found is None:
        fields = dataclasses.fields(cls)
        found = _SPEC_PARAMS[cls] = tuple(
            (f, f.metadata["param"]) for f in fields if "param" in f.metadata
        )
    return found


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer in ``lo..hi``; an integral float (from JSON) is accepted and converted."""
    rng = f"{lo}..{hi}" if hi is not None else f"{lo} or more"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            f"{flag(name)} must be a whole number {rng}; got {quote(value)}", param=flag(name)
        )
    if value < lo or (hi is not None and value > hi):
        raise SpecError(f"{flag(name)} must be {rng}; got {value}", param=flag(name))
    return value


def _float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> float:
    """A finite float in the interval; the message spells the interval the way maths does."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = float(value) if ok_type else math.nan
    above = number > lo if lo_open else number >= lo
    inside = above and (number < hi if hi_open else number <= hi)
    if not (ok_type and math.isfinite(number) and inside):
        raise SpecError(
            f"{flag(name)} must be a finite number in {interval}; got {quote(value)}",
            param=flag(name),
        )
    return number


def check_text(name: str, value: Any) -> str:
    """A non-blank string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(
            f"{flag(name)} must be a non-empty string; got {quote(value)}", param=flag(name)
        )
    return value.strip()


def _modules(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
    bad = [v for v in value if not _MODULE_NAME.match(v)] if ok else []
    if not ok or bad or len(set(value)) != len(value):
        raise SpecError(
            "--target-modules must be one or more distinct module names such as "
            f"query,key,value,dense; got {quote(value)}",
            param="--target-modules",
        )
    return tuple(value)
