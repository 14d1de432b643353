"""``random``: each trial drawn independently, trial ``n`` seeded by the sweep's seed and ``n``.

The same file and seed give the same trials, whichever workers make them.
"""

from __future__ import annotations

import math
import random
from typing import Any

from ftqueue.sweeps.methods.registry import Numbered, Offer, SweepMethod, register
from ftqueue.sweeps.plan import Dimension, SweepPlan


class Random(SweepMethod):
    name = "random"

    def values_to_check(self, plan: SweepPlan) -> list[dict[str, Any]]:
        return [values(plan, 0)]

    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> Offer:
        return Numbered(lambda number: values(plan, number))


def values(plan: SweepPlan, number: int) -> dict[str, Any]:
    """The searched values of trial ``number``."""
    rng = random.Random(f"{plan.seed}:{number}")
    return {d.name: draw(d, rng) for d in plan.space}


def draw(dim: Dimension, rng: random.Random) -> Any:
    """A value of ``dim``: uniform over a list, over a range or (``log``) over its logarithm."""
    if not dim.is_range:
        return dim.values[rng.randrange(len(dim.values))]
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        if dim.log:
            return round(math.exp(rng.uniform(math.log(dim.low), math.log(dim.high))))
        return rng.randint(int(dim.low), int(dim.high))
    if dim.log:
        return math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
    return rng.uniform(dim.low, dim.high)


register(Random())
