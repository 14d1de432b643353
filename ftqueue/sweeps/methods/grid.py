"""``grid``: every combination of the listed values, in order; trial ``n`` is the n-th one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ftqueue.sweeps.methods.registry import Numbered, Offer, SweepMethod, register
from ftqueue.sweeps.plan import Dimension, SweepPlan, combinations


class Grid(SweepMethod):
    name = "grid"

    def check(self, dim: Dimension) -> str | None:
        if dim.is_range:
            return (
                "a range cannot be enumerated by method grid: give a list, or use method "
                "random or optuna"
            )
        return None

    def size(self, space: Sequence[Dimension]) -> int | None:
        return combinations(space)

    def values_to_check(self, plan: SweepPlan) -> list[dict[str, Any]]:
        # Every trial: a combination may break a rule no single value breaks.
        return [values(plan, number) for number in range(plan.max_jobs)]

    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> Offer:
        return Numbered(lambda number: values(plan, number))


def values(plan: SweepPlan, number: int) -> dict[str, Any]:
    """The searched values of trial ``number``: the last dimension varies fastest."""
    chosen = {}
    rest = number
    for dim in reversed(plan.space):
        rest, index = divmod(rest, len(dim.values))
        chosen[dim.name] = dim.values[index]
    return {d.name: chosen[d.name] for d in plan.space}


register(Grid())
