"""How sure an accuracy is: its 95% Wilson interval, the epoch a run keeps, and ties.

An accuracy measured on n rows is a proportion; on a validation split of about a thousand
rows its 95% interval is about ±2.4 points wide, so two configurations 0.1 points apart are
a coin toss. The rules here make the choices that depend on such numbers say so:

- the kept epoch: a later epoch replaces the kept one only if its validation accuracy lies
  above the kept epoch's interval (``keeps_later``), so equal-within-noise epochs keep the
  earliest;
- the best configuration: the point best is *tied* with every other whose point estimate
  lies inside its interval, and the tie goes, in this order, to more seeds, then the simpler
  configuration (smaller r, then fewer target modules, then lower lr), then the higher point
  estimate, then the earlier job (``tie_break``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054

#: What breaks a tie, in order, as reports name it; a key of ``tie_key`` per entry.
TIE_RULES = (
    "more seeds",
    "smaller r",
    "fewer target modules",
    "lower lr",
    "higher accuracy",
    "earlier job",
)
#: Help text saying the rule, for --help and documentation.
TIE_RULE_TEXT = (
    "A configuration is tied with the best when its accuracy lies inside the best's 95% "
    "Wilson interval (on the rows of the split); a tie goes to more seeds, then the simpler "
    "configuration (smaller r, then fewer target modules, then lower lr), then the higher "
    "accuracy, then the earlier job."
)


def wilson(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` measured on ``n`` rows.

    Wilson (1927); Newcombe (1998), method 3. Unlike the normal approximation it stays
    inside [0, 1] and is not empty at 0 or 1. With no rows, the whole range.
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, accuracy))
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def keeps_later(kept_accuracy: float, kept_n: int | None, later_accuracy: float) -> bool:
    """Whether a later epoch replaces the kept one: only if it is better beyond the kept
    epoch's 95% interval (with no row count, if it is better at all)."""
    if not kept_n:
        return later_accuracy > kept_accuracy
    return later_accuracy > wilson(kept_accuracy, kept_n)[1]


def kept_epoch(validation: Sequence[tuple[int, float, int | None]]) -> int | None:
    """The epoch a run keeps from its (epoch, validation accuracy, rows) in epoch order:
    the first, replaced by each later one that ``keeps_later``."""
    kept: tuple[int, float, int | None] | None = None
    for epoch, accuracy, n in validation:
        if kept is None or keeps_later(kept[1], kept[2], accuracy):
            kept = (epoch, accuracy, n)
    return None if kept is None else kept[0]


def simplicity(spec: Mapping[str, Any]) -> tuple[float, float, float]:
    """(r, number of target modules, lr) of a LoRA spec: smaller is simpler; a value the spec
    does not have counts as the most complex."""

    def number(value: Any) -> float:
        return float(value) if isinstance(value, int | float) else math.inf

    modules = spec.get("target_modules")
    count = float(len(modules)) if isinstance(modules, list | tuple) else math.inf
    return number(spec.get("r")), count, number(spec.get("lr"))


def tie_key(
    seeds: int, spec: Mapping[str, Any], accuracy: float, first_job: int
) -> tuple[float, ...]:
    """The order that breaks a tie, one entry per ``TIE_RULES`` name: smallest wins."""
    return (-seeds, *simplicity(spec), -accuracy, first_job)


def tie_rule(winner: Sequence[float], runner_up: Sequence[float]) -> str:
    """The name of the first rule on which two ``tie_key``s differ: the one that broke it."""
    for name, a, b in zip(TIE_RULES, winner, runner_up, strict=True):
        if a != b:
            return name
    return TIE_RULES[-1]


def interval_text(low: float, high: float) -> str:
    """An interval as a report cell writes it, narrow: 0.802-0.849."""
    return f"{low:.3f}-{high:.3f}"
