"""What a sweep optimises and where it compares its trials (torch-free, plain data).

An ``Objective`` is a validation metric and a goal (``max`` or ``min``); ``RungPoints`` are
where a trial stops to be judged: positions in epochs (fractions allowed) or in optimizer
steps. The sweep file sets both (ftqueue/sweeps/sweepfile.py); the rung rule
(ftqueue/sweeps/asha.py), the training loop, Optuna and the sweep report read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The validation metrics a sweep can optimise, each with the goal it takes by default.
METRICS = {"accuracy": "max", "macro_f1": "max", "loss": "min"}
GOALS = ("max", "min")
#: The units rung positions are given in.
UNITS = ("epoch", "step")


@dataclass(frozen=True)
class Objective:
    """A validation metric and whether higher (``max``) or lower (``min``) is better."""

    metric: str = "accuracy"
    goal: str = "max"

    def __post_init__(self) -> None:
        if self.metric not in METRICS or self.goal not in GOALS:
            raise ValueError(f"no such objective: {self.metric} {self.goal}")

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.goal == "max" else a < b

    def best(self, values: Iterable[float]) -> float | None:
        """The best of ``values`` (None when there are none)."""
        pick = max if self.goal == "max" else min
        return pick(values, default=None)


@dataclass(frozen=True)
class RungPoints:
    """Where a trial is judged: ``at`` positions (increasing) in ``unit`` epochs or steps."""

    unit: str
    at: tuple[float, ...]

    def steps(self, steps_per_epoch: int, total: int) -> dict[int, float]:
        """The optimizer step (1-based, counted over the whole run) of each position before
        the run's last step, mapped to the position. Two positions on one step: the first."""
        out: dict[int, float] = {}
        for position in self.at:
            if self.unit == "epoch":
                step = max(1, round(position * steps_per_epoch))
            else:
                step = int(position)
            if step < total:
                out.setdefault(step, position)
        return out


def position_text(position: float) -> str:
    """A rung position as messages write it: ``2``, ``0.5``."""
    return f"{position:g}"


def stopping_text(eta: int | None, unit: str, rungs: Iterable[float]) -> str:
    """How a sweep stops trials early, in a few words: ``ASHA eta=3 at epochs 0.5,1``."""
    if not eta:
        return "no early stopping"
    return f"ASHA eta={eta} at {unit}s {','.join(map(position_text, rungs))}"
