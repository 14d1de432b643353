"""The registry of sweep methods: the one place that knows which methods exist and what each does.

A method declares itself once, in its own module under ``sweeps/methods/``: what it cannot
search (checked when a sweep file is parsed), how many distinct trials it has, the values
`ftqueue sweep` checks before anything is written, how it proposes trials for a sweep's free
slots, and what it is told when a trial ends. The sweep file, submit and the sweep's trials
ask this registry instead of naming methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ftqueue.errors import SpecError
from ftqueue.sweeps.plan import Dimension, SweepPlan, first_values


@dataclass(frozen=True)
class Proposal:
    """One trial to make: its number in the sweep (the job's ``trial``) and searched values."""

    number: int
    values: dict[str, Any]


class Offer(ABC):
    """Proposals for a sweep's free slots, taken while the sweep row is locked."""

    @abstractmethod
    def take(self, first: int, count: int) -> list[Proposal]:
        """Proposals for ``count`` free slots; ``first`` is the sweep's next trial number."""

    def release(self) -> None:  # noqa: B027  (optional: most offers keep nothing back)
        """Once the trials are written: give back what was proposed and not taken."""


@dataclass
class Numbered(Offer):
    """Trials numbered by the sweep, trial ``n``'s values a pure function of the plan and ``n``.

    Whichever process makes trial ``n`` makes the same one, so nothing is made before the lock.
    """

    values: Callable[[int], dict[str, Any]]

    def take(self, first: int, count: int) -> list[Proposal]:
        return [Proposal(n, self.values(n)) for n in range(first, first + count)]


class SweepMethod(ABC):
    """How a sweep chooses its trials: checked at parse, started at submit, asked and told."""

    #: The ``method:`` of a sweep file.
    name: ClassVar[str]

    def check(self, dim: Dimension) -> str | None:
        """Why this method cannot search ``dim`` (said after ``space.<name>:``), or None."""
        return None

    def size(self, space: Sequence[Dimension]) -> int | None:
        """How many distinct trials the space holds for this method; None: no end, so the
        sweep file must give ``budget.max_jobs``."""
        return None

    def values_to_check(self, plan: SweepPlan) -> list[dict[str, Any]]:
        """Searched values that submit checks before anything is written; the first pins the
        model and data for every trial."""
        return [first_values(plan.space)]

    def start(self, sweep_id: str, plan: SweepPlan) -> None:  # noqa: B027  (optional)
        """Set up what the method keeps between trials (after the sweep row is written)."""

    @abstractmethod
    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> Offer:
        """Trials for up to ``count`` free slots (fewer may be taken)."""

    def tell(  # noqa: B027  (optional: a method that learns nothing is told nothing)
        self, sweep_id: str, trial: int, status: str, curve: list[tuple[int, float]]
    ) -> None:
        """A trial ended with ``status`` and this curve: (epoch, validation value of the
        sweep's metric)."""

    # What a method that keeps state (an Optuna study) does to keep it whole with the sweep's
    # trials; a method whose trial n is a function of n keeps nothing to mend.

    def forget(self, sweep_id: str) -> None:  # noqa: B027  (optional)
        """Drop what ``start`` set up: the sweep row was never written."""

    def open_trials(self, sweep_id: str) -> list[int]:
        """Trials proposed and not yet told how they ended."""
        return []

    def give_back(self, sweep_id: str, trials: list[int]) -> None:  # noqa: B027  (optional)
        """Proposed trials that never ran to an outcome (never queued, or cancelled with
        their sweep): kept for a later proposal or ``reopen``, counted as neither run nor
        failed."""

    def reopen(self, sweep_id: str, trials: list[int]) -> dict[int, int]:
        """Trials queued again (``ftqueue sweep --resume``): their numbers from now on."""
        return {n: n for n in trials}


_METHODS: dict[str, SweepMethod] = {}


def register(method: SweepMethod) -> SweepMethod:
    """Add a method; its name must be new."""
    if method.name in _METHODS:
        raise ValueError(f"sweep method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def lookup(name: str) -> SweepMethod:
    """The method called ``name``, or SpecError listing the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise SpecError(
            f"unknown sweep method {name!r}: use one of {', '.join(_METHODS)}", param="method"
        ) from None


def get(name: str) -> SweepMethod | None:
    """The method called ``name``, or None."""
    return _METHODS.get(name)


def names() -> tuple[str, ...]:
    """The known methods, in registration order."""
    return tuple(_METHODS)


def unregister(name: str) -> None:
    """Remove a method (for tests that register one of their own)."""
    _METHODS.pop(name, None)
