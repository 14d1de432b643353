"""A sweep's plan: the base spec, the searched space, the method's name and seed, the budget.

Plain data, stored as the sweep row's definition; what a method does with it lives in
``sweeps/methods``, and how a sweep file becomes one in ``sweeps/sweepfile``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ftqueue import kinds
from ftqueue.core.objective import Objective, RungPoints, stopping_text
from ftqueue.specs import JobSpec


@dataclass(frozen=True)
class Dimension:
    """One searched spec field: a list of values, or a numeric range (``log`` for rates)."""

    name: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def first(self) -> Any:
        """The first listed value, or the low end of the range."""
        if not self.is_range:
            return self.values[0]
        assert self.low is not None
        return int(self.low) if self.integer else self.low

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dimension:
        return cls(**(d | {"values": tuple(hashable(v) for v in d["values"])}))


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep file. ``base`` is the spec every trial starts from, as a dict."""

    kind: str
    name: str | None
    base: dict[str, Any]
    space: tuple[Dimension, ...]
    method: str
    seed: int
    max_jobs: int
    max_parallel: int
    eta: int | None
    #: Rung positions in ``rung_unit`` (``epoch``, fractions allowed, or ``step``).
    rungs: tuple[float, ...]
    tags: tuple[str, ...] = ()
    rung_unit: str = "epoch"
    #: The validation metric the sweep optimises and its goal (ftqueue/core/objective.py).
    metric: str = "accuracy"
    goal: str = "max"
    #: The GPU class its trials run on (None: any worker), and their priority's name.
    gpu_class: str | None = None
    priority: str = "normal"
    #: Who started it: its trials are theirs, whichever worker creates them.
    user: str | None = None

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.goal)

    @property
    def rung_points(self) -> RungPoints | None:
        """Where trials are judged (None: no early stopping)."""
        return RungPoints(self.rung_unit, self.rungs) if self.eta else None

    @property
    def stopping(self) -> str:
        """Its early stopping in a few words (``ASHA eta=3 at epochs 1,2``)."""
        return stopping_text(self.eta, self.rung_unit, self.rungs)

    def spec(self, values: dict[str, Any]) -> JobSpec:
        """The trial's spec: the base with the searched values put in."""
        return kinds.lookup(self.kind).spec({**self.base, **_as_spec_values(values)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"space": [d.to_dict() for d in self.space]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepPlan:
        return cls(
            **(
                d
                | {
                    "space": tuple(Dimension.from_dict(x) for x in d["space"]),
                    "rungs": tuple(d["rungs"]),
                    "tags": tuple(d.get("tags", ())),
                }
            )
        )

    @property
    def grid_size(self) -> int:
        return combinations(self.space)


def combinations(space: Sequence[Dimension]) -> int:
    """How many combinations the listed values make (ranges count as none)."""
    return math.prod(len(d.values) for d in space)


def first_values(space: Sequence[Dimension]) -> dict[str, Any]:
    """Each dimension's first listed value or low end: a trial every plan can make."""
    return {d.name: d.first for d in space}


def hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _as_spec_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
