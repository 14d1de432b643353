"""What a job reports while it runs and when it ends (torch-free, so the queue can import it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("load", "tokenize", "train", "evaluate", "save")


@dataclass
class Progress:
    """A heartbeat: ``phase`` is one of PHASES; ``loss`` is the mean since the last report."""

    phase: str
    epoch: int
    step: int
    total_steps: int
    loss: float | None = None


@dataclass
class Measurement:
    """Metrics of one split after one epoch (epoch 0: an adapter evaluated without training)."""

    split: str
    epoch: int
    accuracy: float
    loss: float
    macro_f1: float
    n_examples: int


@dataclass
class Outcome:
    """Everything a finished job hands back; ``stats`` is JSON-safe."""

    measurements: list[Measurement]
    adapter_dir: Path | None
    stats: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]
